"""The code sandbox contains what a generated program might do, and the runner goes on after each.

Each hostile program is run through `run_program` and must come back as a recorded failure; the
checks that matter also look from the outside (the process is gone, the file was not written)."""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from silentzone.bench import sandbox
from silentzone.bench.sandbox import Limits, run_program

pytestmark = pytest.mark.skipif(sandbox.capabilities() != "strict", reason="strict sandbox needs root (namespaces, uid drop)")

FAST = Limits(timeout_s=5.0)


def test_passing_and_failing_programs():
    assert run_program("assert 1 + 1 == 2\nprint('ok')", FAST).status == "passed"
    failed = run_program("assert 1 + 1 == 3", FAST)
    assert failed.status == "failed" and "AssertionError" in failed.stderr


def test_infinite_loop_times_out_and_is_killed():
    start = time.monotonic()
    result = run_program("while True:\n    pass\n", Limits(timeout_s=1.5))
    assert result.status == "timeout"
    assert time.monotonic() - start < 10


def test_sleeping_grandchild_that_left_the_group_is_killed(tmp_path):
    # A daemonised child (setsid) escapes process-group kill; the per-uid kill must still get it.
    prog = textwrap.dedent(
        """
        import os, time
        if os.fork() == 0:
            os.setsid()
            print(os.getpid(), flush=True)
            time.sleep(60)
        time.sleep(0.5)
        """
    )
    result = run_program(prog, FAST)
    pid = int(result.stdout.split()[0])
    time.sleep(0.2)
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


FORK_COUNT = textwrap.dedent(
    """
    import os, time
    made = 0
    for _ in range(60):
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            time.sleep(3)
            os._exit(0)
        made += 1
    print(made)
    """
)


def test_process_cap_holds_and_would_not_without_the_uid_drop():
    capped = run_program(FORK_COUNT, Limits(timeout_s=10, max_processes=16))
    assert capped.status == "passed"
    assert int(capped.stdout) < 16
    # The same harmless stand-in as root (RLIMIT_NPROC not enforced) makes all 60 children.
    uncapped = run_program(FORK_COUNT, Limits(timeout_s=10, max_processes=16), contain_processes=False)
    assert int(uncapped.stdout) == 60


def test_real_fork_bomb_is_contained():
    result = run_program(
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", Limits(timeout_s=2)
    )
    assert result.status in {"timeout", "failed"}
    uid = sandbox.sandbox_uid()
    time.sleep(0.2)
    left = subprocess.run(["pgrep", "-u", str(uid)], capture_output=True, text=True).stdout.split()
    assert left == []


def test_huge_allocation_fails_cleanly():
    result = run_program("x = bytearray(10 * 1024**3)\n", FAST)
    assert result.status == "failed" and "MemoryError" in result.stderr


def test_socket_to_localhost_is_unreachable():
    # A listener on the host's loopback: the sandbox must not reach it (fresh network namespace).
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        prog = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('connected')\n"
        result = run_program(prog, FAST)
    finally:
        server.close()
    assert result.status == "failed"
    assert "connected" not in result.stdout
    assert "unreachable" in result.stderr.lower() or "OSError" in result.stderr


@pytest.fixture
def open_dir():
    """A world-writable directory outside /tmp: ownership alone would not protect it, only the
    read-only mount namespace does (a path under the repo, removed afterwards)."""
    import shutil

    path = Path(__file__).resolve().parents[1] / ".pytest_cache" / f"sandbox-victim-{os.getpid()}"
    # A checkout under /tmp (or another masked directory) is hidden from the program by the empty
    # tmpfs mounted there, so the victim must live elsewhere for the program to see it at all.
    masked = any(str(path).startswith(d + "/") for d in sandbox.WRITABLE_DIRS)
    if masked or not all(os.stat(p).st_mode & 0o001 for p in path.parents if p.exists()):
        path = Path("/var/lib") / f"silentzone-sandbox-victim-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_writes_outside_own_directory_are_refused(tmp_path, open_dir):
    os.chmod(tmp_path, 0o777)
    targets = [
        Path(__file__).resolve().parents[1] / "sandbox_was_here.txt",
        open_dir / "x.txt",
        tmp_path / "x.txt",
        Path("/tmp/sandbox_was_here.txt"),
    ]
    for path in targets:
        result = run_program(f"open({str(path)!r}, 'w').write('x')\n", FAST)
        assert result.status == "failed", path
        assert not path.exists(), path
    own = run_program("open('mine.txt', 'w').write('x')\nprint(open('mine.txt').read())\n", FAST)
    assert own.status == "passed" and own.stdout.strip() == "x"


def test_rm_rf_home_style_attempt_is_harmless(open_dir):
    # Stand-in for os.system('rm -rf ~'): a world-writable victim tree the sandbox can see.
    victim = open_dir / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    os.chmod(victim, 0o777)
    os.chmod(victim / "keep.txt", 0o666)
    prog = f"import os\nassert os.path.exists({str(victim)!r})\nprint('seen', flush=True)\nos.system('rm -rf {victim} ~/*')\nassert not os.path.exists({str(victim)!r})\n"
    result = run_program(prog, FAST)
    assert result.status == "failed" and "seen" in result.stdout
    assert (victim / "keep.txt").read_text() == "keep"


def test_non_utf8_output_and_runner_goes_on():
    result = run_program("import sys\nsys.stdout.buffer.write(b'\\xff\\xfe bad')\nraise SystemExit(3)\n", FAST)
    assert result.status == "failed" and result.returncode == 3
    assert "bad" in result.stdout
    assert run_program("pass", FAST).status == "passed"


def test_a_broken_sandbox_setup_raises_instead_of_recording_a_failure(tmp_path):
    # If the launcher cannot confine the program, no verdict may be recorded (it would read as
    # "failed"): an invalid uid makes the setup fail inside the child, before the program runs.
    work = tmp_path / "work"
    work.mkdir()
    (work / "program.py").write_text("print('ran')")
    config = {"mode": "strict", "uid": -5, "python": "/usr/bin/python3", "limits": FAST.__dict__}
    with pytest.raises(sandbox.SandboxError, match="setup failed"):
        sandbox._launch(tmp_path, work, config, FAST)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"timeout_s": -1}, "timeout_s"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": float("nan")}, "timeout_s"),
        ({"memory_mb": 0}, "memory_mb"),
        ({"memory_mb": -5}, "memory_mb"),
        ({"memory_mb": 1.5}, "memory_mb"),
        ({"disk_mb": 0}, "disk_mb"),
        ({"disk_mb": -64}, "disk_mb"),
        ({"max_processes": 0}, "max_processes"),
        ({"max_open_files": 0}, "max_open_files"),
    ],
)
def test_bad_limits_raise_naming_the_limit(kwargs, name):
    # A non-positive limit would turn correct programs into recorded failures, so it is refused.
    with pytest.raises(sandbox.SandboxError) as info:
        Limits(**kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"sandbox limit {name} must be")
    assert repr(next(iter(kwargs.values()))) in message


def test_valid_limits_keep_the_bench_call_shape():
    limits = Limits(timeout_s=10.0, memory_mb=1024)
    assert (limits.timeout_s, limits.memory_mb, limits.max_processes, limits.max_open_files, limits.disk_mb) == (
        10.0,
        1024,
        16,
        64,
        64,
    )


MB = 1 << 20

# Writes `count` 1 MB files (or until refused), printing the running total after each one, so
# the test learns how much really got stored even when the program dies of ENOSPC.
WRITE_FILES = textwrap.dedent(
    """
    total = 0
    for i in range({count}):
        with open(f'f{{i}}', 'wb') as f:
            f.write(b'x' * (1 << 20))
        total += 1 << 20
        print(total, flush=True)
    """
)


@pytest.fixture
def host_dirs(monkeypatch):
    """The host temporary directories run_program makes, to look at them during and after a run."""
    made = []
    real = sandbox.tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        made.append(Path(real(*args, **kwargs)))
        return str(made[-1])

    monkeypatch.setattr(sandbox.tempfile, "mkdtemp", mkdtemp)
    return made


def test_total_disk_cap_stops_a_program_writing_many_files(host_dirs):
    # The incident: 3,000 files of 1 MB each, every one under the per-file cap. 40 MB against an
    # 8 MB cap shows the same thing at test speed.
    result = run_program(WRITE_FILES.format(count=40), Limits(timeout_s=5, disk_mb=8))
    written = int(result.stdout.split()[-1])
    assert result.status == "failed" and "No space left on device" in result.stderr
    assert 6 * MB <= written <= 8 * MB + MB
    assert len(host_dirs) == 1 and not host_dirs[0].exists()


def test_files_under_the_disk_cap_pass_and_never_reach_the_host_disk(host_dirs, open_dir):
    # The program holds still after writing (until the test says go) so the host side can be
    # inspected while its files exist: they must be in its tmpfs, not in the host directory.
    go = open_dir / "go"
    prog = WRITE_FILES.format(count=3) + textwrap.dedent(
        f"""
        import os, tempfile, time
        assert all(open(f'f{{i}}', 'rb').read() == b'x' * (1 << 20) for i in range(3))
        st = os.statvfs('.')
        print(os.getcwd(), tempfile.gettempdir(), os.environ['HOME'], st.f_blocks * st.f_frsize, 'written', flush=True)
        while not os.path.exists({str(go)!r}):
            time.sleep(0.01)
        """
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(run_program, prog, Limits(timeout_s=5, disk_mb=8))
        deadline = time.monotonic() + 4
        while not (host_dirs and (host_dirs[0] / "stdout").exists() and "written" in (host_dirs[0] / "stdout").read_text()):
            assert time.monotonic() < deadline and not future.done(), "the program never reported its files written"
            time.sleep(0.01)
        on_host = {p.relative_to(host_dirs[0]).as_posix(): p.stat().st_size for p in host_dirs[0].rglob("*") if p.is_file()}
        go.touch()
        result = future.result()
    assert result.status == "passed"
    assert result.stdout.split()[-6:] == [
        str(3 * MB),
        sandbox.WORK_DIR,
        sandbox.WORK_DIR,
        sandbox.WORK_DIR,
        str(8 * MB),
        "written",
    ]
    assert set(on_host) == {"work/program.py", "stdout", "stderr"} and on_host["work/program.py"] == len(prog.encode())
    assert not host_dirs[0].exists()


def test_default_disk_cap_and_its_file_count_cap():
    sizes = run_program("import os\nst = os.statvfs('.')\nprint(st.f_blocks * st.f_frsize, st.f_files)\n", FAST)
    assert sizes.status == "passed" and sizes.stdout.split() == [str(64 * MB), str(64 * sandbox.INODES_PER_MB)]
    # Empty files cost no bytes but do cost kernel memory: their number is capped as well.
    flood = run_program(
        "import os\nn = 0\ntry:\n    while n < 10000:\n        open(f'e{n}', 'w').close()\n        n += 1\nfinally:\n    print(n)\n",
        Limits(timeout_s=5, disk_mb=1),
    )
    assert flood.status == "failed" and 0 < int(flood.stdout) < sandbox.INODES_PER_MB


def test_weak_mode_caps_each_file_but_not_the_total(monkeypatch):
    # What the weak-mode docs promise, and no more: a 2 MB file is refused, three 1 MB files pass
    # with disk_mb=1, because without a mount namespace nothing caps the total.
    monkeypatch.setattr(sandbox, "capabilities", lambda: "weak")
    big = run_program("open('big', 'wb').write(b'x' * (2 << 20))\n", Limits(timeout_s=5, disk_mb=1), allow_weak=True)
    assert big.status == "failed" and "File too large" in big.stderr
    many = run_program(WRITE_FILES.format(count=3), Limits(timeout_s=5, disk_mb=1), allow_weak=True)
    assert many.status == "passed" and int(many.stdout.split()[-1]) == 3 * MB
