"""Spearman ρ with a permutation p-value and a percentile bootstrap CI, Holm's correction, and the
tables of correlations the analyses report (which quants count as near-baseline is silentzone.zone).

Everything is vectorised over resamples: the permutation null and the bootstrap distribution of
10,000 resamples each cost a few matrix operations, never 10,000 scipy calls. Ranks are average
ranks (ties). Doubled average ranks are integers, so the permutation statistic is an exact integer
and ties in the null distribution compare exactly. The random draws follow scipy's own order
(`rng.permuted` for pairings, `rng.integers` for bootstrap indices), so the tests reproduce
scipy.stats.permutation_test / bootstrap bit for bit from the same seed.

A correlation that cannot be computed (fewer than `stats.min_n` quants, a constant column) is a
*refused* record: rho, p and CI are None and `refused` says why — never a silent NaN.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.stats as scipy_stats
from scipy.stats import rankdata

from .errors import SilentzoneError
from .schema import MODEL, quant_names

if TYPE_CHECKING:
    pass

MIN_N = 4
RESULT_KEYS = ("n", "rho", "p_perm", "ci_low", "ci_high", "p_equiv", "n_degenerate", "refused")
TABLE_COLUMNS = [
    "zone",
    "target",
    "variant",
    "n",
    "rho",
    "p_perm",
    "p_holm",
    "ci_low",
    "ci_high",
    "p_equiv",
    "n_degenerate",
    "refused",
]


def test_rng(seed: int, *label) -> np.random.Generator:
    """The generator of one test: seeded from params' seed and what the test is (its columns and its
    quants), so the same test draws the same resamples in every table that prints it, whatever was
    computed before it."""
    digest = hashlib.sha256("\x1f".join(map(str, label)).encode()).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest[:16], dtype=np.uint32).tolist()])


def test_label(x_name: str, y_name: str, quants) -> tuple[str, str, str]:
    """What identifies a correlation test: its two columns and its set of quants (order-free)."""
    return (x_name, y_name, ",".join(sorted(map(str, quants))))


# ---------------------------------------------------------------- Spearman and its resampling


def _doubled_centered_ranks(values: np.ndarray) -> np.ndarray:
    """2·rank − (n + 1): integers (average ranks are multiples of 1/2) that sum to 0."""
    return np.rint(2 * rankdata(values)).astype(np.int64) - (len(values) + 1)


def _check_pair(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise SilentzoneError(f"spearman: x and y must be 1-D of equal length, got {x.shape} and {y.shape}")
    if np.isnan(x).any() or np.isnan(y).any():
        raise SilentzoneError("spearman: missing values (NaN); drop those quants first")
    return x, y


def refusal(x, y, min_n: int = MIN_N, names: tuple[str, str] = ("x", "y")) -> str | None:
    """Why ρ of (x, y) cannot be computed, or None when it can."""
    x, y = _check_pair(x, y)
    if len(x) < min_n:
        return f"fewer than {min_n} quants (n = {len(x)})"
    for name, v in zip(names, (x, y)):
        if np.all(v == v[0]):
            return f"constant {name}: all {len(v)} values equal {v[0]:.6g}"
    return None


def spearman(x, y) -> float:
    """Spearman ρ with average ranks (= scipy.stats.spearmanr's statistic)."""
    x, y = _check_pair(x, y)
    why = refusal(x, y, min_n=2)
    if why:
        raise SilentzoneError(f"spearman: undefined, {why}")
    cx, cy = _doubled_centered_ranks(x), _doubled_centered_ranks(y)
    return float(cx @ cy / math.sqrt(float(cx @ cx) * float(cy @ cy)))


def permutation_pvalue(x, y, n_resamples: int, rng: np.random.Generator) -> float:
    """Two-sided permutation p of Spearman ρ over pairings, scipy's convention:
    p = min(1, 2·min(P(T ≤ t), P(T ≥ t))). When n! ≤ n_resamples every pairing is enumerated
    (exact p, no draws); otherwise n_resamples random pairings with the +1 correction."""
    x, y = _check_pair(x, y)
    cx, cy = _doubled_centered_ranks(x), _doubled_centered_ranks(y)
    n = len(x)
    observed = cx @ cy  # ρ is this integer over a constant, so compare integers
    if math.factorial(n) <= n_resamples:
        perms = np.array(list(itertools.permutations(range(n))), dtype=np.int64)
        adjustment = 0
    else:
        perms = rng.permuted(np.tile(np.arange(n), (n_resamples, 1)), axis=-1)
        adjustment = 1
    null = cx[perms] @ cy
    total = len(perms) + adjustment
    less = (np.count_nonzero(null <= observed) + adjustment) / total
    greater = (np.count_nonzero(null >= observed) + adjustment) / total
    return float(min(1.0, 2 * min(less, greater)))


def _resample_doubled_ranks(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Doubled average rank of each original unit inside each resample, where weights[i, b] is how
    often unit i was drawn in resample b (units × resamples, so gathers copy whole rows). Ranks
    come from tie groups of the sorted values, so no per-resample sort is needed."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    new_group = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group_weight = weights[order]
    if not new_group.all():
        group_weight = np.add.reduceat(group_weight, np.flatnonzero(new_group), axis=0)
    below = np.cumsum(group_weight, axis=0) - group_weight
    doubled = 2 * below + group_weight + 1  # below + (ties + 1)/2, doubled
    out = np.empty_like(weights)
    out[order] = doubled[np.cumsum(new_group) - 1]
    return out


def bootstrap_distribution(x, y, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """ρ of n_bootstrap resamples of quants (pairs kept together); NaN where a resample makes x or
    y constant (ρ undefined there)."""
    x, y = _check_pair(x, y)
    n = len(x)
    idx = rng.integers(0, n, (n_bootstrap, n))
    weights = np.bincount((idx + n * np.arange(n_bootstrap)[:, None]).ravel(), minlength=n_bootstrap * n)
    weights = np.ascontiguousarray(weights.reshape(n_bootstrap, n).T)
    a, b = _resample_doubled_ranks(x, weights), _resample_doubled_ranks(y, weights)
    # Weighted sums of integers: exact in int64 (and in float64 below 2^53) for any real cohort.
    wa, wb = weights * a, weights * b
    sa, sb = wa.sum(0), wb.sum(0)
    sxx = n * (wa * a).sum(0) - sa * sa
    syy = n * (wb * b).sum(0) - sb * sb
    sxy = n * (wa * b).sum(0) - sa * sb
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = sxy / np.sqrt(sxx.astype(float) * syy.astype(float))
    rho[(sxx == 0) | (syy == 0)] = np.nan
    return rho


def bootstrap_ci(x, y, n_bootstrap: int, rng: np.random.Generator, ci: float = 0.95) -> tuple[float, float, int]:
    """Percentile bootstrap CI of ρ over quants: (low, high, resamples dropped as degenerate).
    Degenerate resamples (constant x or y) have no ρ and are left out of the percentiles."""
    return percentile_ci(bootstrap_distribution(x, y, n_bootstrap, rng), ci)


def percentile_ci(dist: np.ndarray, ci: float) -> tuple[float, float, int]:
    """(low, high, NaN resamples left out) of a bootstrap distribution's central `ci` interval."""
    valid = dist[~np.isnan(dist)]
    if len(valid) == 0:
        raise SilentzoneError("bootstrap: every resample was degenerate (constant x or y)")
    alpha = (1 - ci) / 2
    low, high = np.quantile(valid, [alpha, 1 - alpha])
    return float(low), float(high), int(len(dist) - len(valid))


def correlate(
    x,
    y,
    rng: np.random.Generator,
    n_resamples: int,
    n_bootstrap: int,
    ci: float = 0.95,
    min_n: int = MIN_N,
    names: tuple[str, str] = ("x", "y"),
    margin: float | None = None,
) -> dict:
    """ρ, permutation p and bootstrap CI of one pair of columns, or a refused record.
    Returns {n, rho, p_perm, ci_low, ci_high, p_equiv, n_degenerate, refused}; p_equiv (None without a
    margin) is the equivalence p of |ρ| < margin from the same bootstrap resamples (equivalence_pvalue)."""
    x, y = _check_pair(x, y)
    why = refusal(x, y, min_n, names)
    if why:
        return {
            "n": len(x),
            "rho": None,
            "p_perm": None,
            "ci_low": None,
            "ci_high": None,
            "p_equiv": None,
            "n_degenerate": None,
            "refused": why,
        }
    p = permutation_pvalue(x, y, n_resamples, rng)
    dist = bootstrap_distribution(x, y, n_bootstrap, rng)
    low, high, degenerate = percentile_ci(dist, ci)
    return {
        "n": len(x),
        "rho": spearman(x, y),
        "p_perm": p,
        "ci_low": low,
        "ci_high": high,
        "p_equiv": None if margin is None else equivalence_pvalue(dist, margin),
        "n_degenerate": degenerate,
        "refused": None,
    }


def equivalence_pvalue(dist: np.ndarray, margin: float) -> float:
    """p of the two one-sided tests (TOST) that −margin < ρ < margin, by inverting the percentile
    bootstrap: the larger of the shares of resamples at or beyond each bound (+1 correction). p < α
    exactly when the (1 − 2α) percentile interval lies inside (−margin, margin). Degenerate (NaN)
    resamples are left out, as for the interval."""
    valid = dist[~np.isnan(dist)]
    if len(valid) == 0:
        raise SilentzoneError("bootstrap: every resample was degenerate (constant x or y)")
    total = len(valid) + 1
    above = (np.count_nonzero(valid >= margin) + 1) / total
    below = (np.count_nonzero(valid <= -margin) + 1) / total
    return float(min(1.0, max(above, below)))


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values; NaN (refused) entries stay NaN and do not count."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adjusted, 1.0)
    return out


# ---------------------------------------------------------------- tables of correlations


def require_columns(table: pd.DataFrame, columns, what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise SilentzoneError(
            f"{what}: no column {', '.join(map(repr, missing))}; available: {', '.join(map(str, table.columns))}"
        )


def correlation_table(
    table: pd.DataFrame,
    variants: list[str],
    targets: list[str],
    settings: dict,
    zones: dict[str, list[str]] | None = None,
    name_col: str = MODEL,
) -> pd.DataFrame:
    """Spearman of every variant with every target, in every zone; each test draws its resamples from
    its own generator (test_rng: the seed, the pair and the quants), so a test prints the same numbers
    wherever it is computed.

    table: one row per model (name in `name_col`) with the variant and target columns.
    zones: zone name -> model names (default {"full": every non-reference quant}). Quants with a
    missing value in a pair are left out of that pair (n says how many remain).
    Returns one row per (zone, target, variant): n, rho, p_perm, p_holm (Holm across the variants
    of that zone and target), ci_low, ci_high, n_degenerate, refused.
    """
    require_columns(table, [name_col, *variants, *targets], "correlation table")
    if zones is None:
        zones = {"full": quant_names(table) if name_col == MODEL else table[name_col].tolist()}
    rows = []
    for zone, members in zones.items():
        sub = table[table[name_col].isin(members)]
        for target in targets:
            block = []
            for variant in variants:
                pair = sub[[name_col, variant, target]].set_index(name_col).apply(pd.to_numeric, errors="coerce").dropna()
                res = correlate_columns(pair, variant, target, settings)
                block.append({"zone": zone, "target": target, "variant": variant, **res})
            adjusted = holm([np.nan if r["p_perm"] is None else r["p_perm"] for r in block])
            for r, p in zip(block, adjusted):
                r["p_holm"] = None if np.isnan(p) else float(p)
            rows.extend(block)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def correlate_columns(pair: pd.DataFrame, x_name: str, y_name: str, settings: dict) -> dict:
    """`correlate` of two columns of a table indexed by quant name (rows with a missing value already
    dropped), with the test's own generator (test_rng) and the equivalence margin when settings
    carry one: the one way every table computes a correlation, so the same test prints the same p."""
    pair = pair.sort_index()  # the quants in one order, so the draw is the test's whatever the table's order
    rng = test_rng(settings["seed"], *test_label(x_name, y_name, pair.index))
    return correlate(
        pair[x_name].to_numpy(),
        pair[y_name].to_numpy(),
        rng,
        settings["n_resamples"],
        settings["n_bootstrap"],
        settings["ci"],
        settings["min_n"],
        (x_name, y_name),
        settings.get("margin"),
    )


def critical_rho(n: np.ndarray | int, alpha: float) -> np.ndarray | float:
    """Smallest |ρ| that reaches two-sided significance at n quants (t approximation), elementwise;
    1 where n < 4, too few for any ρ to reach it. The one definition: the noise ceiling's detectability
    check and the decision rules' power checks both use it."""
    n = np.asarray(n, dtype=float)
    df = np.maximum(n - 2, 1)
    t = scipy_stats.t.ppf(1 - alpha / 2, df)
    crit = np.where(n < 4, 1.0, t / np.sqrt(df + t * t))
    return float(crit) if crit.ndim == 0 else crit


RESAMPLE_CHUNK = 1 << 22  # draws per chunk of resamples: bounds memory (16 MB of indices) at any item count


def resample_means(values: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The means of `n_resamples` resamples of `values` with replacement: bit for bit
    values[rng.integers(0, n, (n_resamples, n))].mean(axis=1), the same draws from `rng`, drawn in
    chunks of rows (numpy's stream does not depend on how the draws are split) as int32 indices,
    so that memory stays ~16 MB instead of 16·n_resamples·n bytes (3.2 GB at 20,000 items). Small
    integers (the paired 0/±1 outcome differences) are summed exactly as integers and divided once,
    which is what the float64 mean of them computes."""
    values = np.asarray(values)
    n = len(values)
    exact = values.dtype.kind in "iub" and n < 1 << 31 and (values.size == 0 or np.abs(values).max() < 127)
    source = values.astype(np.int8) if exact else values
    out = np.empty(n_resamples)
    rows = max(1, RESAMPLE_CHUNK // max(n, 1))
    for start in range(0, n_resamples, rows):
        stop = min(n_resamples, start + rows)
        drawn = np.take(source, rng.integers(0, n, (stop - start, n), dtype=np.int32))
        out[start:stop] = drawn.sum(axis=1, dtype=np.int64) / n if exact else drawn.mean(axis=1)
    return out
