"""Wall time of the lesson notebook (notebooks/lesson-metric-validity.ipynb) as `paper inputs` runs it:
papermill, kernel start included, on the committed default run. Target: under 60 s on 2 cores.

    .venv/bin/python benchmarks/lesson_runtime.py [--repeat 3]

Prints each run's wall time and the slowest cell, and writes benchmarks/out/lesson_runtime.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    from silentzone import lesson

    os.chdir(REPO)
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "lesson.ipynb"
            start = time.perf_counter()
            lesson.execute(out, lesson.PUBLISHED_RUN)
            wall = time.perf_counter() - start
            cells = [c for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code"]
            durations = [c["metadata"]["papermill"]["duration"] for c in cells]
        runs.append({"wall_s": round(wall, 2), "cells_s": round(sum(durations), 2), "slowest_cell_s": round(max(durations), 2)})
        print(f"lesson: {wall:.1f} s wall, {sum(durations):.1f} s in cells (slowest {max(durations):.1f} s)", flush=True)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    out_dir = REPO / "benchmarks" / "out"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "lesson_runtime.json").write_text(json.dumps({"runs": runs, "loadavg": load}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
