"""silentzone.noise (notebook 07, the noise ceiling): values on hand-worked and constructed cohorts,
seeded determinism, and refusals for cohorts of 0 to 3 quants. Fast: small cohorts, few splits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from silentzone import config, noise, reports, zone
from silentzone.schema import COMPOSITE, MODEL, REFERENCE, scores

REPO = Path(__file__).resolve().parents[1]
OPTIONS = {"n_splits": 200, "n_sims": 200, "power": 0.8}


@pytest.fixture(scope="module")
def params():
    return config.validate(config.build_profile("tiny", REPO / "profiles"), "params.yaml")


def make_cohort(true_scores, n_items=(200, 200), reference=0.8, seed=0, kld=None):
    """Items and cohort tables of quants whose item outcomes are independent draws at `true_scores`
    (one per quant; the reference at `reference`), tasks t0, t1, ... of n_items each; the primary
    variant kld_mean is `kld` (default: rising with the quant's index) and every other variant 0."""
    rng = np.random.default_rng(seed)
    models = [REFERENCE, *[f"q{i}" for i in range(len(true_scores))]]
    rows = []
    for model, p in zip(models, [reference, *true_scores]):
        for t, n in enumerate(n_items):
            outcomes = rng.random(n) < p
            rows += [{MODEL: model, "task": f"t{t}", "item_id": f"t{t}/{j}", "correct": bool(c)} for j, c in enumerate(outcomes)]
    items = pd.DataFrame(rows)
    kld = np.arange(1, len(true_scores) + 1) * 0.01 if kld is None else np.asarray(kld, float)
    cohort = pd.DataFrame({MODEL: models, "is_reference": [m == REFERENCE for m in models], "bpw": 8.0, "kld_mean": [0.0, *kld]})
    return cohort.merge(scores(items), on=MODEL), items


def opts(**changes):
    return config.NoiseOptions.model_validate({**OPTIONS, **changes})


def run(cohort, items, params, **changes):
    zone_table = zone.silent_zone(cohort, params, items=items)
    return noise.noise_ceiling(cohort, items, zone_table, params, opts(**changes))


# ---------------------------------------------------------------- the formulas


def test_spearman_brown_by_hand():
    # a half-length correlation of 0.6 is a full-length reliability of 2·0.6/1.6 = 0.75
    assert noise.spearman_brown(0.6) == pytest.approx(0.75)
    assert noise.spearman_brown([0.0, 0.5, 1.0]) == pytest.approx([0.0, 2 / 3, 1.0])
    assert noise.spearman_brown(-1 / 3) == pytest.approx(-1.0)
    # over splits: SB of the mean split correlation, the interval SB of its percentiles; below −1/3 prints as −1
    summary = noise.summarize_splits(np.array([0.5, 0.7, np.nan]), level=0.5)
    assert summary["split_rho"] == pytest.approx(0.6) and summary["reliability"] == pytest.approx(0.75)
    assert summary["low"] == pytest.approx(noise.spearman_brown(0.55)) and summary["high"] == pytest.approx(
        noise.spearman_brown(0.65)
    )
    assert summary["n_degenerate"] == 1
    assert noise.summarize_splits(np.array([-0.9, -0.8]), 0.95)["reliability"] == -1.0
    assert noise.summarize_splits(np.array([np.nan, np.nan]), 0.95)["reliability"] is None


def test_row_correlations_match_scipy_and_refuse_constant_rows():
    from scipy.stats import pearsonr, spearmanr

    rng = np.random.default_rng(3)
    a, b = rng.random((5, 7)), rng.random((5, 7))
    a[1, 2] = a[1, 3]  # a tie
    assert noise.row_pearson(a, b) == pytest.approx([pearsonr(x, y)[0] for x, y in zip(a, b)])
    assert noise.row_spearman(a, b) == pytest.approx([spearmanr(x, y)[0] for x, y in zip(a, b)])
    a[0] = 0.25
    assert np.isnan(noise.row_spearman(a, b)[0])
    masked = np.where(np.arange(7) < 4, b, np.nan)  # NaN cells are left out pairwise
    assert noise.row_spearman(a[2:3], masked[2:3])[0] == pytest.approx(spearmanr(a[2, :4], b[2, :4])[0])


def test_attenuation_identity_cap_and_refusal():
    out = noise.attenuation_corrected(-0.45, 0.81)
    assert out["rho_corrected"] == pytest.approx(-0.5) and not out["capped"]
    assert out["rho_corrected"] * math.sqrt(0.81 * noise.KLD_RELIABILITY) == pytest.approx(-0.45)  # ρ_c·sqrt(rel) = ρ
    capped = noise.attenuation_corrected(0.8, 0.49)  # 0.8/0.7 > 1
    assert capped["rho_corrected"] == 1.0 and capped["capped"]
    assert noise.attenuation_corrected(-0.3, 0.0)["refused"].startswith("the composite has no reliable variance")
    assert noise.attenuation_corrected(None, 0.9)["refused"] == "the observed ρ is undefined"


def test_paired_se_and_mdd_by_hand(params):
    # task a: reference 1 1 0 0, quant 0 1 0 0 -> d = −1 0 0 0: mean −1/4, variance 1/4 − 1/16 = 3/16
    # task b: reference 1 0, quant 0 1 -> d = −1 +1: mean 0, variance 1
    # composite Δ = (−1/4 + 0)/2; SE² = (3/16/4 + 1/2)/2² = 0.13671875
    ref = {"a": [1, 1, 0, 0], "b": [1, 0]}
    quant = {"a": [0, 1, 0, 0], "b": [0, 1]}
    rows = [
        {MODEL: m, "task": t, "item_id": f"{t}{j}", "correct": bool(c)}
        for m, table in ((REFERENCE, ref), ("q", quant), ("same", ref))
        for t, v in table.items()
        for j, c in enumerate(v)
    ]
    outcomes = noise.Outcomes.of(pd.DataFrame(rows), ["q", "same"])
    delta, se = noise.paired_se(outcomes)
    assert delta[0] == pytest.approx(-0.125) and se[0] == pytest.approx(math.sqrt(0.13671875))
    assert delta[1] == 0 and se[1] == 0  # no flip, no standard error
    za, zp = noise.z_factor(0.05, 0.8)
    assert (za, zp) == pytest.approx((1.959964, 0.841621), abs=1e-6) and za + zp == pytest.approx(2.8016, abs=1e-4)
    zone_table = pd.DataFrame({MODEL: ["q", "same"], "primary": [0.1, 0.0], "in_zone": [True, True]})
    half = pd.DataFrame({MODEL: ["q", "same"], "ci_low": [-0.8, 0.0], "ci_high": [0.5, 0.0]})
    table = noise.mdd_table(outcomes, zone_table, half, 0.05, 0.8)
    assert table[MODEL].tolist() == ["q", "same"]  # most damaged first
    assert np.isnan(table["z"].iloc[1]) and np.isnan(table["mdd"].iloc[1]) and table["half_width"].iloc[1] == 0
    row = table.iloc[0]
    assert row["mdd"] == pytest.approx(2.8016 * math.sqrt(0.13671875), abs=1e-4)
    assert row["z"] == pytest.approx(-0.125 / math.sqrt(0.13671875)) and row["half_width"] == pytest.approx(0.65)


def test_paired_se_is_what_the_paired_bootstrap_measures():
    """The run's bootstrap half-width is z_{1−α/2}·SE up to resampling error (it is how the simulation draws the zone)."""
    cohort, items = make_cohort([0.75, 0.7, 0.6], n_items=(300, 100))
    delta, se = noise.paired_se(noise.Outcomes.of(items, ["q0", "q1", "q2"]))
    boot = zone.paired_score_deltas(items, 4000, np.random.default_rng(1), 0.95)
    assert boot["delta"].to_numpy() == pytest.approx(delta)
    assert ((boot["ci_high"] - boot["ci_low"]) / 2).to_numpy() == pytest.approx(1.959964 * se, rel=0.06)


# ---------------------------------------------------------------- reliability on constructed cohorts


def test_reliability_is_one_when_quants_differ_far_beyond_item_noise(params):
    cohort, items = make_cohort(np.linspace(0.9, 0.1, 8))
    out = run(cohort, items, params)
    full = out.numbers["reliability"]["full"]
    assert full["reliability"] > 0.97 and full["reliability_pearson"] > 0.97 and full["low"] > 0.9
    tasks = out.reliability[(out.reliability["zone"] == "full") & (out.reliability["score"] != COMPOSITE)]
    assert list(tasks["score"]) == ["score_t0", "score_t1"] and (tasks["reliability"] > 0.95).all()
    att = out.numbers["attenuation"]["full"]  # KLD ranks these quants exactly: −1, and the correction leaves it there
    assert att["rho"] == -1.0 and att["rho_corrected"] == -1.0 and att["capped"]


def test_reliability_is_near_zero_when_every_quant_has_the_same_true_score(params):
    # 200 quants: the realised spread of their true-score-free composites is itself a sample, so few quants scatter more
    cohort, items = make_cohort([0.6] * 200, n_items=(100, 100), reference=0.6, seed=0)
    out = run(cohort, items, params, n_sims=20)
    full = out.numbers["reliability"]["full"]
    assert abs(full["reliability"]) < 0.2 and abs(full["split_rho"]) < 0.1 and abs(full["reliability_pearson"]) < 0.2
    assert full["low"] < 0 < full["high"]  # the splits straddle zero
    assert out.numbers["power"]["verdict"] == "underpowered"
    assert out.numbers["power"]["reason"].startswith(
        "accuracy has split-half reliability " + f"{full['reliability']:.2f}".replace("-", "\u2212") + " across these"
    )


def test_a_task_too_small_to_split_is_left_out(params):
    cohort, items = make_cohort(np.linspace(0.2, 0.8, 5), n_items=(60, 1))
    out = run(cohort, items, params)
    assert out.numbers["tasks_left_out"] == ["t1"] and out.numbers["n_tasks_split"] == 1
    assert list(out.reliability.loc[out.reliability["zone"] == "full", "score"]) == ["score_t0", COMPOSITE]


# ---------------------------------------------------------------- the perfect-ranking simulation


def test_flip_probabilities_give_the_fitted_drop_exactly():
    cohort, items = make_cohort([0.78, 0.7, 0.5, 0.2], n_items=(100, 50), kld=[0.01, 0.05, 0.2, 0.6])
    outcomes = noise.Outcomes.of(items, ["q0", "q1", "q2", "q3"])
    kld = np.array([0.01, 0.05, 0.2, 0.6])
    slopes = noise.fitted_drop_slopes(outcomes, kld)
    assert all(b > 0 for b in slopes.values())
    for t, (d, l) in noise.flip_probabilities(outcomes, kld, slopes).items():
        s_ref = outcomes.reference[t].mean()
        expected_drop = np.minimum(slopes[t] * kld, s_ref)
        assert s_ref * d - (1 - s_ref) * l == pytest.approx(expected_drop)  # D − L = δ
        assert ((0 <= d) & (d <= 1) & (0 <= l) & (l <= 1)).all()


def test_simulation_is_seeded_and_sees_a_strong_ranking(params):
    cohort, items = make_cohort([0.78, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1], n_items=(150, 150))
    outcomes = noise.Outcomes.of(items, [f"q{i}" for i in range(8)])
    kld = cohort["kld_mean"].to_numpy()[1:]
    args = (outcomes, kld, 100)
    rest = ("paired_bootstrap", 0.05, 0.01, None, 4)
    first = noise.simulate(*args, np.random.default_rng(11), *rest)
    again = noise.simulate(*args, np.random.default_rng(11), *rest)
    other = noise.simulate(*args, np.random.default_rng(12), *rest)
    for key in ("rho_full", "rho_silent", "n_silent"):
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["rho_full"], other["rho_full"], equal_nan=True)
    # a perfect ranking over a wide spread shows through the full cohort; the silent zone is small
    assert np.nanmedian(first["rho_full"]) < -0.95 and np.median(first["n_silent"]) <= 2
    # the whole report: byte-identical numbers from the same params
    a = run(cohort, items, params)
    b = run(cohort, items, params)
    assert json.dumps(a.numbers, sort_keys=True) == json.dumps(b.numbers, sort_keys=True)
    assert a.replicates.equals(b.replicates) and len(a.replicates) == 2 * OPTIONS["n_sims"]
    assert a.numbers["simulation"]["full"]["rho_median"] < -0.95 and a.numbers["simulation"]["full"]["share_significant"] > 0.9


def test_simulation_zone_rules():
    delta = np.array([[0.0, -0.05, -0.2]])
    se = np.array([[0.01, 0.03, 0.05]])
    assert noise.zone_masks(delta, se, "paired_bootstrap", 0.05, 0.0, None).tolist() == [[True, True, False]]
    assert noise.zone_masks(delta, se, "margin", 0.05, 0.05, None).tolist() == [[True, True, False]]
    fixed = np.array([False, True, True])
    assert noise.zone_masks(np.zeros((2, 3)), se, "lowest_k", 0.05, 0.0, fixed).tolist() == [[False, True, True]] * 2


# ---------------------------------------------------------------- the power verdict and small cohorts


def test_power_verdict_needs_both_targets(params):
    v = params.verdicts  # min_reliability 0.8, min_z 6: the one definition every verdict uses

    def rel(r, n=30, refused=None):
        return {"reliability": r, "n_quants": n, "n_items": 900, "low": None, "high": None, "refused": refused}

    worst = {MODEL: "q2_k", "delta": -0.3, "z": -7.5}
    assert noise.power_verdict(rel(0.95), worst, v)["verdict"] == "powered"
    low = noise.power_verdict(rel(0.95), {**worst, "z": -4.0}, v)
    assert low == {
        "verdict": "underpowered",
        "powered": False,
        "reason": "the most damaged quant, q2_k, sits 4.0 paired SE below the reference, fewer than 6",
    }
    # below 0.8: the Spearman-Brown item count that would reach it, 900 * 0.8 * 0.25 / (0.75 * 0.2) = 1200
    assert noise.power_verdict(rel(0.75), worst, v)["reason"] == (
        "accuracy has split-half reliability 0.75 across these 30 quants, below 0.80 (about 1200 items would reach 0.80)"
    )
    assert noise.power_verdict(rel(-0.1), worst, v)["reason"].endswith(
        "(no number of items would: its spread across these quants is noise)"
    )
    assert (
        noise.power_verdict(rel(None, 2, "fewer than 4 quants (n = 2)"), worst, v)["reason"]
        == "the split-half reliability of accuracy across these quants is undefined (fewer than 4 quants (n = 2))"
    )
    assert (
        noise.power_verdict(rel(0.95), {**worst, "delta": 0.01, "z": 0.5}, v)["reason"] == "no quant scores below the reference"
    )


def test_items_needed_is_the_spearman_brown_prophecy():
    assert noise.items_needed(0.5, 100, 0.8) == 400  # m = 0.8 * 0.5 / (0.5 * 0.2) = 4
    assert noise.items_needed(0.9, 100, 0.8) == 100  # already there
    assert noise.items_needed(0.0, 100, 0.8) is None and noise.items_needed(None, 100, 0.8) is None
    m = noise.items_needed(0.6, 250, 0.9) / 250  # lengthening by m gives m r / (1 + (m - 1) r) = 0.9
    assert m * 0.6 / (1 + (m - 1) * 0.6) == pytest.approx(0.9, abs=0.002)


def test_a_wide_cohort_of_many_items_is_powered(params):
    cohort, items = make_cohort([0.79, 0.75, 0.7, 0.6, 0.45, 0.3], n_items=(400, 400))
    out = run(cohort, items, params)
    assert out.numbers["power"]["powered"], out.numbers["power"]["reason"]
    assert out.numbers["most_damaged"][MODEL] == "q5" and out.numbers["most_damaged"]["z"] < -6
    assert out.mdd[MODEL].iloc[0] == "q5" and out.mdd["delta"].is_monotonic_increasing


@pytest.mark.parametrize("n_quants", [0, 1, 2, 3])
def test_small_cohorts_refuse_with_reasons(tmp_path, params, n_quants):
    cohort, items = make_cohort([0.7, 0.5, 0.3][:n_quants], n_items=(12, 6))
    processed = tmp_path / "processed"
    processed.mkdir()
    cohort.to_parquet(processed / "cohort.parquet")
    items.to_parquet(processed / "items.parquet")
    out = reports.noise_ceiling(params, processed, tmp_path / "figures", tmp_path / "tables", tmp_path / "numbers.json", OPTIONS)
    numbers = json.loads((tmp_path / "numbers.json").read_text())
    assert numbers == out["numbers"]
    why = f"fewer than 4 quants (n = {n_quants})"
    assert numbers["refused"].startswith(why)
    assert numbers["reliability"]["full"]["reliability"] is None and numbers["reliability"]["full"]["refused"] == why
    assert numbers["simulation"]["silent"]["refused"] == why and numbers["attenuation"]["full"]["rho_corrected"] is None
    assert numbers["power"] == {
        "verdict": "underpowered",
        "powered": False,
        "reason": f"the split-half reliability of accuracy across these quants is undefined ({why})",
    }
    if n_quants:  # a detectable difference needs no correlation: every quant still gets one
        assert len(out["detectable_difference"]) == n_quants and numbers["most_damaged"]["se"] > 0
    else:
        assert numbers["most_damaged"]["model"] == "" and numbers["mdd"]["mdd_median"] is None
    for figure in out["figures"].values():
        assert figure.exists() and figure.with_suffix(".csv").exists()
    assert {p.name for p in (tmp_path / "tables").glob("*.csv")} == {
        "reliability.csv",
        "attenuation.csv",
        "detectable_difference.csv",
        "simulation.csv",
    }


def test_options_are_validated_like_params(tmp_path, params):
    with pytest.raises(Exception, match=r"notebooks\.07-noise-ceiling\.n_splits"):
        reports.options_of(params, config.NoiseOptions, {**OPTIONS, "n_splits": 1}, "07-noise-ceiling")
    assert params.notebooks.options("07-noise-ceiling") == {"n_splits": 1000, "n_sims": 1000, "power": 0.8}
