"""Print the sha256 of every output file of a pipeline run, one `hash  path` line each, sorted.

    python scripts/hash_outputs.py [RUN_DIR] > hashes.txt

Compare two runs (a refactor must change no output byte; a rerun of the published run should match
data/published/<profile>/SHA256SUMS) with `diff` or `sha256sum -c`. Provenance stamps record the
sha256 of the code that made each output, so any code edit changes them; `--without-code-digests`
hashes every JSON file with those digests blanked (CODE_DIGESTS), which is how a refactor shows it
changed no output byte but them:

    python scripts/hash_outputs.py RUN_A --without-code-digests > a.txt
    python scripts/hash_outputs.py RUN_B --without-code-digests > b.txt && diff a.txt b.txt Executed notebooks (*.ipynb) are
left out: papermill stamps each cell with the time it ran; every number they show is in
results/numbers and results/tables, which are compared.
"""

from __future__ import annotations

import hashlib
import json
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
# keys that digest the code (provenance's code_sha256; the bench stage's resume fingerprint, which hashes it in)
CODE_DIGESTS = {"code_sha256", "fingerprint"}


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


def sha256(path: Path, without_code_digests: bool = False) -> str:
    digest = hashlib.sha256()
    if without_code_digests and path.suffix == ".json":
        digest.update(json.dumps(_blank_code(json.loads(path.read_text(encoding="utf-8"))), sort_keys=True).encode())
        return digest.hexdigest()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _blank_code(node):
    if isinstance(node, dict):
        return {k: ("" if k in CODE_DIGESTS else _blank_code(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_blank_code(v) for v in node]
    return node


def main(argv: list[str]) -> int:
    flags = {a for a in argv if a.startswith("--")}
    rest = [a for a in argv if not a.startswith("--")]
    root = Path(rest[0] if rest else ".")
    for path in output_files(root):
        print(f"{sha256(path, '--without-code-digests' in flags)}  {path.relative_to(root).as_posix()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
