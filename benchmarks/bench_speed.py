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
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from silentzone import config, io  # noqa: E402
from silentzone.bench import items, run  # noqa: E402


def timed_bench(params: dict, name: str, dirs: dict) -> list[dict]:
    rows = []
    real = run.run_task

    def timing(params, model_name, task, *args):
        start = time.perf_counter()
        frame = real(params, model_name, task, *args)
        seconds = time.perf_counter() - start
        rows.append({"model": model_name, "task": task, "n_items": len(frame), "seconds": round(seconds, 2),
                     "items_per_s": round(len(frame) / seconds, 3), "accuracy": round(float(frame["correct"].mean()), 4)})
        return frame

    run.run_task = timing
    try:
        start = time.perf_counter()
        run.run_bench(params, name, **dirs)
        rows.append({"model": name, "task": "ALL (incl. model load)", "n_items": sum(r["n_items"] for r in rows),
                     "seconds": round(time.perf_counter() - start, 2), "items_per_s": None, "accuracy": None})
    finally:
        run.run_task = real
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--quant", default=None, help="quant to time after the reference (default: the cohort's first)")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    params = config.build_profile(args.profile, REPO / "profiles")
    params["_source"] = f"profiles/{args.profile}.yaml"
    if args.threads:
        params["threads"] = args.threads
    out = REPO / "benchmarks" / "out" / "bench_speed" / args.profile
    dirs = {"prepared_dir": out / "prepared", "reference_dir": out / "reference", "out_dir": out / "bench"}
    for sub in ("bench",):  # always re-time: drop previous parts
        import shutil

        shutil.rmtree(out / sub, ignore_errors=True)
    items.prepare(params, dirs["prepared_dir"])
    quant = args.quant or next(iter(params.get("cohort") or {}), None)
    rows = timed_bench(params, "reference", dirs)
    if quant:
        rows += timed_bench(params, quant, dirs)
    for r in rows:
        print(f"{r['model']:>12} {r['task']:<24} {r['n_items']:>5} items {r['seconds']:>8.1f} s  {r['items_per_s'] or '':>8} items/s  acc {r['accuracy'] if r['accuracy'] is not None else ''}")
    import pandas as pd

    io.write_csv(out.parent / f"{args.profile}.csv", pd.DataFrame(rows))
    io.write_json(out.parent / f"{args.profile}.json", {"profile": args.profile, "threads": params.get("threads"), "rows": rows})


if __name__ == "__main__":
    main()
