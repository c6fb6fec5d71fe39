"""`silentzone collect`: one cohort table and one item table from the per-quant outputs.

cohort.parquet: one row per model (the reference included, is_reference=True): bpw, the 14
measurement variants, score_<task> (share of items correct) and composite (mean over tasks).
items.parquet: every model's per-item outcomes (the source of truth for flips, the silent zone and
per-prompt analyses). CSV copies sit beside both for people and spreadsheets.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from . import config, io
from .errors import SilentzoneError

REFERENCE = "reference"
# Values of each metric when a model is compared with itself; ppl_greedy has no identity value.
IDENTITY = {"kld": 0.0, "kld_topk": 0.0, "ppl_ratio": 1.0, "abs_dln_ppl": 0.0, "top1_disagree": 0.0, "rms_dp": 0.0, "ppl_greedy": math.nan}


def add_arguments(p):
    p.add_argument("--fidelity-dir", default=config.PATHS["fidelity"])
    p.add_argument("--bench-dir", default=config.PATHS["bench"])
    p.add_argument("--out", default=config.PATHS["processed"])


def quant_names(params: dict) -> list[str]:
    return list(config.get(params, "cohort", dict))


def reference_variants(params: dict) -> dict:
    return {name: IDENTITY[spec["metric"]] for name, spec in config.get(params, "variants", dict).items()}


def fidelity_rows(params: dict, fidelity_dir: Path) -> list[dict]:
    from .fidelity import compute_variants

    rows = [{"quant": REFERENCE, "is_reference": True, "bpw": 32.0, **reference_variants(params)}]
    for name in quant_names(params):
        table = io.read_parquet(fidelity_dir / f"{name}.parquet", f"fidelity table of quant {name!r}")
        report_path = fidelity_dir / f"{name}.report.json"
        if not report_path.exists():
            raise SilentzoneError(f"{report_path}: missing; rerun `silentzone fidelity {name}`")
        report = json.loads(report_path.read_text())
        rows.append({"quant": name, "is_reference": False, "bpw": float(report["bpw"]), **compute_variants(table, params)})
    return rows


def item_table(params: dict, bench_dir: Path) -> pd.DataFrame:
    frames = []
    for model in [REFERENCE, *quant_names(params)]:
        frames.append(io.read_parquet(bench_dir / f"{model}.parquet", f"bench table of {model!r}"))
    items = pd.concat(frames, ignore_index=True)
    dupes = items.duplicated(["model", "task", "item_id"])
    if dupes.any():
        first = items[dupes].iloc[0]
        raise SilentzoneError(f"{bench_dir}: duplicate item {first['task']}/{first['item_id']} for model {first['model']}; rerun its bench stage")
    return items.sort_values(["model", "task", "item_id"], kind="stable").reset_index(drop=True)


def scores(items: pd.DataFrame) -> pd.DataFrame:
    """score_<task> per model and the composite (unweighted mean over tasks)."""
    per_task = items.groupby(["model", "task"])["correct"].mean().unstack("task")
    per_task.columns = [f"score_{t}" for t in per_task.columns]
    per_task["composite"] = per_task.mean(axis=1)
    return per_task.reset_index().rename(columns={"model": "quant"})


def collect(params: dict, fidelity_dir: Path, bench_dir: Path, out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    cohort = pd.DataFrame(fidelity_rows(params, Path(fidelity_dir)))
    items = item_table(params, Path(bench_dir))
    cohort = cohort.merge(scores(items), on="quant", how="left", validate="one_to_one")
    missing = cohort.loc[cohort["composite"].isna(), "quant"].tolist()
    if missing:
        raise SilentzoneError(f"{bench_dir}: no benchmark outcomes for {', '.join(missing)}; run their bench stages")
    out_dir = Path(out_dir)
    io.write_parquet(out_dir / "cohort.parquet", cohort)
    io.write_csv(out_dir / "cohort.csv", cohort, float_format="%.9g")
    io.write_parquet(out_dir / "items.parquet", items)
    return cohort, items


def run(args):
    params = config.load(args.params)
    cohort, items = collect(params, Path(args.fidelity_dir), Path(args.bench_dir), Path(args.out))
    print(f"{args.out}/cohort.parquet: {len(cohort)} models; items.parquet: {len(items)} rows")
    return 0
