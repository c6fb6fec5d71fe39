"""Speed of the bench stage: items/s per task and wall time per model, for a profile.

    .venv/bin/python benchmarks/bench_speed.py --profile quick            # reference + one quant
    .venv/bin/python benchmarks/bench_speed.py --profile default --quant q4_0

Runs in a scratch folder (benchmarks/out/bench_speed/<profile>/): prepares the profile's items,
then `bench reference` and `bench <quant>` with per-task timing. The reference run costs more than
a quant's (it also runs each code item's teacher-forced pass to store hidden states; a quant runs
that pass too, to compare, so the two are close). Target (default, SmolLM2, 2 cores): < 4 min per quant.
Writes benchmarks/out/bench_speed/<profile>.json and .csv. Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from silentzone import config, io  # noqa: E402
from silentzone.layout import Layout  # noqa: E402
from silentzone.quant.load import load_quant  # noqa: E402
from silentzone.stages import bench as run  # noqa: E402
from silentzone.stages import prepare, reference  # noqa: E402


def timed_bench(params, name: str, layout: Layout) -> list[dict]:
    rows = []
    real = run.run_task

    def timing(params, layout, ctx, task):
        start = time.perf_counter()
        frame = real(params, layout, ctx, task)
        seconds = time.perf_counter() - start
        rows.append(
            {
                "model": ctx.name,
                "task": task,
                "n_items": len(frame),
                "seconds": round(seconds, 2),
                "items_per_s": round(len(frame) / seconds, 3),
                "accuracy": round(float(frame["correct"].mean()), 4),
            }
        )
        return frame

    run.run_task = timing
    try:
        start = time.perf_counter()
        run.run(params, layout, name, lambda: load_quant(params, name)[:2])
        rows.append(
            {
                "model": name,
                "task": "ALL (incl. model load)",
                "n_items": sum(r["n_items"] for r in rows),
                "seconds": round(time.perf_counter() - start, 2),
                "items_per_s": None,
                "accuracy": None,
            }
        )
    finally:
        run.run_task = real
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--quant", default=None, help="quant to time after the reference (default: the cohort's first)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    raw = config.build_profile(args.profile, REPO / "profiles")
    if args.threads:
        raw["threads"] = args.threads
    params = config.validate(raw, f"profiles/{args.profile}.yaml")
    out = REPO / "benchmarks" / "out" / "bench_speed" / args.profile
    layout = Layout(out)
    import shutil

    shutil.rmtree(layout.bench, ignore_errors=True)  # always re-time: drop previous parts
    prepare.run(params, layout)
    if not (layout.reference / "head").exists():  # quants' per-prompt KLD needs the reference's lm head
        from silentzone.model import load_reference

        reference.run(params, layout, *load_reference(params))
    quant = args.quant or next(iter(params.cohort), None)
    rows = timed_bench(params, "reference", layout)
    if quant:
        rows += timed_bench(params, quant, layout)
    for r in rows:
        print(
            f"{r['model']:>12} {r['task']:<24} {r['n_items']:>5} items {r['seconds']:>8.1f} s  {r['items_per_s'] or '':>8} items/s  acc {r['accuracy'] if r['accuracy'] is not None else ''}"
        )
    import pandas as pd

    io.write_csv(out.parent / f"{args.profile}.csv", pd.DataFrame(rows))
    io.write_json(out.parent / f"{args.profile}.json", {"profile": args.profile, "threads": params.threads, "rows": rows})


if __name__ == "__main__":
    main()
