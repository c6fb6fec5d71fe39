"""Exit 1 naming every notebook given (or under notebooks/) that carries outputs or execution counts:
notebooks are sources; their executed copies are pipeline outputs (results/notebooks/).

    python scripts/check_notebooks.py [NOTEBOOK ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def with_outputs(path: Path) -> bool:
    cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
    return any(c.get("outputs") or c.get("execution_count") for c in cells if c.get("cell_type") == "code")


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((REPO / "notebooks").glob("*.ipynb"))
    bad = [p for p in paths if with_outputs(p)]
    for p in bad:
        print(f"{p}: carries outputs; clear them (Jupyter: Edit > Clear All Outputs) and commit again")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
