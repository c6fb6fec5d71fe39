"""Run every speed/memory benchmark in turn (`make benchmarks`). Each script prints its figures and
writes them under benchmarks/out/. Run on an otherwise idle machine: the figures are wall times."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = [
    ["stats_speed.py"],  # issue 4: 30 quants x 14 variants, 10k + 10k resamples (< 30 s)
    ["fidelity_speed.py", "--windows", "4"],  # issue 2: tokens/s, peak RSS, fp32 matmul GFLOP/s
    ["bench_speed.py", "--profile", "quick"],  # issue 3: items/s per task, wall time per model
    ["lesson_runtime.py"],  # issue 29: the lesson notebook from the committed run (< 60 s)
]

if __name__ == "__main__":
    failed = 0
    for args in RUNS:
        print(f"== {' '.join(args)}", flush=True)
        failed += subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]], cwd=HERE.parent).returncode != 0
    sys.exit(1 if failed else 0)
