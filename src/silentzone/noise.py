"""The noise ceiling: how much of the benchmark's spread across quants is item noise, and what the
silent-zone correlation could show at best. From the item table (model, task, item_id, correct)
and the cohort table (model, the primary variant, composite):

  split-half reliability  of each task score and of the composite, across quants. The items of each
                          task are split at random into two halves (the first ⌊n/2⌋ of a seeded
                          permutation), every quant is scored on each half (the composite: the mean
                          of the half-task scores), and the two halves are correlated across quants,
                          Spearman and Pearson. Spearman–Brown, SB(r) = 2r/(1 + r), projects the
                          half-length correlation to the full length. Over `n_splits` splits the
                          reliability is SB(mean r) and its interval SB of r's percentiles (SB is
                          monotone, so these are also SB(r)'s percentiles). An r below −1/3 gives
                          SB < −1 (no reliable variance at all); it is printed as −1. A task with
                          fewer than two items cannot be split: it is left out, and the composite
                          is then the mean over the tasks that can be (named in the numbers).
  attenuation             ρ_c = ρ(primary, composite) / sqrt(rel_composite · rel_KLD). rel_KLD is
                          taken as 1: the primary variant is a mean over every scored token of the
                          fidelity corpus, and the quants' values span orders of magnitude, so its
                          own split-half ordering of the quants does not move. A |ρ_c| above 1 (a
                          noisy reliability) is capped at ±1, with `capped` set.
  perfect-ranking simulation
                          what ρ(primary, composite) in the silent zone would look like if KLD
                          ranked quality perfectly and only item noise blurred it. True task scores
                          fall linearly with KLD from the reference's: s_q,t = s_R,t − b_t·KLD_q,
                          with b_t ≥ 0 the least-squares slope through the reference fitted to the
                          observed task scores. Each replicate keeps the reference's own outcomes
                          and flips them per quant and task: the expected drop share D and
                          leapfrog share L solve L − D = −b_t·KLD_q (the drop capped at s_R,t) and
                          L + D = the quant's observed flip volume in that task, moved to the
                          nearest volume the reference's score allows (at least the drop; no more
                          drops than items the reference passes, no more leapfrogs than it fails),
                          so each quant keeps its observed amount of disagreement as far as
                          possible while the expected score stays exactly monotone in KLD. The zone is recomputed per replicate by the
                          run's rule — for `paired_bootstrap` by its normal approximation,
                          |Δ| ≤ z_{1−α/2}·SE with the paired SE below (a percentile bootstrap per
                          replicate would cost n_sims × n_bootstrap resamples) — and ρ inside it
                          is Spearman with the run's minimum n. Reported: median and 5–95 %
                          percentiles, the share of replicates whose ρ reaches two-sided
                          significance (t approximation, the manuscript's detectability check),
                          and where the observed ρ falls in that distribution.
  minimal detectable difference
                          per quant the paired SE of composite_q − composite_R over items,
                          SE² = Σ_t var_t(x_q − x_R) / (T² n_t) (variance with 1/n, what the paired
                          bootstrap estimates); the half-width of the run's (1 − α) paired bootstrap
                          interval (the smallest difference the zone rule declares); and
                          MDD = (z_{1−α/2} + z_power)·SE, the true drop detected with probability
                          `power` (2.80·SE at α = 0.05 and 80 %), assuming the quant's observed flip
                          volume. z = Δ/SE places each quant, the most damaged (lowest Δ) first. A
                          quant without a flip has SE 0 and no z or MDD; the summaries (median,
                          range) are over the quants with at least one flip.
  power                   "powered" when the composite's split-half reliability across quants is
                          at least `verdicts.min_reliability` and the most damaged quant sits at least
                          `verdicts.min_z` paired SE below the reference; else "underpowered" and why.
                          The same definition (reliability_power) decides every claim's power, on
                          the quants and outcome that claim's test uses (silentzone.verdicts).

Every draw comes from generators seeded from params.seed (splits and simulation on separate
streams, so changing one count leaves the other's draws alone). Nothing here needs more than numpy
and scipy; cohorts of 0 to 3 quants give refused records (reasons), never an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import norm, rankdata

from . import analyses, stats, zone
from .formatting import with_minus
from .progress import progress
from .schema import COMPOSITE, MODEL, REFERENCE, SIGNED, quant_names, score_column
from .stats import critical_rho

if TYPE_CHECKING:
    from .config import NoiseOptions, Params, Verdicts

KLD_RELIABILITY = 1.0  # the primary variant's own reliability across quants, taken as 1 (module docstring)
SIM_PERCENTILES = (0.05, 0.95)
RELIABILITY_COLUMNS = [
    "zone",
    "score",
    "n_quants",
    "n_items",
    "split_rho",
    "reliability",
    "low",
    "high",
    "split_r_pearson",
    "reliability_pearson",
    "low_pearson",
    "high_pearson",
    "n_degenerate",
    "refused",
]
MDD_COLUMNS = [MODEL, "primary", "delta", "se", "z", "half_width", "mdd", "ci_low", "ci_high", "in_zone"]
SIMULATION_COLUMNS = [
    "zone",
    "rho_observed",
    "n_observed",
    "rho_median",
    "rho_p05",
    "rho_p95",
    "n_median",
    "share_defined",
    "share_significant",
    "share_below_observed",
    "refused",
]
ATTENUATION_COLUMNS = ["zone", "n", "rho", "reliability", "rho_corrected", "capped", "refused"]
DRAW_CHUNK = 1 << 22  # simulated outcomes per chunk of replicates (bounds memory on large cohorts)


# ---------------------------------------------------------------- small pieces, tested one by one


def spearman_brown(r):
    """Full-length reliability from a half-length correlation: 2r / (1 + r)."""
    r = np.asarray(r, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2 * r / (1 + r)


def _sb_printable(r: float) -> float:
    """SB(r) floored at −1 (r < −1/3: no reliable variance; SB itself runs to −∞ at r = −1)."""
    return float(max(-1.0, spearman_brown(r))) if r > -1 else -1.0


def row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson r of each row of a with the same row of b, ignoring NaN cells; NaN where a row
    has fewer than two values or either side is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    both = ~(np.isnan(a) | np.isnan(b))
    n = both.sum(axis=1)
    a, b = np.where(both, a, 0.0), np.where(both, b, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ma, mb = a.sum(1) / n, b.sum(1) / n
        da, db = np.where(both, a - ma[:, None], 0.0), np.where(both, b - mb[:, None], 0.0)
        sab, saa, sbb = (da * db).sum(1), (da * da).sum(1), (db * db).sum(1)
        # relative tolerance: a row of equal shares can carry rounding noise instead of an exact 0
        flat = (saa <= 1e-24 * np.maximum(1.0, (a * a).sum(1))) | (sbb <= 1e-24 * np.maximum(1.0, (b * b).sum(1)))
        r = sab / np.sqrt(saa * sbb)
    r[(n < 2) | flat] = np.nan
    return np.clip(r, -1.0, 1.0)


def row_spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman ρ per row (average ranks among the row's non-NaN cells; NaN cells are left out
    pairwise, so a row's ρ is over the cells both sides have)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    both = ~(np.isnan(a) | np.isnan(b))
    ra = rankdata(np.where(both, a, np.nan), axis=1, nan_policy="omit")
    rb = rankdata(np.where(both, b, np.nan), axis=1, nan_policy="omit")
    return row_pearson(ra, rb)


def attenuation_corrected(rho: float | None, reliability: float | None, kld_reliability: float = KLD_RELIABILITY) -> dict:
    """ρ / sqrt(reliability · kld_reliability), capped at ±1: {rho_corrected, capped, refused}."""
    if rho is None or (isinstance(rho, float) and math.isnan(rho)):
        return {"rho_corrected": None, "capped": False, "refused": "the observed ρ is undefined"}
    if reliability is None or not reliability > 0:
        return {
            "rho_corrected": None,
            "capped": False,
            "refused": "the composite has no reliable variance across these quants (split-half reliability ≤ 0 or undefined)",
        }
    corrected = rho / math.sqrt(reliability * kld_reliability)
    capped = abs(corrected) > 1
    return {"rho_corrected": float(np.clip(corrected, -1.0, 1.0)), "capped": bool(capped), "refused": None}


def z_factor(alpha: float, power: float) -> tuple[float, float]:
    """(z_{1−α/2}, z_power): MDD = (sum)·SE; 1.96 + 0.84 = 2.80 at α = 0.05 and 80 % power."""
    return float(norm.ppf(1 - alpha / 2)), float(norm.ppf(power))


# ---------------------------------------------------------------- the item outcomes as matrices


# The two outcomes every test is run on: the item column, the cohort column it averages to, its name in prose.
OUTCOMES = {
    "accuracy": ("correct", COMPOSITE, "accuracy"),
    "signed": ("gold_logprob", SIGNED, "the signed outcome"),
}


@dataclass
class Outcomes:
    """Per-item outcomes per task (items × models, tasks sorted), the reference's column apart: 0/1
    `correct`, or the gold answer's log-probability (the signed outcome; tasks without one left out)."""

    tasks: list[str]
    models: list[str]  # the quants, in the cohort table's order
    blocks: dict[str, np.ndarray]  # task -> (n_items, n_quants) float
    reference: dict[str, np.ndarray]  # task -> (n_items,) float

    @classmethod
    def of(cls, items: pd.DataFrame, quants: list[str], reference: str = REFERENCE, column: str = "correct") -> Outcomes:
        wide = analyses.outcome_table(items, column).astype(float)
        tasks = sorted(wide.index.get_level_values("task").unique())
        missing = [q for q in quants if q not in wide]
        if missing:
            from .errors import SilentzoneError

            raise SilentzoneError(f"item table: no outcomes for {', '.join(missing)}; run their bench stages")
        blocks = {t: wide.loc[t, quants].to_numpy() for t in tasks}
        ref = {t: wide.loc[t, reference].to_numpy() if reference in wide else None for t in tasks}
        return cls(tasks, list(quants), blocks, ref)

    def n_items(self, task: str) -> int:
        return int(self.blocks[task].shape[0])


# ---------------------------------------------------------------- split-half reliability


def split_half_correlations(
    blocks: dict[str, np.ndarray], n_splits: int, rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per task (≥ 2 items) and for the composite of those tasks: (Spearman r, Pearson r) of the
    two half-scores across the models (columns), one value per split. Tasks in the given order,
    each split drawn for every task from the one generator."""
    halves = {}
    for task, x in blocks.items():
        n = x.shape[0]
        if n < 2:
            continue
        h = n // 2
        order = np.argsort(rng.random((n_splits, n)), axis=1)
        mask = np.zeros((n_splits, n))
        np.put_along_axis(mask, order[:, :h], 1.0, axis=1)
        halves[task] = (mask @ x / h, (1.0 - mask) @ x / (n - h))
    out = {task: (row_spearman(a, b), row_pearson(a, b)) for task, (a, b) in halves.items()}
    if halves:
        a = np.mean([ab[0] for ab in halves.values()], axis=0)
        b = np.mean([ab[1] for ab in halves.values()], axis=0)
        out[COMPOSITE] = (row_spearman(a, b), row_pearson(a, b))
    return out


def summarize_splits(r: np.ndarray, level: float) -> dict:
    """{split_rho, reliability, low, high, n_degenerate}: the mean split-half r, its Spearman–Brown
    value and the SB of r's central `level` percentile interval; None where every split was
    degenerate (constant half-scores)."""
    valid = r[~np.isnan(r)]
    if len(valid) == 0:
        return {"split_rho": None, "reliability": None, "low": None, "high": None, "n_degenerate": int(len(r))}
    tail = (1 - level) / 2
    low, high = np.quantile(valid, [tail, 1 - tail])
    mean = float(valid.mean())
    return {
        "split_rho": mean,
        "reliability": _sb_printable(mean),
        "low": _sb_printable(low),
        "high": _sb_printable(high),
        "n_degenerate": int(len(r) - len(valid)),
    }


def split_rng(seed: int, outcome: str, names) -> np.random.Generator:
    """The item splits of one reliability: seeded from params' seed, the outcome and the set of quants,
    so the same quants' reliability is the same number in every table and verdict that prints it."""
    return stats.test_rng(seed, "split-half", outcome, ",".join(sorted(names)))


def reliability_table(
    outcomes: Outcomes,
    members: dict[str, list[str]],
    n_splits: int,
    level: float,
    min_n: int,
    seed: int,
    outcome: str = "accuracy",
) -> pd.DataFrame:
    """One row per zone and score (each task that can be split, then the composite): the
    split-half reliability across that zone's quants, Spearman and Pearson; refused rows say why."""
    rows = []
    splittable = [t for t in outcomes.tasks if outcomes.n_items(t) >= 2]
    for zone_name, names in members.items():
        rng = split_rng(seed, outcome, names)
        cols = [outcomes.models.index(m) for m in names]
        scores = [*splittable, COMPOSITE]
        n_items = {**{t: outcomes.n_items(t) for t in splittable}, COMPOSITE: sum(outcomes.n_items(t) for t in splittable)}
        why = None
        if len(cols) < min_n:
            why = f"fewer than {min_n} quants (n = {len(cols)})"
        elif not splittable:
            why = "no task has 2 or more items to split"
        corr = {} if why else split_half_correlations({t: outcomes.blocks[t][:, cols] for t in splittable}, n_splits, rng)
        for score in scores:
            row = {
                "zone": zone_name,
                "score": score if score == COMPOSITE else score_column(score),
                "n_quants": len(cols),
                "n_items": n_items[score],
            }
            if why:
                rows.append({**row, "n_degenerate": None, "refused": why})
                continue
            spearman_r, pearson_r = corr[score]
            s, p = summarize_splits(spearman_r, level), summarize_splits(pearson_r, level)
            refused = None if s["reliability"] is not None else f"every one of {n_splits} splits gave constant half-scores"
            rows.append(
                {
                    **row,
                    **s,
                    "split_r_pearson": p["split_rho"],
                    "reliability_pearson": p["reliability"],
                    "low_pearson": p["low"],
                    "high_pearson": p["high"],
                    "refused": refused,
                }
            )
    return pd.DataFrame(rows, columns=RELIABILITY_COLUMNS)


def items_needed(reliability: float | None, n_items: int, target: float) -> int | None:
    """Items the test's outcome would need for split-half reliability `target` (Spearman–Brown
    prophecy: lengthening by m gives m·r/(1 + (m − 1)·r)); None when r ≤ 0 (no item count makes noise
    reliable)."""
    if reliability is None or not reliability > 0:
        return None
    if reliability >= target:
        return int(n_items)
    return int(
        math.ceil(round(n_items * target * (1 - reliability) / (reliability * (1 - target)), 6))
    )  # round: 1200.0000001 is 1200


def reliability_power(row: dict, outcome: str, min_reliability: float) -> dict:
    """Power, the one definition every test and the noise section use: the split-half reliability of the
    test's outcome across the very quants it uses must reach `min_reliability`. `row` is that
    reliability (a reliability_table composite row); returns {outcome, n_quants, n_items, reliability,
    ci, items_needed, powered, reason}."""
    r, n_items = row.get("reliability"), int(row.get("n_items") or 0)
    label = OUTCOMES[outcome][2] if outcome in OUTCOMES else outcome
    out = {
        "outcome": outcome,
        "n_quants": int(row.get("n_quants") or 0),
        "n_items": n_items,
        "reliability": r,
        "ci": [row.get("low"), row.get("high")],
        "items_needed": items_needed(r, n_items, min_reliability),
    }
    if r is None:
        why = row.get("refused") or "undefined"
        return {
            **out,
            "powered": False,
            "reason": f"the split-half reliability of {label} across these quants is undefined ({why})",
        }
    if r < min_reliability:
        need = out["items_needed"]
        more = (
            f"about {need} items would reach {min_reliability:.2f}"
            if need is not None
            else "no number of items would: its spread across these quants is noise"
        )
        return {
            **out,
            "powered": False,
            "reason": f"{label} has split-half reliability {with_minus(f'{r:.2f}')} across these {out['n_quants']} quants, below "
            f"{min_reliability:.2f} ({more})",
        }
    return {
        **out,
        "powered": True,
        "reason": f"{label} has split-half reliability {r:.2f} across these {out['n_quants']} quants (at least {min_reliability:.2f})",
    }


def test_power(
    outcomes: Outcomes, names: list[str], outcome: str, n_splits: int, level: float, min_n: int, seed: int, min_reliability: float
) -> dict:
    """reliability_power of `outcome` across `names` (a reliability computed with its own split_rng)."""
    table = reliability_table(outcomes, {"tested": list(names)}, n_splits, level, min_n, seed, outcome)
    return reliability_power(_pick(table, "tested", COMPOSITE), outcome, min_reliability)


def ratio_reliability(
    numerators: dict[str, np.ndarray], denominators: dict[str, np.ndarray], n_splits: int, level: float, rng: np.random.Generator
) -> dict:
    """Split-half reliability across quants of a pooled ratio statistic Σnum/Σden over items (flip
    volume: num = |Δ|, den = 1; direction: num = Δ⁺, den = |Δ|): each task's items split at random,
    the sums pooled over tasks per half, the halves' ratios correlated across quants (Spearman, NaN
    halves left out pairwise) and projected by Spearman–Brown. summarize_splits' keys."""
    a_num = a_den = b_num = b_den = 0.0
    for task, num in numerators.items():
        den = denominators[task]
        n = num.shape[0]
        if n < 2:
            continue
        order = np.argsort(rng.random((n_splits, n)), axis=1)
        mask = np.zeros((n_splits, n))
        np.put_along_axis(mask, order[:, : n // 2], 1.0, axis=1)
        a_num, a_den = a_num + mask @ num, a_den + mask @ den
        b_num, b_den = b_num + (1 - mask) @ num, b_den + (1 - mask) @ den
    if isinstance(a_num, float):
        return summarize_splits(np.full(n_splits, np.nan), level)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = np.where(a_den > 0, a_num / np.where(a_den > 0, a_den, 1.0), np.nan)
        b = np.where(b_den > 0, b_num / np.where(b_den > 0, b_den, 1.0), np.nan)
    return summarize_splits(row_spearman(a, b), level)


# ---------------------------------------------------------------- paired SE and the minimal detectable difference


def paired_se(outcomes: Outcomes) -> tuple[np.ndarray, np.ndarray]:
    """(Δ, SE) per quant of composite_q − composite_R: Δ = mean over tasks of mean(x_q − x_R),
    SE² = Σ_t var_t / (T² n_t) with var_t the 1/n variance of x_q − x_R over task t's items."""
    T = len(outcomes.tasks)
    delta = np.zeros(len(outcomes.models))
    var = np.zeros(len(outcomes.models))
    for t in outcomes.tasks:
        d = outcomes.blocks[t] - outcomes.reference[t][:, None]
        m = d.mean(axis=0)
        delta += m / T
        var += np.maximum((d * d).mean(axis=0) - m * m, 0.0) / (T * T * d.shape[0])
    return delta, np.sqrt(var)


def mdd_table(
    outcomes: Outcomes, zone_table: pd.DataFrame, half_widths: pd.DataFrame, alpha: float, power: float
) -> pd.DataFrame:
    """Per quant, most damaged first: primary, Δ, SE, z = Δ/SE, the run's paired bootstrap
    half-width and interval, MDD = (z_{1−α/2} + z_power)·SE, and zone membership. A quant without
    a flip has SE 0: its z and MDD are NaN (its observed flip volume, which the MDD assumes, is 0)."""
    delta, se = paired_se(outcomes)
    za, zp = z_factor(alpha, power)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, delta / np.where(se > 0, se, 1.0), np.nan)
    table = pd.DataFrame(
        {
            MODEL: pd.Series(outcomes.models, dtype=object),
            "delta": delta,
            "se": se,
            "z": z,
            "mdd": np.where(se > 0, (za + zp) * se, np.nan),
        }
    )
    table = table.merge(zone_table[[MODEL, "primary", "in_zone"]].astype({MODEL: object}), on=MODEL, how="left")
    table = table.merge(half_widths[[MODEL, "ci_low", "ci_high"]].astype({MODEL: object}), on=MODEL, how="left")
    table["half_width"] = (table["ci_high"] - table["ci_low"]) / 2
    table = table.sort_values(["delta", "primary", MODEL], ascending=[True, False, True], kind="stable")
    return table[MDD_COLUMNS].reset_index(drop=True)


# ---------------------------------------------------------------- the perfect-ranking simulation


def fitted_drop_slopes(outcomes: Outcomes, kld: np.ndarray) -> dict[str, float]:
    """Per task b_t ≥ 0: the least-squares slope of s_R,t − s_q,t on KLD_q through the origin."""
    denom = float(kld @ kld)
    slopes = {}
    for t in outcomes.tasks:
        drop = outcomes.reference[t].mean() - outcomes.blocks[t].mean(axis=0)
        slopes[t] = max(0.0, float(kld @ drop) / denom) if denom > 0 else 0.0
    return slopes


def flip_probabilities(outcomes: Outcomes, kld: np.ndarray, slopes: dict[str, float]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per task (d, l) per quant: the probability that an item the reference passes is failed,
    and that one it fails is passed. The expected drop share D = s_R·d and leapfrog share
    L = (1 − s_R)·l satisfy L − D = −δ exactly, δ = min(b_t·KLD_q, s_R); the volume L + D is the
    quant's observed one where the reference's score allows it (D = (v + δ)/2 kept inside
    [δ, min(s_R, 1 − s_R + δ)]), so the truth stays a monotone function of KLD."""
    out = {}
    for t in outcomes.tasks:
        ref, x = outcomes.reference[t], outcomes.blocks[t]
        s_ref = float(ref.mean())
        drop = np.minimum(slopes[t] * kld, s_ref)
        volume = np.abs(x - ref[:, None]).mean(axis=0)
        drops = np.clip((volume + drop) / 2, drop, np.minimum(s_ref, 1 - s_ref + drop))
        leaps = drops - drop
        d = drops / s_ref if s_ref > 0 else np.zeros_like(drops)
        lp = leaps / (1 - s_ref) if s_ref < 1 else np.zeros_like(leaps)
        out[t] = (np.clip(d, 0.0, 1.0), np.clip(lp, 0.0, 1.0))
    return out


def zone_masks(
    delta: np.ndarray, se: np.ndarray, criterion: str, alpha: float, margin: float, fixed: np.ndarray | None
) -> np.ndarray:
    """Silent-zone membership per replicate (rows) and quant: the run's rule on simulated Δ
    (paired_bootstrap by its normal approximation; lowest_k: the fixed KLD ranks)."""
    if criterion == "paired_bootstrap":
        return np.abs(delta) <= norm.ppf(1 - alpha / 2) * se + 1e-12
    if criterion == "margin":
        return np.abs(delta) <= margin + 1e-9 * max(1.0, abs(margin))  # zone.margin_members' tolerance
    return np.broadcast_to(fixed, delta.shape).copy()


def simulate(
    outcomes: Outcomes,
    kld: np.ndarray,
    n_sims: int,
    rng: np.random.Generator,
    criterion: str,
    alpha: float,
    margin: float,
    fixed: np.ndarray | None,
    min_n: int,
) -> dict:
    """Replicates of the cohort under perfect KLD ranking (module docstring): per replicate the
    full-cohort and silent-zone Spearman ρ(KLD, composite) (NaN where refused) and the zone size."""
    slopes = fitted_drop_slopes(outcomes, kld)
    probs = flip_probabilities(outcomes, kld, slopes)
    Q, T = len(outcomes.models), len(outcomes.tasks)
    ref_all = np.concatenate([outcomes.reference[t] for t in outcomes.tasks])
    p_right = np.concatenate([np.where(outcomes.reference[t][:, None] > 0, 1 - probs[t][0], probs[t][1]) for t in outcomes.tasks])
    bounds = np.cumsum([0] + [outcomes.n_items(t) for t in outcomes.tasks])
    n_items = np.diff(bounds).astype(float)
    delta = np.empty((n_sims, Q))
    var = np.empty((n_sims, Q))
    chunk = max(1, DRAW_CHUNK // max(1, len(ref_all) * Q))
    for start in progress(range(0, n_sims, chunk), "perfect-ranking simulation", unit="chunk"):
        stop = min(n_sims, start + chunk)
        x = (rng.random((stop - start, len(ref_all), Q)) < p_right).astype(np.int8)
        d = x - ref_all[None, :, None].astype(np.int8)
        s1 = np.add.reduceat(d, bounds[:-1], axis=1, dtype=np.int64) / n_items[None, :, None]  # mean d per task
        s2 = np.add.reduceat(np.abs(d), bounds[:-1], axis=1, dtype=np.int64) / n_items[None, :, None]  # mean d² per task
        delta[start:stop] = s1.mean(axis=1)
        var[start:stop] = (np.maximum(s2 - s1 * s1, 0.0) / n_items[None, :, None]).sum(axis=1) / (T * T)
    ref_composite = float(np.mean([outcomes.reference[t].mean() for t in outcomes.tasks]))
    composite = ref_composite + delta
    inside = zone_masks(delta, np.sqrt(var), criterion, alpha, margin, fixed)
    kld_rows = np.broadcast_to(kld, composite.shape)

    def rho_in(mask):
        n = mask.sum(axis=1)
        rho = row_spearman(np.where(mask, kld_rows, np.nan), np.where(mask, composite, np.nan))
        rho[n < min_n] = np.nan
        return rho, n

    rho_silent, n_silent = rho_in(inside)
    rho_full, n_full = rho_in(np.ones_like(inside))
    return {"slopes": slopes, "rho_silent": rho_silent, "n_silent": n_silent, "rho_full": rho_full, "n_full": n_full}


def simulation_summary(rho: np.ndarray, n: np.ndarray, observed: float | None, alpha: float) -> dict:
    """Median, 5–95 % of the defined replicates' ρ; the share defined, significant (negative, t
    approximation at each replicate's zone size) and at or below the observed ρ."""
    ok = ~np.isnan(rho)
    if not ok.any():
        return {
            "rho_median": None,
            "rho_p05": None,
            "rho_p95": None,
            "n_median": float(np.median(n)) if len(n) else None,
            "share_defined": 0.0,
            "share_significant": None,
            "share_below_observed": None,
        }
    values = rho[ok]
    p05, p95 = np.quantile(values, SIM_PERCENTILES)
    significant = (values < 0) & (np.abs(values) >= critical_rho(n[ok], alpha))
    return {
        "rho_median": float(np.median(values)),
        "rho_p05": float(p05),
        "rho_p95": float(p95),
        "n_median": float(np.median(n)),
        "share_defined": float(ok.mean()),
        "share_significant": float(significant.mean()),
        "share_below_observed": None if observed is None else float((values <= observed + 1e-12).mean()),
    }


# ---------------------------------------------------------------- the whole analysis


@dataclass
class NoiseCeiling:
    """What reports.noise_ceiling writes: tables, the simulated ρ per replicate, and numbers."""

    reliability: pd.DataFrame
    attenuation: pd.DataFrame
    mdd: pd.DataFrame
    simulation: pd.DataFrame
    replicates: pd.DataFrame
    numbers: dict = field(default_factory=dict)


def observed_rho(cohort: pd.DataFrame, names: list[str], primary: str, min_n: int) -> tuple[float | None, str | None]:
    """Spearman ρ(primary, composite) over `names`, or (None, why)."""
    pair = cohort[cohort[MODEL].isin(names)][[primary, COMPOSITE]].astype(float).dropna()
    why = stats.refusal(pair[primary].to_numpy(), pair[COMPOSITE].to_numpy(), min_n, (primary, COMPOSITE))
    return (None, why) if why else (stats.spearman(pair[primary], pair[COMPOSITE]), None)


def _pick(table: pd.DataFrame, zone_name: str, score: str) -> dict:
    row = table[(table["zone"] == zone_name) & (table["score"] == score)]
    if row.empty:
        return {}
    return {k: (None if pd.isna(v) else v) for k, v in row.iloc[0].to_dict().items()}


def power_verdict(reliability_row: dict, worst: dict | None, verdicts: Verdicts) -> dict:
    """{verdict, powered, reason} of the full cohort on accuracy — the one definition of power
    (reliability_power: the composite's split-half reliability across the quants ≥ min_reliability)
    plus the full-cohort tests' damage rule (the most damaged quant ≥ min_z paired SE below the
    reference); else the first shortfall."""
    power = reliability_power(reliability_row, "accuracy", verdicts.min_reliability)
    if not power["powered"]:
        reason = power["reason"]
    elif worst is None:
        reason = "no quant has a paired standard error"
    elif worst["delta"] >= 0:
        reason = "no quant scores below the reference"
    elif worst["z"] is None:
        reason = f"{worst[MODEL]} differs from the reference on every item in the same direction, so its paired SE is 0"
    elif worst["z"] > -verdicts.min_z:
        reason = (
            f"the most damaged quant, {worst[MODEL]}, sits {abs(worst['z']):.1f} paired SE below the reference, "
            f"fewer than {verdicts.min_z:g}"
        )
    else:
        return {
            "verdict": "powered",
            "powered": True,
            "reason": f"{power['reason']} and the most damaged quant, {worst[MODEL]}, sits {abs(worst['z']):.1f} paired SE "
            f"below the reference (at least {verdicts.min_z:g})",
        }
    return {"verdict": "underpowered", "powered": False, "reason": reason}


def noise_ceiling(
    cohort: pd.DataFrame, items: pd.DataFrame, zone_table: pd.DataFrame, params: Params, opts: NoiseOptions
) -> NoiseCeiling:
    """The whole analysis (module docstring) on one cohort; zone_table is zone.silent_zone's."""
    s, sz = params.stats, params.silent_zone
    primary, min_n, alpha = s.primary_variant, s.min_n, sz.alpha
    _, sim_seed = np.random.SeedSequence(params.seed).spawn(2)
    quants = quant_names(cohort)
    silent = zone.members(zone_table)
    outcomes = Outcomes.of(items, quants)
    members = {"full": quants, "silent": silent}

    # split-half reliability, every task and the composite, over the full cohort and the silent zone
    reliability = reliability_table(outcomes, members, opts.n_splits, s.ci, min_n, params.seed)
    signed_available = "gold_logprob" in items and bool(items["gold_logprob"].notna().any()) and bool(quants)
    if signed_available:  # the signed outcome's reliability beside accuracy's, on the same quants
        signed = reliability_table(
            Outcomes.of(items, quants, column="gold_logprob"), members, opts.n_splits, s.ci, min_n, params.seed, "signed"
        )
        signed = signed[signed["score"] == COMPOSITE].assign(score=SIGNED)
        reliability = pd.concat([reliability, signed], ignore_index=True)

    # attenuation of the observed ρ(primary, composite)
    att_rows = []
    for zone_name, names in members.items():
        rho, why = observed_rho(cohort, names, primary, min_n)
        rel = _pick(reliability, zone_name, COMPOSITE).get("reliability")
        fixed = attenuation_corrected(rho, rel)
        att_rows.append(
            {"zone": zone_name, "n": len(names), "rho": rho, "reliability": rel, **fixed, "refused": why or fixed["refused"]}
        )
    attenuation = pd.DataFrame(att_rows, columns=ATTENUATION_COLUMNS)

    # minimal detectable difference (the run's paired bootstrap gives the half-widths the zone uses)
    if zone_table.attrs.get("criterion") == "paired_bootstrap":
        half = zone_table[[MODEL, "ci_low", "ci_high"]]
    elif quants:
        half = zone.paired_score_deltas(items, s.n_bootstrap, np.random.default_rng(params.seed), 1 - alpha)
    else:
        half = pd.DataFrame(columns=[MODEL, "ci_low", "ci_high"])
    mdd = mdd_table(outcomes, zone_table, half, alpha, opts.power)

    # the perfect-ranking simulation
    have_kld = cohort.set_index(MODEL).loc[quants, primary].astype(float) if quants else pd.Series(dtype=float)
    simulated = [q for q in quants if not math.isnan(have_kld[q])]
    sim_why = None
    if len(simulated) < min_n:
        sim_why = f"fewer than {min_n} quants (n = {len(simulated)})" + (
            "" if len(simulated) == len(quants) else f" with {primary}"
        )
    obs = {z: observed_rho(cohort, names, primary, min_n) for z, names in members.items()}
    replicates = pd.DataFrame(columns=["zone", "replicate", "n", "rho"])
    sim_rows = []
    slopes = {}
    if sim_why is None:
        sub = Outcomes(
            outcomes.tasks,
            simulated,
            {t: b[:, [quants.index(q) for q in simulated]] for t, b in outcomes.blocks.items()},
            outcomes.reference,
        )
        kld = have_kld[simulated].to_numpy()
        fixed = None
        if sz.criterion == "lowest_k":
            chosen = set(zone.lowest_k_members(cohort[cohort[MODEL].isin(simulated)], primary, sz.k))
            fixed = np.array([q in chosen for q in simulated])
        sim = simulate(sub, kld, opts.n_sims, np.random.default_rng(sim_seed), sz.criterion, alpha, sz.margin, fixed, min_n)
        slopes = sim["slopes"]
        parts = []
        for zone_name in ("full", "silent"):
            rho, n = sim[f"rho_{zone_name}"], sim[f"n_{zone_name}"]
            parts.append(pd.DataFrame({"zone": zone_name, "replicate": np.arange(len(rho)), "n": n, "rho": rho}))
            summary = simulation_summary(rho, n, obs[zone_name][0], alpha)
            sim_rows.append(
                {
                    "zone": zone_name,
                    "rho_observed": obs[zone_name][0],
                    "n_observed": len(members[zone_name]),
                    **summary,
                    "refused": None
                    if summary["rho_median"] is not None
                    else f"every replicate's {zone_name} ρ was refused (fewer than {min_n} quants or a constant composite)",
                }
            )
        replicates = pd.concat(parts, ignore_index=True)
    else:
        for zone_name in ("full", "silent"):
            sim_rows.append(
                {
                    "zone": zone_name,
                    "rho_observed": obs[zone_name][0],
                    "n_observed": len(members[zone_name]),
                    "share_defined": 0.0,
                    "refused": sim_why,
                }
            )
    simulation = pd.DataFrame(sim_rows, columns=SIMULATION_COLUMNS)

    # numbers
    comp_full = _pick(reliability, "full", COMPOSITE)
    tasks_full = reliability[
        (reliability["zone"] == "full") & ~reliability["score"].isin([COMPOSITE, SIGNED]) & reliability["reliability"].notna()
    ]
    worst = None
    if len(mdd):
        w = mdd.iloc[0]
        worst = {
            MODEL: w[MODEL],
            **{k: (None if pd.isna(w[k]) else float(w[k])) for k in ("delta", "se", "z", "mdd", "half_width", "primary")},
        }
    verdict = power_verdict(comp_full, worst, params.verdicts)
    za, zp = z_factor(alpha, opts.power)

    def rel_numbers(zone_name, score=COMPOSITE):
        r = _pick(reliability, zone_name, score)
        return {
            k: r.get(k)
            for k in (
                "n_quants",
                "reliability",
                "low",
                "high",
                "split_rho",
                "reliability_pearson",
                "low_pearson",
                "high_pearson",
                "n_degenerate",
            )
        } | {"refused": r.get("refused") or ""}

    def att_numbers(zone_name):
        r = attenuation[attenuation["zone"] == zone_name].iloc[0]
        return {
            "n": int(r["n"]),
            "rho": r["rho"],
            "reliability": r["reliability"],
            "rho_corrected": r["rho_corrected"],
            "capped": bool(r["capped"]),
            "refused": r["refused"] or "",
        }

    def sim_numbers(zone_name):
        r = simulation[simulation["zone"] == zone_name].iloc[0]
        return {k: (None if pd.isna(r[k]) else r[k]) for k in SIMULATION_COLUMNS if k not in ("zone", "refused")} | {
            "refused": r["refused"] or ""
        }

    left_out = [t for t in outcomes.tasks if outcomes.n_items(t) < 2]
    flipped = mdd[mdd["se"] > 0]  # the detectable-difference summaries: quants with at least one flip
    numbers = {
        "n_quants": len(quants),
        "n_silent": len(silent),
        "silent_criterion": zone_table.attrs.get("criterion", sz.criterion),
        "n_splits": opts.n_splits,
        "n_sims": opts.n_sims,
        "sim_percentiles": [round(100 * q) for q in SIM_PERCENTILES],
        "tasks_left_out": left_out,
        "n_tasks_split": len(outcomes.tasks) - len(left_out),
        "reliability": {"full": rel_numbers("full"), "silent": rel_numbers("silent")},
        "reliability_signed": {z: rel_numbers(z, SIGNED) for z in ("full", "silent")} if signed_available else None,
        "reliability_task_min": float(tasks_full["reliability"].min()) if len(tasks_full) else None,
        "reliability_task_max": float(tasks_full["reliability"].max()) if len(tasks_full) else None,
        "kld_reliability": KLD_RELIABILITY,
        "attenuation": {"full": att_numbers("full"), "silent": att_numbers("silent")},
        "simulation": {
            "full": sim_numbers("full"),
            "silent": sim_numbers("silent"),
            "slope_mean": float(np.mean(list(slopes.values()))) if slopes else None,
        },
        "mdd": {
            "z_alpha": za,
            "z_power": zp,
            "factor": za + zp,
            "n_flipped": len(flipped),
            "n_unflipped": len(mdd) - len(flipped),
            "mdd_median": _stat(flipped["mdd"], "median"),
            "mdd_min": _stat(flipped["mdd"], "min"),
            "mdd_max": _stat(flipped["mdd"], "max"),
            "half_width_median": _stat(flipped["half_width"], "median"),
        },
        "most_damaged": worst
        or {MODEL: "", "delta": None, "se": None, "z": None, "mdd": None, "half_width": None, "primary": None},
        "rule": {
            "min_reliability": params.verdicts.min_reliability,
            "min_z": params.verdicts.min_z,
            "power": opts.power,
            "alpha": alpha,
        },
        "power": verdict,
    }
    return NoiseCeiling(reliability, attenuation, mdd, simulation, replicates, _plain(numbers))


def _stat(values: pd.Series, how: str) -> float | None:
    values = values.dropna()
    return None if values.empty else float(getattr(values, how)())


def _plain(x):
    """Numbers as plain Python values (numpy scalars out of table rows become int/float/bool)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x.item() if isinstance(x, np.generic) else x
