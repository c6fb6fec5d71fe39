"""Print the sha256 of every output file of a pipeline run, one `hash  path` line each, sorted.

    python scripts/hash_outputs.py [RUN_DIR] > hashes.txt

Compare two runs (a refactor must change no output byte; a rerun of the published run should match
data/published/<profile>/SHA256SUMS) with `diff` or `sha256sum -c`. Executed notebooks (*.ipynb) are
left out: papermill stamps each cell with the time it ran; every number they show is in
results/numbers and results/tables, which are compared.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

OUTPUTS = [
    "data/prepared",
    "data/reference",
    "data/fidelity",
    "data/bench",
    "data/processed",
    "results",
    "paper/_variables.yml",
    "paper/figures",
    "paper/tables",
]
UNSTABLE_SUFFIXES = {".ipynb"}  # papermill's per-cell timestamps
SKIP_PARTS = {".parts", ".ipynb_checkpoints", "__pycache__"}


def output_files(root: Path):
    for name in OUTPUTS:
        base = root / name
        if base.is_file():
            yield base
        elif base.is_dir():
            for path in sorted(base.rglob("*")):
                if (
                    path.is_file()
                    and not SKIP_PARTS & set(path.relative_to(root).parts)
                    and not path.name.startswith(".dvc")
                    and path.suffix not in UNSTABLE_SUFFIXES
                ):
                    yield path


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else ".")
    for path in output_files(root):
        print(f"{sha256(path)}  {path.relative_to(root).as_posix()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
