"""Scale of the analysis side: the notebooks' analyses and `silentzone analyze-cohort` on a synthetic
cohort of many quants and items, each in its own process, timed, with its peak memory (RSS).

    .venv/bin/python benchmarks/analysis_scale.py [--quants 500] [--items 20000] [--tasks 4]
        [--scaling 5000 10000] [--only 01 03 cohort] [--resamples N]

The cohort: `--quants` quants drifting from the reference by a seeded latent distance (their 14
fidelity variants follow it, with noise), `--items` items per model split evenly over `--tasks`
tasks, 0/1 outcomes that flip away from the reference's more often the larger the distance, and a
per-prompt KLD for every quant item (what `collect` would write: data/processed/{cohort,items}.parquet,
written by silentzone.schema.write_tables). Params: profiles/default.yaml (10,000 permutation and
10,000 bootstrap resamples, 1,000 splits and simulations), unless --resamples lowers them.

Each analysis runs as the notebook's kernel would: a fresh Python process that calls its
silentzone.reports function on the processed tables (01 fidelity-vs-score, 02 silent-zone sweep,
03 failure prediction, 04 routing, 05 volume-direction, 07 noise ceiling) and `silentzone
analyze-cohort` on the cohort as a CSV (one row per quant: what notebook 06 does per published
cohort). Progress bars (SILENTZONE_PROGRESS=1) go to each process's log under benchmarks/out/.
`--scaling` repeats everything at fewer items per model (same quants): wall time per analysis
against the number of items shows whether anything grows faster than linearly.

Prints one line per analysis (wall s, CPU s, peak RSS) and writes benchmarks/out/analysis_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
ANALYSES = {
    "01": "fidelity_vs_score",
    "02": "silent_zone_sweep",
    "03": "failure_prediction",
    "04": "routing",
    "05": "volume_direction",
    "07": "noise_ceiling",
}


def synthetic(n_quants: int, n_items: int, n_tasks: int, variants: list[str], seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cohort table, item table) as `collect` writes them, for a seeded synthetic cohort."""
    from silentzone.schema import ITEM_COLUMNS, scores, typed_items

    rng = np.random.default_rng(seed)
    names = [f"q{i:04d}" for i in range(n_quants)]
    distance = np.sort(rng.lognormal(-4.0, 1.2, n_quants))
    per_task = n_items // n_tasks
    tasks = np.repeat([f"task{t}" for t in range(n_tasks)], per_task)
    ids = np.tile(np.arange(per_task), n_tasks).astype(str)
    n = len(tasks)
    ref = rng.random(n) < 0.6
    flip = rng.random((n_quants, n)) < np.minimum(0.5, 3 * distance)[:, None]
    correct = np.where(flip, rng.random((n_quants, n)) < 0.45, ref[None, :])
    kld = distance[:, None] * rng.lognormal(0.0, 0.5, (n_quants, n)) * (1 + flip)
    models = np.repeat(["reference", *names], n)
    items = pd.DataFrame(
        {
            "model": models,
            "task": np.tile(tasks, n_quants + 1),
            "item_id": np.tile(ids, n_quants + 1),
            "correct": np.concatenate([ref, correct.ravel()]),
            "chosen": pd.array([0] * len(models), dtype="Int64"),
            "chosen_norm": pd.array([0] * len(models), dtype="Int64"),
            "choice_logprobs": None,
            "generation": None,
            "test_status": None,
            "prompt_kld": np.concatenate([np.full(n, np.nan), kld.ravel()]),
            "n_prompt_tokens": np.int64(64),
        }
    )[ITEM_COLUMNS]
    items = typed_items(items).sort_values(["model", "task", "item_id"], kind="stable").reset_index(drop=True)
    cohort = pd.DataFrame(
        {
            "model": ["reference", *names],
            "is_reference": [True] + [False] * n_quants,
            "bpw": [32.0, *np.linspace(8.5, 2.5, n_quants)],
            "source": ["reference"] + ["recipe"] * n_quants,
            "types": ["F32"] + ["Q8_0:1"] * n_quants,
        }
    )
    for v in variants:
        cohort[v] = [0.0, *(distance * rng.lognormal(0.0, 0.3, n_quants))]
    cohort["top1_disagree"] = [0.0, *np.minimum(1.0, 0.05 * np.sqrt(distance) * rng.lognormal(0.0, 0.2, n_quants))]
    cohort = cohort.merge(scores(items), on="model", how="left", validate="one_to_one")
    return cohort, items


def params_for(resamples: int | None):
    from silentzone import config

    raw = config.build_profile("default", REPO / "profiles")
    if resamples:
        raw["stats"]["n_resamples"] = raw["stats"]["n_bootstrap"] = resamples
        raw["notebooks"]["06-published-cohorts"]["resamples"] = resamples
    return raw


def write_run(folder: Path, args, items_per_model: int) -> tuple[Path, float]:
    """The processed tables and params of one size; seconds it took."""
    from silentzone import config, schema

    t0 = time.perf_counter()
    raw = params_for(args.resamples)
    params = config.validate(raw, "params.yaml")
    cohort, items = synthetic(args.quants, items_per_model, args.tasks, list(params.variants), params.seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(config.dump(raw), encoding="utf-8")
    schema.write_tables(folder / "processed", cohort, items)
    primary = params.stats.primary_variant
    csv = cohort[["model", primary, "kld_median", "top1_disagree", *[c for c in cohort if c.startswith("score_")]]]
    csv.to_csv(folder / "cohort.csv", index=False)
    return folder, time.perf_counter() - t0


# Peak RSS is the process's own VmHWM, read as it ends: the rusage of a child started by fork/vfork
# counts the parent's pages it saw before exec (here: the synthetic tables), so it cannot serve.
PEAK = """
def _peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            print(f"peak_rss_kib={line.split()[1]}", flush=True)
"""
KERNEL = (
    PEAK
    + """
import sys
from pathlib import Path
from silentzone import config, reports
run, name = Path(sys.argv[1]), sys.argv[2]
params = config.load(run / "params.yaml")
out = run / "results" / name
result = getattr(reports, name)(params, run / "processed", out / "figures", out / "tables", out / "numbers.json")
print(result["summary"])
_peak()
"""
)
CLI = (
    PEAK
    + """
import sys
from silentzone import cli
rc = cli.main(sys.argv[1:])
_peak()
sys.exit(rc)
"""
)


def measure(argv: list[str], log: Path) -> dict:
    """Run one analysis process: wall seconds, CPU seconds, peak RSS (its own rusage, children included)."""
    env = {**os.environ, "SILENTZONE_PROGRESS": "1", "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    peaks = [
        int(line.split("=", 1)[1]) for line in log.read_text(encoding="utf-8").splitlines() if line.startswith("peak_rss_kib=")
    ]
    return {
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(peaks[-1] / 1024) if peaks else None,
        "rc": rc,
        "loadavg_end": round(os.getloadavg()[0], 2),
    }


def run_size(args, items_per_model: int) -> dict:
    folder, gen_s = write_run(args.work / f"q{args.quants}-i{items_per_model}", args, items_per_model)
    size = {"quants": args.quants, "items_per_model": items_per_model, "tasks": args.tasks, "generate_s": round(gen_s, 1)}
    size["items_parquet_mb"] = round((folder / "processed" / "items.parquet").stat().st_size / 2**20, 1)
    print(f"== {args.quants} quants x {items_per_model} items ({args.tasks} tasks): tables in {gen_s:.0f} s", flush=True)
    results = {}
    for key in args.only:
        if key == "cohort":
            params = params_for(args.resamples)
            argv = [
                sys.executable,
                "-c",
                CLI,
                "analyze-cohort",
                str(folder / "cohort.csv"),
                *("--fidelity", "kld_mean", "--fidelity", "kld_median", "--fidelity", "top1_disagree"),
                *("--score", ",".join(c for c in pd.read_csv(folder / "cohort.csv", nrows=0).columns if c.startswith("score_"))),
                *("--silent-k", str(max(4, args.quants // 10))),
                *("--resamples", str(params["notebooks"]["06-published-cohorts"]["resamples"])),
                *("--out", str(folder / "results" / "analyze-cohort")),
            ]
            name = "analyze-cohort"
        else:
            name = ANALYSES[key]
            argv = [sys.executable, "-c", KERNEL, str(folder), name]
        m = measure(argv, folder / f"{key}-{name}.log")
        results[f"{key} {name}"] = m
        failed = "" if m["rc"] == 0 else f"  FAILED rc {m['rc']} (see its log)"
        print(
            f"  {key} {name:<20} {m['wall_s']:9.1f} s wall {m['cpu_s']:9.1f} s CPU {m['peak_rss_mb'] or 0:8.0f} MB peak RSS"
            f"  load {m['loadavg_end']}{failed}",
            flush=True,
        )
    return {**size, "analyses": results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quants", type=int, default=500)
    ap.add_argument("--items", type=int, default=20_000, help="items per model (all tasks)")
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--scaling", type=int, nargs="*", default=[], help="also these item counts, for the growth in items")
    ap.add_argument("--only", nargs="+", default=[*ANALYSES, "cohort"], choices=[*ANALYSES, "cohort"])
    ap.add_argument("--resamples", type=int, default=None, help="permutation/bootstrap resamples (default: the profile's)")
    ap.add_argument("--work", type=Path, default=OUT / "analysis-scale")
    ap.add_argument("--json", type=Path, default=OUT / "analysis_scale.json")
    args = ap.parse_args(argv)
    args.work = args.work.resolve()
    report = {"loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()), "cpus": os.cpu_count(), "sizes": []}
    for items in sorted({*args.scaling, args.items}):
        report["sizes"].append(run_size(args, items))
    report["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    if len(report["sizes"]) > 1:
        print("growth in items (wall time relative to the smallest size, items ratio in brackets):")
        base = report["sizes"][0]
        for key in base["analyses"]:
            ratios = [
                f"{s['analyses'][key]['wall_s'] / max(base['analyses'][key]['wall_s'], 0.1):.2f}x "
                f"[{s['items_per_model'] / base['items_per_model']:.0f}x]"
                for s in report["sizes"]
            ]
            print(f"  {key:<24} " + "  ".join(ratios))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"load average: start {report['loadavg_start']}, end {report['loadavg_end']}")
    return 0 if all(m["rc"] == 0 for s in report["sizes"] for m in s["analyses"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
