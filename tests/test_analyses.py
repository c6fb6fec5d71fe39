"""silentzone.analyses: the flip identity on random item tables, AUROC against Mann–Whitney U,
geometric-mean ratios and their CI against scipy, routing against hand-worked cases and the
Clopper–Pearson formula."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats as ss

from silentzone import analyses, config
from silentzone.errors import SilentzoneError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def settings():
    """The tiny profile's statistics settings."""
    return config.validate(config.build_profile("tiny", REPO / "profiles"), "params.yaml").stats_settings()


def _items(seed=0, n_quants=4, tasks={"arc": 30, "gsm": 17, "mmlu": 23}):
    """Random item table; q0 copies the reference (volume 0), the others flip some items."""
    rng = np.random.default_rng(seed)
    rows = []
    for task, n in tasks.items():
        ref = rng.random(n) < 0.55
        kld_scale = rng.lognormal(size=n)
        for m in ["reference", *[f"q{i}" for i in range(n_quants)]]:
            flip = np.zeros(n, bool) if m in ("reference", "q0") else rng.random(n) < 0.1 * int(m[1:])
            correct = ref ^ flip
            kld = np.full(n, np.nan) if m == "reference" else kld_scale * rng.lognormal(0, 0.3, n) * (1 + flip)
            rows += [
                {
                    "model": m,
                    "task": task,
                    "item_id": f"{task}/{i:03d}",
                    "correct": bool(c),
                    "prompt_kld": k,
                    "n_prompt_tokens": 10,
                }
                for i, (c, k) in enumerate(zip(correct, kld))
            ]
    return pd.DataFrame(rows)


def test_flips_hand_worked():
    ref, q = [1, 1, 0, 0, 1], [1, 0, 1, 0, 0]
    items = pd.DataFrame(
        {
            "model": ["reference"] * 5 + ["q"] * 5,
            "task": "t",
            "item_id": [*range(5), *range(5)],
            "correct": np.array(ref + q, bool),
        }
    )
    row = analyses.flips(items).iloc[0]
    assert (row["leapfrogs"], row["drops"], row["volume"], row["n_items"]) == (1, 2, 3, 5)
    assert row["direction"] == pytest.approx(1 / 3) and row["delta"] == pytest.approx(-0.2)


@pytest.mark.parametrize("seed", range(5))
def test_flip_identity_exact_for_every_quant(seed):
    items = _items(seed)
    table = analyses.flips(items)
    per_task = table[table["task"] != "composite"]
    # independent counts: crosstab of (q, R) outcomes, exact rational arithmetic
    wide = items.pivot(index=["task", "item_id"], columns="model", values="correct")
    for _, r in per_task.iterrows():
        t = wide.loc[r["task"]]
        cross = pd.crosstab(t[r["model"]], t["reference"]).reindex(index=[False, True], columns=[False, True], fill_value=0)
        assert (r["leapfrogs"], r["drops"]) == (cross.loc[True, False], cross.loc[False, True])
        n = len(t)
        delta = Fraction(int(t[r["model"]].sum()), n) - Fraction(int(t["reference"].sum()), n)
        assert delta == Fraction(int(r["leapfrogs"] - r["drops"]), n)  # (L − D)/N, exactly
        if r["volume"] == 0:
            assert np.isnan(r["direction"]) and delta == 0
        else:
            f = Fraction(int(r["leapfrogs"]), int(r["volume"]))
            assert delta == r["volume"] * (2 * f - 1) / n  # volume·(2f − 1)/N, exactly
            assert r["direction"] == pytest.approx(float(f), abs=1e-15)
        assert r["delta"] == pytest.approx(float(delta), abs=1e-15)
        assert r["score_q"] - r["score_ref"] == pytest.approx(float(delta), abs=1e-15)
    assert (per_task.loc[per_task["model"] == "q0", "volume"] == 0).all()


def test_flips_composite_rows():
    table = analyses.flips(_items(1))
    for model, g in table.groupby("model"):
        tasks, comp = g[g["task"] != "composite"], g[g["task"] == "composite"].iloc[0]
        assert comp["volume_rate"] == pytest.approx(tasks["volume"].sum() / tasks["n_items"].sum())
        assert comp["delta"] == pytest.approx(tasks["delta"].mean())  # composite = mean over tasks
        if comp["volume"]:
            assert comp["direction"] == pytest.approx(tasks["leapfrogs"].sum() / tasks["volume"].sum())


def test_flips_bad_tables():
    items = _items()
    with pytest.raises(SilentzoneError, match="has no `correct` for"):
        analyses.flips(items.drop(index=items.index[-1]))
    with pytest.raises(SilentzoneError, match="duplicate row"):
        analyses.flips(pd.concat([items, items.iloc[[5]]]))
    with pytest.raises(SilentzoneError, match="no rows for model 'reference'"):
        analyses.flips(items[items["model"] != "reference"])


def test_flip_correlations_match_scipy(settings):
    items = _items(2, n_quants=6)
    table = analyses.flips(items)
    comp = table[table["task"] == "composite"].set_index("model")
    cohort = pd.DataFrame(
        {
            "model": ["reference", *comp.index],
            "is_reference": [True] + [False] * len(comp),
            "kld_mean": [0.0, *(comp["volume_rate"] + np.linspace(0, 0.05, len(comp)))],
        }
    )
    out = analyses.flip_correlations(cohort, table, ["kld_mean"], settings)
    row = out[out["target"] == "volume:composite"].iloc[0]
    assert row["rho"] == pytest.approx(ss.spearmanr(cohort["kld_mean"].iloc[1:], comp["volume_rate"]).statistic)
    row = out[out["target"] == "direction:composite"].iloc[0]  # q0 has no flips: left out of direction
    assert row["n"] == len(comp) - 1
    d = comp["direction"].dropna()
    assert row["rho"] == pytest.approx(ss.spearmanr(cohort.set_index("model").loc[d.index, "kld_mean"], d).statistic)


def test_flips_of_a_cohort_without_quants(settings):
    items = _items(n_quants=0)
    table = analyses.flips(items)
    assert table.empty and list(table.columns) == analyses.FLIP_COLUMNS
    cohort = pd.DataFrame({"model": ["reference"], "is_reference": [True], "kld_mean": [0.0]})
    out = analyses.flip_correlations(cohort, table, ["kld_mean"], settings)
    assert list(out["target"]) == ["volume:composite", "direction:composite"]
    assert (out["n"] == 0).all() and out["refused"].str.contains("fewer than 4 quants").all()


def test_auroc_matches_mann_whitney():
    rng = np.random.default_rng(4)
    for failed, passed in [
        (rng.lognormal(0.2, 1, 17), rng.lognormal(0, 1, 40)),
        (np.round(rng.lognormal(size=9), 1), np.round(rng.lognormal(size=12), 1)),
    ]:  # ties
        u = ss.mannwhitneyu(failed, passed).statistic
        assert analyses.auroc(failed, passed) == pytest.approx(u / (len(failed) * len(passed)))
        pairs = (failed[:, None] > passed[None, :]).mean() + 0.5 * (failed[:, None] == passed[None, :]).mean()
        assert analyses.auroc(failed, passed) == pytest.approx(pairs)
    assert analyses.auroc([3, 4], [1, 2]) == 1.0 and analyses.auroc([1], [1]) == 0.5


def test_failure_prediction(settings):
    items = _items(3)
    s = settings
    out = analyses.failure_prediction(items, s)
    assert list(out.columns) == analyses.FAILURE_COLUMNS
    assert set(out["task"]) == {"arc", "gsm", "mmlu", "all"}
    q = items[(items["model"] == "q1") & (items["task"] == "arc")]
    row = out[(out["model"] == "q1") & (out["task"] == "arc")].iloc[0]
    failed, passed = q.loc[~q["correct"], "prompt_kld"], q.loc[q["correct"], "prompt_kld"]
    assert row["gm_ratio"] == pytest.approx(ss.gmean(failed) / ss.gmean(passed))
    assert row["auroc"] == pytest.approx(ss.mannwhitneyu(failed, passed).statistic / (len(failed) * len(passed)))
    # the first bootstrap drawn from the seed is (q0, arc): compare it with scipy's two-sample bootstrap
    first = out.iloc[0]
    q0 = items[(items["model"] == first["model"]) & (items["task"] == first["task"])]
    res = ss.bootstrap(
        (np.log(q0.loc[~q0["correct"], "prompt_kld"]), np.log(q0.loc[q0["correct"], "prompt_kld"])),
        lambda f, p, axis=-1: np.exp(f.mean(axis=axis) - p.mean(axis=axis)),
        n_resamples=s["n_bootstrap"],
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(s["seed"]),
    )
    assert (first["ci_low"], first["ci_high"]) == pytest.approx(
        (res.confidence_interval.low, res.confidence_interval.high), abs=1e-12
    )
    all_passed = items.assign(correct=True)
    assert analyses.failure_prediction(all_passed, s)["refused"].eq("no failed items").all()
    broken = items.copy()
    broken.loc[broken.index[-1], "prompt_kld"] = np.nan
    with pytest.raises(SilentzoneError, match="prompt_kld of q3"):
        analyses.failure_prediction(broken, s)


def test_routing_hand_worked(settings):
    # items 0-3 disagree; lower KLD picks: a (passed), b (passed), a (failed), tie (not routed); item 4 agrees
    items = pd.DataFrame(
        {
            "model": ["a"] * 5 + ["b"] * 5,
            "task": "t",
            "item_id": [*range(5), *range(5)],
            "correct": [True, False, False, True, True, False, True, True, False, True],
            "prompt_kld": [0.1, 0.9, 0.2, 0.5, 0.3, 0.4, 0.3, 0.8, 0.5, 0.1],
        }
    )
    out = analyses.routing(items, settings)
    assert list(out.columns) == analyses.ROUTING_COLUMNS
    row = out[out["task"] == "t"].iloc[0]
    assert (row["n_disagree"], row["n_ties"], row["n_routed"], row["n_correct"]) == (4, 1, 3, 2)
    assert row["accuracy"] == pytest.approx(2 / 3)
    test = ss.binomtest(2, 3, 0.5)  # scipy's exact binomial test and Clopper–Pearson interval
    ci = test.proportion_ci(0.95, method="exact")
    assert (row["ci_low"], row["ci_high"], row["p_binom"]) == pytest.approx((ci.low, ci.high, test.pvalue))


def test_routing_random(settings):
    items = _items(5)
    out = analyses.routing(items, settings)
    assert len(out) == 6 * 4  # 4 quants -> 6 pairs; 3 tasks + all
    row = out[(out["model_a"] == "q2") & (out["model_b"] == "q3") & (out["task"] == "all")].iloc[0]
    wide = items[items["model"] != "reference"].pivot(
        index=["task", "item_id"], columns="model", values=["correct", "prompt_kld"]
    )
    dis = wide[wide[("correct", "q2")] != wide[("correct", "q3")]]
    picks = np.where(dis[("prompt_kld", "q2")] < dis[("prompt_kld", "q3")], dis[("correct", "q2")], dis[("correct", "q3")])
    assert row["n_disagree"] == len(dis) and row["accuracy"] == pytest.approx(picks.mean()) and row["accuracy"] != 0.5
    for _, r in out.iterrows():  # every row, including k = 0 or k = n, against scipy.stats.binomtest
        test = ss.binomtest(int(r["n_correct"]), int(r["n_routed"]), 0.5)
        ci = test.proportion_ci(0.95, method="exact")
        assert (r["ci_low"], r["ci_high"], r["p_binom"]) == pytest.approx((ci.low, ci.high, test.pvalue), abs=1e-12)
    with pytest.raises(SilentzoneError, match="at least two quants"):
        analyses.routing(items[items["model"].isin(["reference", "q1"])], settings)


def test_routing_edges(settings):
    # every routed pick passes (k = n) in task "t"; task "u" has no disagreement at all (refused)
    items = pd.DataFrame(
        {
            "model": ["a"] * 4 + ["b"] * 4,
            "task": ["t", "t", "t", "u"] * 2,
            "item_id": [0, 1, 2, 3] * 2,
            "correct": [True, True, False, True, False, False, True, True],
            "prompt_kld": [0.1, 0.1, 0.9, 0.2, 0.5, 0.5, 0.2, 0.3],
        }
    )
    out = analyses.routing(items, settings).set_index("task")
    test = ss.binomtest(3, 3, 0.5)
    assert out.loc["t", "accuracy"] == 1.0 and out.loc["t", "ci_high"] == 1.0
    assert (out.loc["t", "ci_low"], out.loc["t", "p_binom"]) == pytest.approx(
        (test.proportion_ci(0.95, method="exact").low, test.pvalue)
    )
    assert out.loc["u", "n_disagree"] == 0 and np.isnan(out.loc["u", "accuracy"]) and "no disagreement" in out.loc["u", "refused"]


# ---------------------------------------------------------------- the signed outcome


def _signed_items():
    g_ref = np.array([-1.0, -2.0, -0.5, -3.0])
    rows = [pd.DataFrame({"model": "reference", "gold_logprob": g_ref})]
    rows.append(pd.DataFrame({"model": "qa", "gold_logprob": g_ref + np.array([0.5, -0.25, 0.0, -0.25])}))
    rows.append(pd.DataFrame({"model": "qb", "gold_logprob": g_ref}))
    items = pd.concat(rows, ignore_index=True)
    items["task"], items["item_id"] = "lambada", np.tile(["1", "2", "3", "4"], 3)
    items["correct"] = items["gold_logprob"] > -1.5
    return items


def test_signed_flips_by_hand_and_the_identity():
    out = analyses.signed_flips(_signed_items())
    qa = out[(out["model"] == "qa") & (out["task"] == "lambada")].iloc[0]
    # Δ = (+0.5, −0.25, 0, −0.25): volume Σ|Δ| = 1, rate 0.25, direction 0.5 / 1, delta 0
    assert (qa["leapfrogs"], qa["drops"]) == (1, 2)
    assert qa["volume"] == pytest.approx(1.0) and qa["volume_rate"] == pytest.approx(0.25)
    assert qa["direction"] == pytest.approx(0.5) and qa["delta"] == pytest.approx(0.0)
    qb = out[(out["model"] == "qb") & (out["task"] == "lambada")].iloc[0]
    assert qb["volume"] == 0 and np.isnan(qb["direction"])  # no movement, no direction
    moved = out[out["volume"] > 0]
    assert np.allclose(moved["delta"], moved["volume_rate"] * (2 * moved["direction"] - 1))


def test_signed_scores_are_paired_means_against_the_reference():
    from silentzone import schema

    s = schema.signed_scores(_signed_items()).set_index("model")
    assert s.loc["qa", "signed_lambada"] == pytest.approx(0.0) and s.loc["reference", "signed"] == 0.0
    items = _signed_items()
    items.loc[items["model"] == "qa", "gold_logprob"] -= 0.1
    assert schema.signed_scores(items).set_index("model").loc["qa", "signed"] == pytest.approx(-0.1)


def test_gold_logprob_of_each_kind():
    import math

    from silentzone.bench.outcome import gold_logprob

    assert gold_logprob("greedy", "greedy_exact", [-2.5], {"item_id": "1"}) == -2.5
    item = {"item_id": "x", "continuations": ["ab", "abcd"], "label": 1}
    # raw: log softmax of the sums, at the gold choice
    assert gold_logprob("mc", "raw", [-1.0, -2.0], item) == pytest.approx(-2.0 - math.log(math.exp(-1.0) + math.exp(-2.0)))
    # per_char: the sums per character (-0.5, -0.5): a tie, so log 1/2
    assert gold_logprob("mc", "per_char", [-1.0, -2.0], item) == pytest.approx(math.log(0.5))
    assert math.isnan(gold_logprob("code", "tests_pass", [], {}))
    with pytest.raises(SilentzoneError, match="2 choice log-probabilities for 2 choices|1 choice log-probabilities"):
        gold_logprob("mc", "raw", [-1.0], item)


def test_cluster_bootstrap_resamples_prompts_not_pairs():
    routed = pd.DataFrame(
        {
            "model_a": ["a", "a", "b"],
            "model_b": ["b", "c", "c"],
            "task": "t",
            "item_id": ["1", "1", "2"],  # prompt 1 routed in two pairs
            "per_prompt": [1, 1, 0],
            "mean_kld": [0, 1, 0],
            "oracle_fixed": [1, 1, 1],
        }
    )
    boot = analyses.cluster_bootstrap_accuracy(routed, 400, np.random.default_rng(0))
    # a resample holds prompt 1 (both its pairs: per-prompt 2/2) or prompt 2 (0/1), so every pooled
    # per-prompt accuracy is one of 0, 2/3, 1 — never 1/2, which resampling pairs would give
    assert set(np.round(boot["per_prompt"], 6)) <= {0.0, round(2 / 3, 6), 1.0}
    assert np.allclose(boot["gain"], boot["per_prompt"] - boot["mean_kld"]) and np.all(boot["oracle_fixed"] == 1.0)
