"""Every stage killed with SIGKILL while it writes, then rerun: the outputs are the uninterrupted
run's, byte for byte (benchmarks/fault_injection.py, CI-sized: one kill per stage, drawn again
while it lands after the stage had already written everything; the clean run is the session's
tiny `dvc repro`)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("fault_injection", REPO / "benchmarks" / "fault_injection.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.pipeline
def test_every_stage_killed_mid_write_reruns_to_the_same_bytes(tiny_pipeline, tmp_path):
    script = _script()
    out = tmp_path / "report.json"
    argv = ["--clean", str(tiny_pipeline), "--work", str(tmp_path / "work"), "--json", str(out)]
    rc = script.main([*argv, "--kills", "1", "--retry", "3", "--no-calibration", "--seed", "24"])
    report = json.loads(out.read_text())
    bad = [k for k in report["kills"] if not k["identical"]]
    assert rc == 0 and not bad, bad
    for stage in script.STAGES:
        s = report["stages"][stage]
        assert s["identical"] == s["kills"] >= 1
        assert s["mid_write"] >= 1, f"{stage}: no kill landed while it wrote ({s})"
