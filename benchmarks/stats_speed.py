"""Wall time of the statistics on a paper-sized synthetic cohort: 30 quants, the 14 variants, 5 tasks
+ composite, full cohort and silent zone, 10,000 permutation and 10,000 bootstrap resamples
(profiles/default.yaml). Target: the correlation table in < 30 s on 2 cores.

    .venv/bin/python benchmarks/stats_speed.py [--quants 30] [--items 200] [--threads 2]

Also times the item-level analyses (paired-bootstrap silent zone, flips and their correlations,
failure prediction, routing) on `--items` items per task. Prints one line per stage and writes
benchmarks/out/stats_speed.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

TASKS = ["arc", "boolq", "hellaswag", "mmlu", "humaneval"]


def synthetic(n_quants: int, n_items: int, variants: list[str], seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A cohort whose quants drift from the reference by a latent distance, and its item table."""
    rng = np.random.default_rng(seed)
    distance = np.sort(rng.lognormal(-4, 1.2, n_quants))
    names = [f"q{i:02d}" for i in range(n_quants)]
    items = []
    for task in TASKS:
        ref = rng.random(n_items) < 0.6
        items.append(
            pd.DataFrame(
                {
                    "model": "reference",
                    "task": task,
                    "item_id": np.arange(n_items).astype(str),
                    "correct": ref,
                    "prompt_kld": np.nan,
                }
            )
        )
        for name, d in zip(names, distance):
            flip = rng.random(n_items) < min(0.5, 3 * d)
            correct = np.where(flip, rng.random(n_items) < 0.45, ref)
            items.append(
                pd.DataFrame(
                    {
                        "model": name,
                        "task": task,
                        "item_id": np.arange(n_items).astype(str),
                        "correct": correct,
                        "prompt_kld": d * rng.lognormal(0, 0.5, n_items) * (1 + flip),
                    }
                )
            )
    items = pd.concat(items, ignore_index=True)
    scores = items.groupby(["model", "task"])["correct"].mean().unstack("task").add_prefix("score_")
    scores["composite"] = scores.mean(axis=1)
    cohort = pd.DataFrame({"model": ["reference", *names], "is_reference": [True] + [False] * n_quants, "bpw": 0.0})
    for v in variants:
        cohort[v] = [0.0, *(distance * rng.lognormal(0, 0.3, n_quants))]
    cohort = cohort.merge(scores, left_on="model", right_index=True)
    return cohort, items


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quants", type=int, default=30)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))

    from silentzone import analyses, config, io, schema, stats, zone

    params = config.validate(
        config.build_profile("default", Path(__file__).resolve().parents[1] / "profiles"), "profiles/default.yaml"
    )
    settings = params.stats_settings()
    variants = list(params.variants)
    cohort, items = synthetic(args.quants, args.items, variants, settings["seed"])
    timings = {}

    cpu = {}

    def timed(name, fn):
        # CPU time beside wall time: on a shared machine it is the better estimate of a quiet run
        start, start_cpu = time.perf_counter(), time.process_time()
        out = fn()
        timings[name] = round(time.perf_counter() - start, 3)
        cpu[name] = round(time.process_time() - start_cpu, 3)
        print(f"{name:<34s} {timings[name]:8.2f} s wall {cpu[name]:8.2f} s CPU", flush=True)
        return out

    silent = timed("silent zone (paired bootstrap)", lambda: zone.silent_zone(cohort, params, items=items))
    zones = {"full": schema.quant_names(cohort), "silent": zone.members(silent)}
    table = timed(
        "correlations (14 x 6 x 2 zones)",
        lambda: stats.correlation_table(cohort, variants, schema.score_columns(cohort), settings, zones),
    )
    flip_table = timed("flips", lambda: analyses.flips(items))
    timed("flip correlations (14 x 12 x 2)", lambda: analyses.flip_correlations(cohort, flip_table, variants, settings, zones))
    timed("failure prediction", lambda: analyses.failure_prediction(items, settings))
    timed("routing", lambda: analyses.routing(items, settings))
    n_corr = len(table)
    print(
        f"{n_corr} score correlations, {settings['n_resamples']} permutations + {settings['n_bootstrap']} bootstrap each; "
        f"silent zone: {len(zones['silent'])} of {args.quants} quants; {os.cpu_count()} CPUs visible, machine shared: "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    io.write_json(
        Path(__file__).parent / "out" / "stats_speed.json",
        {
            "quants": args.quants,
            "items_per_task": args.items,
            "tasks": len(TASKS),
            "variants": len(variants),
            "n_resamples": settings["n_resamples"],
            "n_bootstrap": settings["n_bootstrap"],
            "score_correlations": n_corr,
            "seconds": timings,
            "cpu_seconds": cpu,
            "cpus": os.cpu_count(),
            "load_average": round(os.getloadavg()[0], 2),
            "machine": platform.processor() or platform.machine(),
        },
    )


if __name__ == "__main__":
    main()
