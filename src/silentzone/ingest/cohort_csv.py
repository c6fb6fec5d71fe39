"""A published cohort table (one row per quant) into our cohort schema, through a column map.

Published tables (data/external/) name their columns freely and often print percentages. The map
says which source column fills which of ours: `model` (the name column; default: the first), `bpw`,
any of the variants, `score_<task>`, and two conveniences: `ppl` (perplexity; ppl_ratio and
abs_dln_ppl are derived against the reference row) and `same_top_p` (top1_disagree = 1 − it). The
file is read by silentzone.published.read_table, like `analyze-cohort` reads it. The reference row
becomes `reference`; its empty variants take their identity values (KLD 0, PPL ratio 1, …) as in
`silentzone collect`.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import SilentzoneError
from ..schema import COHORT_KEYS, COMPOSITE, MODEL, REFERENCE, SCORE_PREFIX, composite, score_column
from . import VARIANTS, identity

CONVENIENCE = ("ppl", "same_top_p")


def cohort_columns(tasks) -> list[str]:
    return [*COHORT_KEYS, *VARIANTS, *[score_column(t) for t in tasks], COMPOSITE]


def finish_cohort(frame, tasks):
    """Add missing variant columns (NaN), the composite, and order the columns like `collect`."""
    import pandas as pd

    for col in VARIANTS + ["bpw"]:
        if col not in frame:
            frame[col] = math.nan
    frame[COMPOSITE] = composite(frame[[score_column(t) for t in tasks]])
    out = frame[cohort_columns(tasks)].copy()
    out[MODEL] = out[MODEL].astype(str)
    out["is_reference"] = out["is_reference"].astype(bool)
    for col in out.columns[2:]:
        out[col] = pd.to_numeric(out[col]).astype("float64")
    return out.reset_index(drop=True)


def _check_map(column_map: dict[str, str], percent) -> None:
    for target, col in column_map.items():
        if target not in (MODEL, "bpw", *VARIANTS, *CONVENIENCE) and not target.startswith(SCORE_PREFIX):
            raise SilentzoneError(f"--map {target}={col}: unknown target; use {MODEL}, bpw, a variant ({', '.join(VARIANTS)}), "
                                  f"{SCORE_PREFIX}<task>, ppl or same_top_p")
    for target in percent:
        if target not in column_map:
            raise SilentzoneError(f"--percent {target}: not a mapped column; map it with --map {target}=SOURCE")


def read_cohort_csv(path, column_map: dict[str, str], reference: str, percent=()):
    """`column_map`: our column -> source column. `percent`: our columns given in percent."""
    from .. import published  # here, not at the top: `ingest cohort` needs finish_cohort but not scipy

    path = Path(path)
    column_map = dict(column_map)
    _check_map(column_map, percent)
    name_source = column_map.pop(MODEL, None)
    table, name_col = published.read_table(path, list(dict.fromkeys(column_map.values())), name_source)
    frame = table[[MODEL]].copy()
    for target, col in column_map.items():
        frame[target] = table[col] / 100.0 if target in percent else table[col]
    if reference not in set(frame[MODEL]):
        raise SilentzoneError(f"{path}: no row with {name_col} = {reference!r}; name the reference row with --reference")
    frame["is_reference"] = frame[MODEL] == reference
    frame.loc[frame["is_reference"], MODEL] = REFERENCE
    _derive(frame, path)
    for col in VARIANTS:
        if col in frame:
            frame.loc[frame["is_reference"] & frame[col].isna(), col] = identity(col)
    tasks = sorted(c.removeprefix(SCORE_PREFIX) for c in frame.columns if c.startswith(SCORE_PREFIX))
    return finish_cohort(frame, tasks)


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
