"""compare-engines ENGINE: the run's engine beside a further one, quant by quant → results/tables/compare-<engine>/
and results/numbers/compare-<engine>.json (where the analyses' numbers are, so the paper reads them).

Both engines' cohort and item tables have one schema (collect); this stage only sets them side by side,
for the question the second engine answers ("simulated vs deployed"):

  cohort.csv   one row per model: `model`, `source`, `bpw`, then for each variant and `composite`
               the run's engine's value and the other engine's, suffixed `_<engine>` (e.g.
               `kld_mean` and `kld_mean_llamacpp`), and `outcome_agreement`: the share of items
               whose `correct` is the same under both engines.
  summary      (results/numbers/compare-<engine>.json) per variant, Spearman ρ (and its p) of the two
               engines' values over the quants;
               the reference's composite under each engine (accuracy within one point is the
               cross-check docs/engines.md states); the number of quants.

Silent zones and verdicts for each engine are the analyses' business: they read each engine's own
cohort and item tables (data/processed/ and data/engines/<engine>/processed/).
"""

from __future__ import annotations

import pandas as pd

from .. import io, provenance
from ..errors import SilentzoneError
from ..layout import Layout
from ..schema import COMPOSITE, ITEM_KEYS, MODEL, reference_rows


def folder(layout: Layout, engine: str):
    return layout.root / "results" / "tables" / f"compare-{engine}"


def summary_path(layout: Layout, engine: str):
    return layout.root / "results" / "numbers" / f"compare-{engine}.json"


def _tables(params, layout: Layout) -> tuple[pd.DataFrame, pd.DataFrame]:
    provenance.verify_processed(layout.processed, params)
    cohort = io.read_parquet(layout.processed / "cohort.parquet", f"cohort table in {layout.processed}")
    items = io.read_parquet(layout.processed / "items.parquet", f"item table in {layout.processed}")
    return cohort, items


def side_by_side(params, mine: pd.DataFrame, theirs: pd.DataFrame, items_a: pd.DataFrame, items_b: pd.DataFrame, engine: str):
    """(cohort table with both engines' values, summary) of two engines' cohort and item tables."""
    from scipy.stats import spearmanr

    if sorted(mine[MODEL]) != sorted(theirs[MODEL]):
        raise SilentzoneError(
            f"the two engines measured different models ({sorted(set(mine[MODEL]) ^ set(theirs[MODEL]))}); rerun `silentzone collect` for both"
        )
    values = [*params.variants, COMPOSITE]
    a = mine.set_index(MODEL)
    b = theirs.set_index(MODEL).loc[a.index]
    out = a[["source", "bpw"]].copy()
    for col in values:
        out[col] = a[col]
        out[f"{col}_{engine}"] = b[col]
    joined = items_a.merge(items_b, on=ITEM_KEYS, suffixes=("", "_other"), validate="one_to_one")
    if len(joined) != len(items_a) or len(joined) != len(items_b):
        raise SilentzoneError(f"the two engines' item tables hold different items; rerun `silentzone collect --engine {engine}`")
    agree = (joined["correct"] == joined["correct_other"]).groupby(joined[MODEL]).mean()
    out["outcome_agreement"] = agree.reindex(out.index)
    quants = ~reference_rows(a.reset_index()).to_numpy()
    summary = {"engine": params.engine.name, "other": engine, "n_quants": int(quants.sum()), "spearman": {}}
    for col in values:
        x, y = a[col].to_numpy()[quants], b[col].to_numpy()[quants]
        if quants.sum() >= 3 and len(set(x)) > 1 and len(set(y)) > 1:
            rho, p = spearmanr(x, y)
            summary["spearman"][col] = {"rho": float(rho), "p": float(p)}
    ref = a.index[~quants][0]
    summary["reference_composite"] = {params.engine.name: float(a.loc[ref, COMPOSITE]), engine: float(b.loc[ref, COMPOSITE])}
    summary["reference_outcome_agreement"] = float(agree.get(ref, float("nan")))
    return out.reset_index(), summary


def run(params, layout: Layout, engine: str) -> str:
    if engine not in params.engine.also:
        raise SilentzoneError(f"{params.source}: compare-engines {engine!r}: not in engine.also {params.engine.also}")
    mine, items_a = _tables(params, layout)
    theirs, items_b = _tables(params, layout.for_engine(params.engine.name, engine))
    table, summary = side_by_side(params, mine, theirs, items_a, items_b, engine)
    out, numbers = folder(layout, engine), summary_path(layout, engine)
    io.write_csv(out / "cohort.csv", table, float_format="%.9g")
    io.write_json(numbers, summary)
    provenance.write_stamp(out / "stamp.json", params, "compare-engines", [out / "cohort.csv"], engine)
    rho = summary["spearman"].get("kld_mean", {}).get("rho", float("nan"))
    return f"{out}/cohort.csv: {len(table)} models; Spearman rho of mean KLD between engines {rho:.3f}"
