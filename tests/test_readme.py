"""The README a newcomer reads: short, its results block generated from the published runs, its links live."""

from __future__ import annotations

import re
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


def test_every_relative_link_and_image_of_the_readme_exists():
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t.split("#", 1)[0] for t in targets if not t.startswith(("http://", "https://", "#"))]
    assert local and all((REPO / t).exists() for t in local), [t for t in local if not (REPO / t).exists()]
