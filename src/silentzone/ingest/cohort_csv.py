"""A published cohort table (one row per quant) into our cohort schema, through a column map.

Published tables (data/external/) name their columns freely and often print percentages. The map
says which source column fills which of ours: `quant`, `bpw`, any of the 14 variants, `score_<task>`,
and two conveniences: `ppl` (perplexity; ppl_ratio and abs_dln_ppl are derived against the
reference row) and `same_top_p` (top1_disagree = 1 − it). The reference row becomes `reference`;
its empty variants take their identity values (KLD 0, PPL ratio 1, …) as in `silentzone collect`.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import SilentzoneError

VARIANTS = [
    "kld_mean", "kld_median", "kld_p90", "kld_p99", "kld_p99_9", "kld_topk_mean", "ppl_ratio", "abs_dln_ppl",
    "ppl_greedy", "top1_disagree", "rms_dp", "kld_mean_fiction", "kld_mean_code", "kld_mean_ctx128",
]
IDENTITY = {"kld_mean": 0.0, "kld_median": 0.0, "kld_p90": 0.0, "kld_p99": 0.0, "kld_p99_9": 0.0, "kld_topk_mean": 0.0,
            "ppl_ratio": 1.0, "abs_dln_ppl": 0.0, "top1_disagree": 0.0, "rms_dp": 0.0,
            "kld_mean_fiction": 0.0, "kld_mean_code": 0.0, "kld_mean_ctx128": 0.0, "ppl_greedy": math.nan}
CONVENIENCE = ("ppl", "same_top_p")


def cohort_columns(tasks) -> list[str]:
    return ["quant", "is_reference", "bpw", *VARIANTS, *[f"score_{t}" for t in tasks], "composite"]


def finish_cohort(frame, tasks):
    """Add missing variant columns (NaN), the composite, and order the columns like `collect`."""
    import pandas as pd

    for col in VARIANTS + ["bpw"]:
        if col not in frame:
            frame[col] = math.nan
    scores = [f"score_{t}" for t in tasks]
    frame["composite"] = frame[scores].mean(axis=1, skipna=False) if scores else math.nan
    out = frame[cohort_columns(tasks)].copy()
    out["quant"] = out["quant"].astype(str)
    out["is_reference"] = out["is_reference"].astype(bool)
    for col in out.columns[2:]:
        out[col] = pd.to_numeric(out[col]).astype("float64")
    return out.reset_index(drop=True)


def _data_lines(path: Path) -> list[int]:
    """File line number of the header and of every data row, as pandas (comment='#') reads them."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [i for i, line in enumerate(lines, start=1) if line.strip() and not line.lstrip().startswith("#")]


def read_cohort_csv(path, column_map: dict[str, str], reference: str, percent=()):
    """`column_map`: our column -> source column. `percent`: our columns given in percent."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise SilentzoneError(f"{path}: not found")
    source = pd.read_csv(path, comment="#", dtype=str, keep_default_na=False)
    lines = _data_lines(path)
    column_map = {"quant": "quant", **column_map}
    for target, col in column_map.items():
        if target not in ("quant", "bpw", *VARIANTS, *CONVENIENCE) and not target.startswith("score_"):
            raise SilentzoneError(f"--map {target}={col}: unknown target; use quant, bpw, a variant ({', '.join(VARIANTS)}), score_<task>, ppl or same_top_p")
        if col not in source.columns:
            raise SilentzoneError(f"{path}:{lines[0]}: no column {col!r} (for {target}); columns are {', '.join(source.columns)}")
    for target in percent:
        if target not in column_map:
            raise SilentzoneError(f"--percent {target}: not a mapped column; map it with --map {target}=SOURCE")
    frame = pd.DataFrame({"quant": source[column_map["quant"]].str.strip()})
    for target, col in column_map.items():
        if target != "quant":
            frame[target] = [_float(v, path, lines[i + 1], col) for i, v in enumerate(source[col])]
            if target in percent:
                frame[target] = frame[target] / 100.0
    dupes = frame["quant"][frame["quant"].duplicated()].tolist()
    if dupes:
        raise SilentzoneError(f"{path}:{lines[1 + frame.index[frame['quant'] == dupes[0]][1]]}: duplicate quant {dupes[0]!r}")
    if reference not in set(frame["quant"]):
        raise SilentzoneError(f"{path}: no row with {column_map['quant']} = {reference!r}; name the reference row with --reference")
    frame["is_reference"] = frame["quant"] == reference
    frame.loc[frame["is_reference"], "quant"] = "reference"
    _derive(frame, path)
    for col in VARIANTS:
        if col in frame:
            frame.loc[frame["is_reference"] & frame[col].isna(), col] = IDENTITY[col]
    tasks = sorted(c.removeprefix("score_") for c in frame.columns if c.startswith("score_"))
    return finish_cohort(frame, tasks)


def _float(value: str, path: Path, line: int, col: str) -> float:
    text = value.strip()
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise SilentzoneError(f"{path}:{line}: column {col!r} holds {value!r}, not a number; map a numeric column") from None


def _derive(frame, path: Path) -> None:
    import numpy as np

    if "ppl" in frame:
        ref_ppl = frame.loc[frame["is_reference"], "ppl"].iloc[0]
        if math.isnan(ref_ppl):
            raise SilentzoneError(f"{path}: the reference row has no perplexity; ppl_ratio needs it")
        if "ppl_ratio" not in frame:
            frame["ppl_ratio"] = frame["ppl"] / ref_ppl
        if "abs_dln_ppl" not in frame:
            frame["abs_dln_ppl"] = np.abs(np.log(frame["ppl"] / ref_ppl))
        del frame["ppl"]
    if "same_top_p" in frame:
        if "top1_disagree" not in frame:
            frame["top1_disagree"] = 1.0 - frame["same_top_p"]
        del frame["same_top_p"]
