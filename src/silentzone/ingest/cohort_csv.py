"""A published cohort table (one row per quant) into our cohort schema, through a column map.

Published tables (data/external/) name their columns freely and often print percentages. The map
says which source column fills which of ours: `model` (the name column; default: the first), `bpw`,
any of the variants, `score_<task>`, and two conveniences: `ppl` (perplexity; ppl_ratio and
abs_dln_ppl are derived against the reference row) and `same_top_p` (top1_disagree = 1 − it). The
file is read by silentzone.published.read_table, like `analyze-cohort` reads it. The reference row
becomes `reference`; its empty variants take their identity values (KLD 0, PPL ratio 1, …) as in
`silentzone collect`.

Units: a mapped column is in our unit (KLD in nats, shares as fractions) unless `--percent OURS`
says it is in percent, which only shares (score_<task>, same_top_p, top1_disagree, rms_dp) can be;
nothing is guessed from the values. Every mapped value must lie in its column's domain
(silentzone.ingest.checks.domain): KLD ≥ −16/65535, perplexity ≥ 1, shares in [0, 1] (in [0, 100]
with --percent), bpw in (0, 64]. One source per value: a target mapped twice, a source column
filling two targets, or `ppl`/`same_top_p` beside a column derived from it is refused.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import SilentzoneError
from ..schema import COHORT_KEYS, COMPOSITE, MODEL, REFERENCE, SCORE_PREFIX, composite, score_column
from . import VARIANTS, checks, identity

CONVENIENCE = ("ppl", "same_top_p")
# Each convenience column is the one source of the columns derived from it.
DERIVED = {"ppl": ("ppl_ratio", "abs_dln_ppl"), "same_top_p": ("top1_disagree",)}
# Units: every mapped value is in our unit (KLD in nats, shares as fractions) unless `--percent OURS`
# says the source column is in percent; only shares can be. No guessing from the values.
PERCENT_TARGETS = checks.SHARES


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
            raise SilentzoneError(
                f"--map {target}={col}: unknown target; use {MODEL}, bpw, a variant ({', '.join(VARIANTS)}), "
                f"{SCORE_PREFIX}<task>, ppl or same_top_p"
            )
    for target in percent:
        if target not in column_map:
            raise SilentzoneError(f"--percent {target}: not a mapped column; map it with --map {target}=SOURCE")
        if target not in PERCENT_TARGETS and not target.startswith(SCORE_PREFIX):
            raise SilentzoneError(
                f"--percent {target}: only shares can be given in percent ({SCORE_PREFIX}<task>, {', '.join(PERCENT_TARGETS)}); "
                f"{target} is not a share"
            )
    by_source: dict[str, str] = {}
    for target, col in column_map.items():
        if col in by_source:
            raise SilentzoneError(
                f"--map {target}={col}: column {col!r} already fills {by_source[col]}; one source column per target"
            )
        by_source[col] = target
    for source, derived in DERIVED.items():
        both = [d for d in derived if d in column_map]
        if source in column_map and both:
            raise SilentzoneError(
                f"--map {both[0]}={column_map[both[0]]}: {both[0]} is also derived from --map {source}={column_map[source]}; "
                "map one of them (one source per value)"
            )


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
        _check_column(path, table, target, col, target in percent)
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


def _check_column(path: Path, table, target: str, col: str, in_percent: bool) -> None:
    """Every mapped value within what `target` can hold (silentzone.ingest.checks.domain); an empty
    cell is a value not published and stays NaN (optional everywhere; the reference's variants
    then take their identity values)."""
    from .. import published

    bounds = checks.domain(target)
    if bounds is None:
        return
    scale = 100.0 if in_percent else 1.0
    low, high, why = bounds
    values = table[col]
    bad = (values < low * scale) | (values > high * scale)
    if not bad.any():
        return
    i = int(bad.to_numpy().argmax())
    value = values.iloc[i]
    if in_percent:
        fix = "fix the cell"
        why = why.replace("[0, 1]", "[0, 100] %")
    elif high == 1.0 and 1.0 < value <= 100.0:
        fix = f"if {col!r} is in percent, pass --percent {target}"
    else:
        fix = "fix the cell, or map another column"
    raise SilentzoneError(
        f"{published.location(path, i)}: column {col!r} (--map {target}), row {table[MODEL].iloc[i]!r}: {value:g} is "
        f"impossible ({why}); {fix}"
    )


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
