"""`silentzone fanout` on a real local Ray cluster (a head and a second node, `ray start`), tiny profile:
the outputs are byte-identical to a sequential run of the same commands (scripts/hash_outputs.py), and
a member task whose worker is killed mid-stage is retried and the run completes. Needs the `cluster`
extra (`make test-cluster`); skipped without Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO

ray = pytest.importorskip("ray")
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0"}


def sz(root, *args):
    subprocess.run([str(BIN / "silentzone"), *args], cwd=root, env=ENV, check=True, capture_output=True, text=True)


def hashes(root) -> str:
    return subprocess.run(
        [sys.executable, str(REPO / "scripts/hash_outputs.py"), str(root)], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def two_node_cluster():
    port = "6391"
    ray_bin = str(BIN / "ray")
    subprocess.run(
        [ray_bin, "start", "--head", "--num-cpus=2", f"--port={port}", "--include-dashboard=false"],
        env=ENV,
        check=True,
        capture_output=True,
    )
    try:
        subprocess.run(
            [ray_bin, "start", f"--address=127.0.0.1:{port}", "--num-cpus=2"], env=ENV, check=True, capture_output=True
        )
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=ENV, capture_output=True)


def test_fanout_is_byte_identical_to_the_sequential_run_and_a_killed_worker_is_rerun(tmp_path, two_node_cluster):
    seq, fan = tmp_path / "seq", tmp_path / "fan"
    for root in (seq, fan):
        root.mkdir()
        (root / "profiles").symlink_to(REPO / "profiles")
        sz(root, "profile", "tiny")
    for args in (["prepare"], ["reference"], ["bench", "reference"]):
        sz(seq, *args)
    import yaml

    members = list(yaml.safe_load((seq / "params.yaml").read_text())["cohort"])
    for m in members:
        sz(seq, "fidelity", m)
        sz(seq, "bench", m)
    sz(seq, "collect")

    killed = []

    def kill_one_worker():  # the first member stage seen running: its Ray worker dies mid-task
        for _ in range(600):
            found = subprocess.run(["pgrep", "-f", "ray::member_task"], capture_output=True, text=True).stdout.split()
            stage = subprocess.run(
                ["pgrep", "-f", f"silentzone --params {fan}/params.yaml fidelity"], capture_output=True, text=True
            ).stdout.split()
            if found and stage:
                os.kill(int(found[0]), signal.SIGKILL)
                killed.append(found[0])
                return
            time.sleep(0.5)

    killer = threading.Thread(target=kill_one_worker)
    killer.start()
    fanout = [str(BIN / "silentzone"), "fanout", "--address", two_node_cluster]
    proc = subprocess.run([*fanout, "--retries", "0"], cwd=fan, env=ENV, capture_output=True, text=True)
    killer.join()
    assert killed, "no member task was seen running to kill"
    assert proc.returncode == 2 and "a member task was lost" in proc.stderr and "rerun `silentzone fanout`" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    proc = subprocess.run(fanout, cwd=fan, env=ENV, capture_output=True, text=True)  # the rerun completes
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{len(members)} members" in proc.stdout
    assert hashes(fan) == hashes(seq)
