"""The README a newcomer reads: short, its results block generated from the published runs, its links live."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def test_readme_is_short():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 150


def test_the_results_block_is_what_the_published_runs_say():
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "readme_results.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
