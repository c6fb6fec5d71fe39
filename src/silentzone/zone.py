"""The silent zone: which quants count as near-baseline. One module for the pipeline's cohort and
for published cohorts (silentzone.published), three rules:

  paired_bootstrap  the (1 − alpha) paired-bootstrap CI over items of composite_q − composite_R
                    contains 0 (the design's default; needs every model's per-item outcomes);
  margin            |composite_q − composite_R| ≤ margin, in the scores' own units;
  lowest_k          the k quants with the lowest primary fidelity variant, ties broken by name.

`zone_sweep` reports how the correlation changes as the zone grows under the last two rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import analyses, stats
from .errors import SilentzoneError
from .progress import progress
from .schema import COMPOSITE, MODEL, REFERENCE, quant_names, reference_rows

if TYPE_CHECKING:
    from .config import Params

RULES = ("paired_bootstrap", "margin", "lowest_k")
ZONE_COLUMNS = [MODEL, "delta", "ci_low", "ci_high", "primary", "in_zone"]
DELTA_COLUMNS = [MODEL, "delta", "ci_low", "ci_high"]
SWEEP_COLUMNS = [
    "criterion",
    "threshold",
    "n",
    "members",
    "rho",
    "p_perm",
    "ci_low",
    "ci_high",
    "p_equiv",
    "n_degenerate",
    "refused",
]


# ---------------------------------------------------------------- the rules, on any table of quants


def margin_members(quants: pd.DataFrame, reference_score: float, margin: float, score: str = COMPOSITE) -> list[str]:
    """Quants with |score − reference_score| ≤ margin, in table order."""
    delta = quants[score].to_numpy(dtype=float) - reference_score
    # Published scores move in steps (0.25 points, thirds of items): a delta equal to the margin must not miss by rounding.
    inside = np.abs(delta) <= margin + 1e-9 * max(1.0, abs(margin))
    return quants.loc[inside, MODEL].tolist()


def lowest_k_members(quants: pd.DataFrame, primary: str, k: int) -> list[str]:
    """The k quants with the lowest `primary`, in rank order (ties by name); a quant without a
    value has no rank and is never a member."""
    if k < 1:
        raise SilentzoneError(f"the silent zone's k must be at least 1, got {k}")
    ranked = quants.dropna(subset=[primary]).sort_values([primary, MODEL], kind="stable")
    return ranked[MODEL].head(k).tolist()


def check_k(k: int, quants: pd.DataFrame, primary: str, what: str) -> None:
    """A lowest-k zone must be a part of the cohort: k no larger than the quants `primary` ranks
    (head(k) of fewer would quietly make the zone the whole cohort)."""
    ranked = int(quants[primary].notna().sum())
    if k > ranked:
        extra = "" if ranked == len(quants) else f" ({len(quants) - ranked} of {len(quants)} have no {primary})"
        raise SilentzoneError(
            f"{what} = {k} but only {ranked} quants are ranked by {primary}{extra}; choose k <= {ranked} "
            "(the silent zone is a part of the cohort)"
        )


def paired_score_deltas(
    items: pd.DataFrame, n_bootstrap: int, rng: np.random.Generator, ci: float = 0.95, reference: str = REFERENCE
) -> pd.DataFrame:
    """Composite score_q − score_R per quant with a paired percentile bootstrap CI over items.

    Composite = mean over tasks of per-task accuracy. Each resample draws items with replacement
    within each task (tasks in sorted order) and keeps every item paired with the reference's
    outcome on it. Returns model, delta, ci_low, ci_high (quants in sorted order).
    """
    outcomes = analyses.outcome_table(items).astype(int)
    if reference not in outcomes:
        raise SilentzoneError(f"item table: no rows for model {reference!r}; the paired bootstrap needs the reference's outcomes")
    tasks = sorted(outcomes.index.get_level_values("task").unique())
    alpha = (1 - ci) / 2
    rows = []
    for quant in progress(sorted(m for m in outcomes.columns if m != reference), "paired bootstrap", unit="quant"):
        deltas, boot = [], []
        for task in tasks:
            d = (outcomes.loc[task, quant] - outcomes.loc[task, reference]).to_numpy()
            deltas.append(d.mean())
            boot.append(stats.resample_means(d, n_bootstrap, rng))  # d[rng.integers(0, n, (B, n))].mean(axis=1), in chunks
        low, high = np.quantile(np.mean(boot, axis=0), [alpha, 1 - alpha])
        rows.append({MODEL: quant, "delta": float(np.mean(deltas)), "ci_low": float(low), "ci_high": float(high)})
    return pd.DataFrame(rows, columns=DELTA_COLUMNS)


# ---------------------------------------------------------------- the pipeline's cohort table


def reference_score(cohort: pd.DataFrame, score: str = COMPOSITE) -> float:
    refs = cohort[reference_rows(cohort)]
    if len(refs) != 1:
        raise SilentzoneError(f"cohort table: expected exactly one reference row (is_reference), found {len(refs)}")
    return float(refs[score].iloc[0])


def silent_zone(
    cohort: pd.DataFrame,
    params: Params,
    items: pd.DataFrame | None = None,
    criterion: str | None = None,
    margin: float | None = None,
    k: int | None = None,
    score: str = COMPOSITE,
) -> pd.DataFrame:
    """Which quants of the cohort table are in the silent zone, by one rule (default
    `silent_zone.criterion`; `margin`/`k` default to `silent_zone.margin`/`k`).

    Returns one row per non-reference quant, in cohort order: model, delta (score_q − score_R),
    ci_low, ci_high (paired_bootstrap only), primary (`stats.primary_variant`), in_zone;
    `.attrs["criterion"]` names the rule.
    """
    sz = params.silent_zone
    criterion = criterion or sz.criterion
    primary = params.stats.primary_variant
    stats.require_columns(cohort, [MODEL, score, primary], "cohort table")
    quants = cohort[cohort[MODEL].isin(quant_names(cohort))]
    out = pd.DataFrame(
        {
            MODEL: quants[MODEL].to_numpy(),
            "delta": quants[score].to_numpy(dtype=float) - reference_score(cohort, score),
            "ci_low": np.nan,
            "ci_high": np.nan,
            "primary": quants[primary].to_numpy(dtype=float),
        }
    )
    if criterion == "paired_bootstrap":
        out = _paired_bootstrap(out, items, params)
        inside = out.loc[(out["ci_low"] <= 0) & (out["ci_high"] >= 0), MODEL]
    elif criterion == "margin":
        inside = margin_members(quants, reference_score(cohort, score), sz.margin if margin is None else float(margin), score)
    elif criterion == "lowest_k":
        k = sz.k if k is None else int(k)
        check_k(k, quants, primary, f"{params.source}: `silent_zone.k`")
        inside = lowest_k_members(quants, primary, k)
    else:
        raise SilentzoneError(
            f"{params.source}: silent_zone.criterion must be {', '.join(RULES[:-1])} or {RULES[-1]}, got {criterion!r}"
        )
    out["in_zone"] = out[MODEL].isin(inside)
    out.attrs["criterion"] = criterion
    return out[ZONE_COLUMNS]


def _paired_bootstrap(out: pd.DataFrame, items: pd.DataFrame | None, params: Params) -> pd.DataFrame:
    if items is None:
        raise SilentzoneError(
            "silent_zone.criterion = paired_bootstrap needs the item table; pass items or choose margin / lowest_k"
        )
    boot = paired_score_deltas(items, params.stats.n_bootstrap, np.random.default_rng(params.seed), 1 - params.silent_zone.alpha)
    out = out.drop(columns=["delta", "ci_low", "ci_high"]).merge(boot, on=MODEL, how="left", validate="one_to_one")
    missing = out.loc[out["delta"].isna(), MODEL].tolist()
    if missing:
        raise SilentzoneError(f"item table: no outcomes for {', '.join(missing)}; run their bench stages")
    return out


def members(zone: pd.DataFrame) -> list[str]:
    return zone.loc[zone["in_zone"], MODEL].tolist()


# ---------------------------------------------------------------- the sweep


def sweep_ks(params: Params, n_quants: int) -> list[int]:
    """`silent_zone.sweep_ks` that fit the cohort (a zone of k > n quants is the whole cohort again);
    when none fits, every k from `stats.min_n` to n."""
    return [k for k in params.silent_zone.sweep_ks if k <= n_quants] or list(range(params.stats.min_n, n_quants + 1))


def n_ranked(cohort: pd.DataFrame, params: Params) -> int:
    """Quants of the cohort table that a lowest-k zone can rank (they have the primary variant)."""
    quants = cohort[cohort[MODEL].isin(quant_names(cohort))]
    return int(quants[params.stats.primary_variant].notna().sum())


def sweep_warning(params: Params, n_quants: int) -> str | None:
    """What the sweep says when some of `silent_zone.sweep_ks` exceed the cohort and are left out."""
    dropped = [k for k in params.silent_zone.sweep_ks if k > n_quants]
    if not dropped:
        return None
    said = f"silent_zone.sweep_ks {dropped} exceed the {n_quants} quants of the cohort"
    kept = sweep_ks(params, n_quants)
    if len(dropped) < len(params.silent_zone.sweep_ks):
        return f"{said} and are left out of the sweep"
    if kept:
        return f"{said}; none fits, so the sweep runs k = {kept[0]} to {kept[-1]}"
    return f"{said}: no lowest-k zone to sweep"


def zone_sweep(
    cohort: pd.DataFrame,
    params: Params,
    variant: str | None = None,
    score: str = COMPOSITE,
    margins: list[float] | None = None,
    ks: list[int] | None = None,
) -> pd.DataFrame:
    """How ρ(variant, score) changes with the zone: one row per margin, then per k (defaults:
    `silent_zone.sweep_margins`, `sweep_ks(params, n)`; variant: `stats.primary_variant`).
    Returns criterion, threshold, n, members (comma-joined), rho, p_perm, ci_low, ci_high,
    n_degenerate, refused."""
    variant = variant or params.stats.primary_variant
    margins = params.silent_zone.sweep_margins if margins is None else margins
    ks = sweep_ks(params, n_ranked(cohort, params)) if ks is None else ks
    s = params.stats_settings()
    rows = []
    for criterion, thresholds in (("margin", margins), ("lowest_k", ks)):
        for t in thresholds:
            inside = members(silent_zone(cohort, params, criterion=criterion, margin=t, k=t, score=score))
            pair = cohort[cohort[MODEL].isin(inside)].set_index(MODEL)[[variant, score]].astype(float).dropna()
            res = stats.correlate_columns(pair, variant, score, s)
            rows.append({"criterion": criterion, "threshold": t, "members": ",".join(inside), **res})
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def variant_correlations(
    cohort: pd.DataFrame, params: Params, items: pd.DataFrame | None = None, targets: tuple[str, ...] = (COMPOSITE,)
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The study's main table in one call: every registered variant present in the cohort against
    the composite (or `targets`), full cohort and silent zone (by `silent_zone.criterion`).
    Returns (correlation table, zone)."""
    variants = [v for v in params.variants if v in cohort.columns]
    if not variants:
        raise SilentzoneError(f"cohort table: none of the variants in {params.source} `variants:` is a column; rerun collect")
    zone_table = silent_zone(cohort, params, items=items)
    zones = {"full": quant_names(cohort), "silent": members(zone_table)}
    return stats.correlation_table(cohort, variants, list(targets), params.stats_settings(), zones), zone_table
