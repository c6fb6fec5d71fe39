"""silentzone.stats and silentzone.zone against independent implementations: scipy.stats.spearmanr /
permutation_test / bootstrap, pingouin.corr / multicomp, exact enumeration of all n! pairings,
hand-worked cases."""

from __future__ import annotations

import itertools
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pingouin
import pytest
import scipy.stats as ss

from silentzone import config, schema, stats, zone
from silentzone.errors import SilentzoneError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def params():
    """The tiny profile as typed params."""
    return config.validate(config.build_profile("tiny", REPO / "profiles"), "params.yaml")


def _with(params, section: str, **changes):
    """params with some keys of one section changed (Params are frozen)."""
    return params.model_copy(update={section: getattr(params, section).model_copy(update=changes)})


def _pairs():
    """Random and adversarial (x, y): continuous, heavy ties, n = 4..30, anti-correlated."""
    rng = np.random.default_rng(0)
    out = []
    for n in (4, 5, 6, 7, 9, 13, 30):
        x = rng.normal(size=n)
        out.append((x, x + rng.normal(size=n)))
        out.append((np.round(rng.normal(size=n)), np.round(-x + rng.normal(size=n), 0)))  # ties in both
    out.append((np.array([1.0, 1.0, 2.0, 2.0]), np.array([3.0, 1.0, 3.0, 1.0])))  # ρ = 0 exactly, n = 4
    out.append((np.array([82.5, 83.0, 83.0, 82.25, 82.5, 83.5]), np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])))
    return out


def _spearman_rows(a, b, axis=-1):
    """Row-wise Spearman (scipy rankdata + pearsonr) for scipy's vectorised resampling calls; NaN
    for a constant row."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a, b = np.broadcast_arrays(np.atleast_2d(a), np.atleast_2d(b))
        return ss.pearsonr(ss.rankdata(a, axis=-1), ss.rankdata(b, axis=-1), axis=-1).statistic


@pytest.mark.parametrize("x,y", _pairs())
def test_spearman_matches_scipy_and_pingouin(x, y):
    rho = stats.spearman(x, y)
    assert rho == pytest.approx(ss.spearmanr(x, y).statistic, abs=1e-12)
    assert rho == pytest.approx(pingouin.corr(x, y, method="spearman")["r"].iloc[0], abs=1e-12)


def _exact_p(x, y):
    """Independent golden value: spearmanr over all n! pairings, two-sided = 2·min(one-sided)."""
    observed = ss.spearmanr(x, y).statistic
    pairings = np.asarray(x)[np.array(list(itertools.permutations(range(len(x)))))]
    null = _spearman_rows(pairings, y)
    tol = 1e-12
    less, greater = np.mean(null <= observed + tol), np.mean(null >= observed - tol)
    return min(1.0, 2 * min(less, greater))


@pytest.mark.parametrize("x,y", [p for p in _pairs() if len(p[0]) <= 6])
def test_permutation_p_exact_for_small_n(x, y):
    # n! <= n_resamples: every pairing enumerated, so the p-value is exact and draws nothing
    rng = np.random.default_rng(1)
    state = rng.bit_generator.state
    assert stats.permutation_pvalue(x, y, 10_000, rng) == pytest.approx(_exact_p(x, y), abs=1e-12)
    assert rng.bit_generator.state == state


def test_permutation_p_hand_worked():
    # perfect order, n = 4: only the identity pairing reaches ρ = 1 (and only its reverse ρ = -1)
    assert stats.permutation_pvalue([1, 2, 3, 4], [10, 20, 30, 40], 10_000, np.random.default_rng(0)) == pytest.approx(2 / 24)
    # n = 5, ρ = 1: 2/120
    assert stats.permutation_pvalue([5, 1, 3, 2, 4], [50, 10, 30, 20, 40], 10_000, np.random.default_rng(0)) == pytest.approx(
        2 / 120
    )


@pytest.mark.parametrize("x,y", [p for p in _pairs() if len(p[0]) >= 7])
def test_permutation_p_matches_scipy_permutation_test(x, y):
    # same seed, same draws (rng.permuted over pairings): scipy's p exactly, exact enumeration for n = 7
    res = ss.permutation_test(
        (x,),
        lambda a, axis=-1: _spearman_rows(a, y) if np.ndim(a) > 1 else _spearman_rows(a, y)[0],
        permutation_type="pairings",
        n_resamples=1000,
        vectorized=True,
        rng=np.random.default_rng(11),
    )
    assert stats.permutation_pvalue(x, y, 1000, np.random.default_rng(11)) == pytest.approx(res.pvalue, abs=1e-12)


@pytest.mark.parametrize("x,y", _pairs())
def test_bootstrap_matches_scipy_bootstrap(x, y):
    res = ss.bootstrap(
        (x, y), _spearman_rows, paired=True, vectorized=True, n_resamples=400, method="percentile", rng=np.random.default_rng(5)
    )
    ref = res.bootstrap_distribution
    mine = stats.bootstrap_distribution(x, y, 400, np.random.default_rng(5))
    np.testing.assert_array_equal(np.isnan(mine), np.isnan(ref))  # degenerate resamples: constant x or y
    np.testing.assert_allclose(mine[~np.isnan(mine)], ref[~np.isnan(ref)], atol=1e-12)
    low, high, degenerate = stats.bootstrap_ci(x, y, 400, np.random.default_rng(5), 0.95)
    assert degenerate == int(np.isnan(ref).sum())
    expected = np.quantile(ref[~np.isnan(ref)], [0.025, 0.975])
    assert (low, high) == pytest.approx(tuple(expected), abs=1e-12)
    if degenerate == 0:
        assert (low, high) == pytest.approx((res.confidence_interval.low, res.confidence_interval.high), abs=1e-12)


def test_correlate_refuses_small_and_constant():
    rng = np.random.default_rng(0)
    small = stats.correlate([1, 2, 3], [3, 2, 1], rng, 100, 100)
    assert small["rho"] is None and small["p_perm"] is None and "fewer than 4" in small["refused"]
    flat = stats.correlate([1, 2, 3, 4], [82.5] * 4, rng, 100, 100, names=("kld_mean", "composite"))
    assert flat["rho"] is None and "constant composite" in flat["refused"] and "82.5" in flat["refused"]
    ok = stats.correlate([1, 2, 3, 4, 5], [2, 1, 4, 3, 5], rng, 100, 100)
    assert ok["refused"] is None and ok["rho"] == pytest.approx(0.8) and ok["ci_low"] <= ok["rho"] <= ok["ci_high"]
    with pytest.raises(SilentzoneError, match="constant"):
        stats.spearman([1, 2, 3], [1, 1, 1])
    with pytest.raises(SilentzoneError, match="NaN"):
        stats.spearman([1, 2, np.nan, 4], [1, 2, 3, 4])


def test_holm_matches_pingouin():
    rng = np.random.default_rng(3)
    for m in (1, 2, 5, 14):
        p = rng.uniform(0, 0.2, m)
        p[rng.integers(0, m)] = p[0]  # a tie
        assert np.allclose(stats.holm(p), pingouin.multicomp(p, method="holm")[1])
    p = np.array([0.01, np.nan, 0.04, 0.03])  # refused entries neither count nor get a value
    out = stats.holm(p)
    assert np.isnan(out[1]) and np.allclose(out[[0, 2, 3]], pingouin.multicomp(p[[0, 2, 3]], method="holm")[1])
    assert np.allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])  # hand-worked


def _cohort(n=10, seed=0):
    rng = np.random.default_rng(seed)
    kld = np.sort(rng.uniform(0.001, 0.2, n))
    rows = {
        "model": ["reference"] + [f"q{i:02d}" for i in range(n)],
        "is_reference": [True] + [False] * n,
        "kld_mean": [0.0, *kld],
        "top1_disagree": [0.0, *(kld * 0.3 + rng.uniform(0, 0.01, n))],
        "score_a": [0.6, *(0.6 - kld + rng.normal(0, 0.01, n))],
        "score_b": [0.5, *(0.5 - 0.5 * kld + rng.normal(0, 0.02, n))],
    }
    cohort = pd.DataFrame(rows)
    cohort["composite"] = cohort[["score_a", "score_b"]].mean(axis=1)
    return cohort


def test_correlation_table(params):
    cohort = _cohort()
    s = params.stats_settings()
    zones = {"full": schema.quant_names(cohort), "silent": ["q00", "q01", "q02"]}
    table = stats.correlation_table(cohort, ["kld_mean", "top1_disagree"], schema.score_columns(cohort), s, zones)
    assert len(table) == 2 * 3 * 2 and list(table["target"].unique()) == ["score_a", "score_b", "composite"]
    full = table[table["zone"] == "full"]
    quants = cohort[~cohort["is_reference"]]
    for _, r in full.iterrows():
        assert r["n"] == 10 and r["rho"] == pytest.approx(ss.spearmanr(quants[r["variant"]], quants[r["target"]]).statistic)
    block = full[full["target"] == "composite"]
    assert np.allclose(block["p_holm"], stats.holm(block["p_perm"]))
    silent = table[table["zone"] == "silent"]
    assert silent["rho"].isna().all() and silent["refused"].str.contains("fewer than 4").all()
    again = stats.correlation_table(cohort, ["kld_mean", "top1_disagree"], schema.score_columns(cohort), s, zones)
    pd.testing.assert_frame_equal(table, again)  # one seeded generator: same inputs, same numbers
    with pytest.raises(SilentzoneError, match="no column 'kld_p99'"):
        stats.correlation_table(cohort, ["kld_p99"], ["composite"], s)


def test_silent_zone_margin_and_lowest_k(params):
    cohort = _cohort()
    delta = cohort["composite"].iloc[1:] - cohort["composite"].iloc[0]
    by_margin = zone.silent_zone(cohort, params, criterion="margin", margin=0.02)
    assert zone.members(by_margin) == cohort["model"].iloc[1:][delta.abs() <= 0.02].tolist()
    exact = zone.silent_zone(cohort, params, criterion="margin", margin=abs(delta.iloc[3]))  # boundary is inside
    assert "q03" in zone.members(exact)
    by_k = zone.silent_zone(cohort, params, criterion="lowest_k", k=4)
    assert zone.members(by_k) == ["q00", "q01", "q02", "q03"]  # kld_mean sorted ascending by construction
    assert zone.members(zone.silent_zone(cohort, _with(params, "silent_zone", criterion="lowest_k", k=2))) == ["q00", "q01"]
    with pytest.raises(SilentzoneError, match="needs the item table"):
        zone.silent_zone(cohort, params, criterion="paired_bootstrap")
    with pytest.raises(SilentzoneError, match="must be paired_bootstrap, margin or lowest_k"):
        zone.silent_zone(cohort, params, criterion="nearest")


def test_zone_rules_on_a_table_of_quants():
    quants = pd.DataFrame(
        {"model": ["c", "a", "b", "d", "e"], "fid": [0.2, 0.1, 0.1, np.nan, 0.05], "composite": [65.5, 64.5, 65.25, 66.0, 65.0]}
    )
    # rank order, ties by name; a quant without the fidelity value is never in the zone
    assert zone.lowest_k_members(quants, "fid", 3) == ["e", "a", "b"]
    assert zone.lowest_k_members(quants, "fid", 10) == ["e", "a", "b", "c"]
    # 0.5-point steps: |65.5 - 65| = 0.5 exactly is inside; table order
    assert zone.margin_members(quants, 65.0, 0.5) == ["c", "a", "b", "e"]
    with pytest.raises(SilentzoneError, match="k must be at least 1"):
        zone.lowest_k_members(quants, "fid", 0)


def _items(seed=0, models=("reference", "qa", "qb"), tasks={"arc": 40, "mmlu": 25}):
    rng = np.random.default_rng(seed)
    rows = []
    for task, n in tasks.items():
        base = rng.random(n) < 0.6
        for m in models:
            flip = rng.random(n) < (0 if m == "reference" else 0.2)
            rows += [{"model": m, "task": task, "item_id": f"{task}-{i}", "correct": bool(c)} for i, c in enumerate(base ^ flip)]
    return pd.DataFrame(rows)


def test_paired_bootstrap_matches_scipy():
    items = _items(models=("reference", "qa"))
    deltas = []
    for task in ("arc", "mmlu"):  # sorted task order, as the library resamples them
        t = items[items["task"] == task].pivot(index="item_id", columns="model", values="correct").astype(int)
        deltas.append((t["qa"] - t["reference"]).to_numpy())
    res = ss.bootstrap(
        tuple(deltas),
        lambda *d, axis=-1: np.mean([di.mean(axis=axis) for di in d], axis=0),
        paired=False,
        vectorized=True,
        n_resamples=1000,
        method="percentile",
        rng=np.random.default_rng(2),
    )
    out = zone.paired_score_deltas(items, 1000, np.random.default_rng(2), 0.95)
    row = out.iloc[0]
    assert row["model"] == "qa" and row["delta"] == pytest.approx(np.mean([d.mean() for d in deltas]))
    assert (row["ci_low"], row["ci_high"]) == pytest.approx(
        (res.confidence_interval.low, res.confidence_interval.high), abs=1e-12
    )


def test_silent_zone_paired_bootstrap(params):
    items = _items()
    scores = items.groupby(["model", "task"])["correct"].mean().unstack()
    cohort = pd.DataFrame(
        {
            "model": scores.index,
            "is_reference": scores.index == "reference",
            "kld_mean": [0.1, 0.2, 0.0],
            "composite": scores.mean(axis=1).to_numpy(),
        }
    )
    by_items = zone.silent_zone(cohort, params, items=items, criterion="paired_bootstrap")
    assert by_items["delta"].to_numpy() == pytest.approx(cohort["composite"].iloc[:2].to_numpy() - cohort["composite"].iloc[2])
    assert (by_items["in_zone"] == ((by_items["ci_low"] <= 0) & (by_items["ci_high"] >= 0))).all()
    assert zone.silent_zone(cohort, params, items=items).attrs["criterion"] == "paired_bootstrap"  # the profile's default
    with pytest.raises(SilentzoneError, match="duplicate row for qa"):
        zone.paired_score_deltas(pd.concat([items, items[items["model"] == "qa"].iloc[[0]]]), 10, np.random.default_rng(0))
    broken = items.drop(index=items[(items["model"] == "qb")].index[:1])
    with pytest.raises(SilentzoneError, match="model 'qb' has no `correct` for"):
        zone.silent_zone(cohort, params, items=broken, criterion="paired_bootstrap")


def test_zone_sweep(params):
    cohort = _cohort(n=8)
    sweep = zone.zone_sweep(cohort, params, margins=[0.0, 1.0], ks=[3, 8])
    assert list(sweep["criterion"]) == ["margin", "margin", "lowest_k", "lowest_k"]
    assert sweep["refused"].iloc[0] is not None and sweep["refused"].iloc[2] is not None  # empty zone, k = 3
    quants = cohort[~cohort["is_reference"]]
    everyone = ss.spearmanr(quants["kld_mean"], quants["composite"]).statistic
    assert sweep["rho"].iloc[1] == pytest.approx(everyone) and sweep["rho"].iloc[3] == pytest.approx(everyone)
    assert sweep["members"].iloc[3] == ",".join(quants["model"])


def test_zone_sweep_defaults_come_from_params(params):
    cohort = _cohort(n=8)
    sweep = zone.zone_sweep(cohort, params)
    margins = sweep.loc[sweep["criterion"] == "margin", "threshold"].tolist()
    assert margins == params.silent_zone.sweep_margins == [0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1]
    # sweep_ks [6, 8, 10, ...]: only the ks that fit 8 quants
    assert sweep.loc[sweep["criterion"] == "lowest_k", "threshold"].tolist() == [6, 8]
    assert zone.sweep_ks(params, 6) == [6] and zone.sweep_ks(params, 3) == []
    assert zone.sweep_ks(params, 5) == [4, 5]  # none fits: every k from min_n


def test_statistics_modules_do_not_import_torch():
    code = (
        "import sys, silentzone.stats, silentzone.zone, silentzone.analyses, silentzone.published, silentzone.reports, "
        "silentzone.cli; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_variant_correlations(params):
    cohort = _cohort(n=8)
    table, silent_zone = zone.variant_correlations(cohort, _with(params, "silent_zone", criterion="lowest_k", k=5))
    assert set(table["variant"]) == {"kld_mean", "top1_disagree"}  # the registry's variants present in the cohort
    assert list(table["target"].unique()) == ["composite"]  # the main table: variants against the composite
    assert zone.members(silent_zone) == ["q00", "q01", "q02", "q03", "q04"]
    silent = table[(table["zone"] == "silent") & (table["variant"] == "kld_mean") & (table["target"] == "composite")].iloc[0]
    inside = cohort[cohort["model"].isin(zone.members(silent_zone))]
    assert silent["n"] == 5 and silent["rho"] == pytest.approx(ss.spearmanr(inside["kld_mean"], inside["composite"]).statistic)


@pytest.mark.parametrize("n, b", [(7, 101), (13, 1000), (1251, 37), (1, 5)])
@pytest.mark.parametrize("kind", ["paired", "bool", "float"])
def test_resample_means_is_the_one_big_draw_bit_for_bit(n, b, kind, monkeypatch):
    # the bootstraps of the silent zone and of failure prediction were values[rng.integers(0, n, (B, n))].mean(axis=1):
    # drawn in chunks, as int32, summed as integers, the numbers must not move by one bit
    rng = np.random.default_rng(n * b)
    values = {
        "paired": rng.integers(-1, 2, n),
        "bool": rng.random(n) < 0.4,
        "float": np.log(rng.lognormal(-3, 1, n)),
    }[kind]
    monkeypatch.setattr(stats, "RESAMPLE_CHUNK", 3 * n + 1)  # odd chunks of rows: 3 rows per draw
    want = values[np.random.default_rng(5).integers(0, n, (b, n))].mean(axis=1)
    got = stats.resample_means(values, b, np.random.default_rng(5))
    assert got.dtype == np.float64 and np.array_equal(got, want)
    after = np.random.default_rng(5)
    after.integers(0, n, (b, n))
    gen = np.random.default_rng(5)
    stats.resample_means(values, b, gen)
    assert gen.random() == after.random()  # the generator is left where the big draw leaves it


# ---------------------------------------------------------------- one draw per test, equivalence


def test_a_test_draws_the_same_resamples_wherever_it_is_computed():
    x, y = np.arange(12.0), np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8.0])
    pair = pd.DataFrame({"a": x, "b": y}, index=[f"q{i}" for i in range(12)])
    settings = {"seed": 7, "n_resamples": 500, "n_bootstrap": 500, "ci": 0.95, "min_n": 4, "margin": 0.5}
    first = stats.correlate_columns(pair, "a", "b", settings)
    # another table computed other tests first, and holds the quants in another order: the same numbers
    stats.correlate_columns(pair.iloc[:6], "a", "b", settings)
    assert stats.correlate_columns(pair.iloc[::-1], "a", "b", settings) == first
    other = stats.correlate_columns(pair.iloc[1:], "a", "b", settings)  # another set of quants: another draw
    assert other["ci_low"] != first["ci_low"] or other["p_perm"] != first["p_perm"]


def test_equivalence_p_inverts_the_percentile_interval():
    dist = np.linspace(-0.3, 0.3, 999)  # a bootstrap distribution inside ±0.31
    assert stats.equivalence_pvalue(dist, 0.5) == pytest.approx(1 / 1000)  # nothing beyond either bound
    # half a margin: (#{ρ* ≥ 0.15} + 1) / 1000 = 250 / 1000 on this grid, and symmetric below
    assert stats.equivalence_pvalue(dist, 0.15) == pytest.approx((np.count_nonzero(dist >= 0.15) + 1) / 1000)
    shifted = dist + 0.4  # centred on 0.4: most resamples beyond +0.5? no; beyond 0.3, so p is large at 0.3
    assert stats.equivalence_pvalue(shifted, 0.3) > 0.5
    with_nan = np.r_[dist, [np.nan] * 10]  # degenerate resamples are left out, as for the interval
    assert stats.equivalence_pvalue(with_nan, 0.5) == stats.equivalence_pvalue(dist, 0.5)
    # p < alpha exactly when the (1 - 2 alpha) percentile interval lies inside the margin
    rng = np.random.default_rng(1)
    for _ in range(20):
        d = rng.normal(rng.uniform(-0.3, 0.3), 0.15, 2000)
        low, high = np.quantile(d, [0.05, 0.95])
        inside = -0.4 < low and high < 0.4
        assert (stats.equivalence_pvalue(d, 0.4) < 0.05) == inside or abs(max(abs(low), abs(high)) - 0.4) < 0.01
