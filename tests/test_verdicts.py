"""The decision rules can fail: on synthetic cohorts whose truth is known, every rule reaches each of its
three verdicts (silentzone.claims computes the tests, silentzone.verdicts applies the rules).

A cohort is made item by item. The reference gives each item's gold answer a log-probability g_R ~ N(−1, 1);
a quant moves it by its true shift μ_q plus item noise whose size grows with its KLD (displacement):
g_q = g_R + μ_q + σ·sqrt(KLD_q)·ε. An item is correct when its gold log-probability clears the item's
own threshold, so accuracy and the signed outcome measure the same items. Far from the baseline every
world has μ_q = −KLD_q. Near it (the silent zone, the lowest-KLD quants):

  perfect    μ_q = −4·KLD_q: KLD ranks quality near the baseline too;
  direction  the paper's world: μ_q = ±0.3·sqrt(KLD_q), the sign at random — KLD sees how far a quant
             moves, not which way;
  flat       μ_q = 0: the near-baseline quants do not differ, nothing there to rank;
  noisy      the direction world seen through ten items with ten times the item noise: no outcome is
             reliable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from silentzone import claims, config, schema, verdicts
from silentzone.schema import MODEL, REFERENCE

REPO = Path(__file__).resolve().parents[1]
HOLDS, FAILS, UNDECIDED = verdicts.HOLDS, verdicts.FAILS, verdicts.UNDECIDED


def make_params(k: int = 40, **verdict_changes):
    raw = config.build_profile("tiny", REPO / "profiles")
    raw["stats"].update(n_resamples=2000, n_bootstrap=1000)
    raw["notebooks"]["07-noise-ceiling"].update(n_splits=200)
    raw["notebooks"]["04-routing"]["min_disagreements"] = 1
    raw["silent_zone"].update(criterion="lowest_k", k=k, sweep_ks=[8, 12, 16, 24, 32, 40, 48])
    raw["verdicts"].update(verdict_changes)
    return config.validate(raw, "params.yaml")


def make_cohort(world: str, n_near: int = 40, n_far: int = 20, n_items: int = 1500, seed: int = 0, prompt: str = "blind"):
    """(cohort, items, params) of one synthetic world (module docstring). The silent zone is the n_near
    lowest-KLD quants. `prompt` sets what per-prompt KLD knows: "blind" (nothing about an item's outcome:
    it follows the quant's KLD), "seer" (it is large exactly where the quant fails) or "noise" (nothing,
    and it scatters so widely that it orders two quants at random)."""
    rng = np.random.default_rng(seed)
    kld_near = np.sort(rng.uniform(0.001, 0.05, n_near))
    kld_far = np.sort(rng.uniform(0.1, 1.0, n_far))
    kld = np.concatenate([kld_near, kld_far])
    far = -kld_far
    if world == "perfect":
        near = -4 * kld_near
    elif world == "flat":
        near = np.zeros(n_near)
    else:  # direction, noisy
        near = rng.choice([-1.0, 1.0], n_near) * 0.3 * np.sqrt(kld_near)
    shift = np.concatenate([near, far])
    sigma = 0.6
    if world == "noisy":
        n_items, sigma = 10, 6.0
    g_ref = rng.normal(-1.0, 1.0, n_items)
    threshold = g_ref + rng.normal(0.0, 0.5, n_items)  # each item's bar: the reference passes about half
    names = [f"q{i:02d}" for i in range(len(kld))]
    rows = [pd.DataFrame({MODEL: REFERENCE, "gold_logprob": g_ref, "correct": g_ref > threshold, "prompt_kld": np.nan})]
    for name, k, mu in zip(names, kld, shift):
        noise = sigma * np.sqrt(k) * rng.normal(size=n_items)
        g = g_ref + mu + noise
        correct = g > threshold
        if prompt == "seer":
            prompt_kld = np.where(correct, 0.5, 2.0) * k * rng.uniform(0.9, 1.1, n_items)
        else:
            prompt_kld = k * rng.lognormal(0.0, 0.3 if prompt == "blind" else 3.0, n_items)
        rows.append(pd.DataFrame({MODEL: name, "gold_logprob": g, "correct": correct, "prompt_kld": prompt_kld}))
    items = pd.concat(rows, ignore_index=True)
    items["task"] = "lambada"
    items["item_id"] = np.tile(np.arange(n_items).astype(str), len(kld) + 1)
    cohort = pd.DataFrame(
        {
            MODEL: [REFERENCE, *names],
            "is_reference": [True] + [False] * len(names),
            "bpw": 8.0,
            "kld_mean": [0.0, *kld],
            "top1_disagree": [0.0, *kld],
        }
    )
    cohort = cohort.merge(schema.scores(items), on=MODEL)
    return cohort, items, make_params(k=n_near)


def verdict_of(claim: str, outcome: str, world: str, **kw) -> dict:
    cohort, items, params = make_cohort(world, **kw)
    data = claims.prepare(cohort, items, params)
    test = getattr(claims, claim)(data, outcome) if claim in ("claim1", "claim2", "claim5") else getattr(claims, claim)(data)
    rules = verdicts.Rules.of(params)
    return verdicts.judge(claim, test, rules, (test.get("p_hold", 1.0), test.get("p_refute", 1.0)))


@pytest.fixture(scope="module")
def worlds():
    return {w: make_cohort(w) for w in ("perfect", "direction", "flat", "noisy")}


def judged(worlds, world: str, claim: str, outcome: str = "signed") -> dict:
    cohort, items, params = worlds[world]
    data = claims.prepare(cohort, items, params)
    test = getattr(claims, claim)(data, outcome) if claim in ("claim1", "claim2", "claim5") else getattr(claims, claim)(data)
    return verdicts.judge(claim, test, verdicts.Rules.of(params), (test.get("p_hold", 1.0), test.get("p_refute", 1.0)))


# ---------------------------------------------------------------- claims 1, 2 and 5 reach every verdict


@pytest.mark.parametrize(
    ("claim", "world", "expected"),
    [
        ("claim1", "direction", HOLDS),  # ranks the cohort, not the zone, whose quants differ reliably
        ("claim1", "perfect", FAILS),  # KLD still ranks the zone
        ("claim1", "flat", UNDECIDED),  # nothing reliable to rank in the zone
        ("claim1", "noisy", UNDECIDED),  # no outcome is reliable
        ("claim2", "direction", HOLDS),
        ("claim2", "perfect", FAILS),
        ("claim2", "noisy", UNDECIDED),
        ("claim5", "direction", HOLDS),  # volume tracks KLD, direction does not
        ("claim5", "perfect", FAILS),  # direction follows KLD
        ("claim5", "noisy", UNDECIDED),
    ],
)
def test_each_rule_reaches_each_verdict_on_the_signed_outcome(worlds, claim, world, expected):
    result = judged(worlds, world, claim)
    assert result["verdict"] == expected, result["reason"]
    assert "\n" not in result["reason"] and result["reason"]


def test_undecided_for_lack_of_power_says_so_and_never_holds(worlds):
    for world in ("flat", "noisy"):
        result = judged(worlds, world, "claim1")
        assert result["verdict"] == UNDECIDED and result["reason"].startswith("not powered:")
        assert result["powered"] is False
    # the flat zone: its quants do not differ, so no number of items makes the outcome reliable there
    assert "no number of items would" in judged(worlds, "flat", "claim1")["reason"]


def test_accuracy_and_the_signed_outcome_are_judged_apart(worlds):
    """Both outcomes come from the same items; accuracy is coarser, so where the signed outcome reaches a
    verdict accuracy may be undecided — never the opposite verdict on these worlds."""
    for world in ("direction", "perfect"):
        signed, accuracy = judged(worlds, world, "claim1"), judged(worlds, world, "claim1", "accuracy")
        assert {signed["verdict"], accuracy["verdict"]} != {HOLDS, FAILS}


# ---------------------------------------------------------------- claims 3 and 4


def test_claim3_reaches_each_verdict():
    assert verdict_of("claim3", "accuracy", "direction", prompt="blind")["verdict"] == HOLDS  # AUROC ≈ 0.5
    assert verdict_of("claim3", "accuracy", "direction", prompt="seer")["verdict"] == FAILS  # AUROC ≈ 1
    few = verdict_of("claim3", "accuracy", "direction", n_near=2, n_far=0, n_items=30)
    assert few["verdict"] == UNDECIDED and "at least 3 needed" in few["reason"]


def test_claim4_reaches_each_verdict():
    # per-prompt KLD that knows nothing routes no better than the mean-KLD router: it adds nothing
    assert verdict_of("claim4", "accuracy", "direction", prompt="blind")["verdict"] == HOLDS
    # per-prompt KLD that is large exactly where a quant fails routes every prompt right
    assert verdict_of("claim4", "accuracy", "direction", prompt="seer")["verdict"] == FAILS
    few = verdict_of("claim4", "accuracy", "direction", n_near=4, n_far=0, n_items=12, prompt="noise")
    assert few["verdict"] == UNDECIDED and "interval" in few["reason"]


# ---------------------------------------------------------------- joining outcomes, Holm


def test_combine_outcomes():
    def v(verdict, reason="r"):
        return {"verdict": verdict, "reason": reason, "estimate": 0.1, "ci": [0, 0.2], "power": {}}

    assert verdicts.combine({"accuracy": v(UNDECIDED), "signed": v(FAILS)})["verdict"] == FAILS
    assert verdicts.combine({"accuracy": v(UNDECIDED), "signed": v(FAILS)})["outcome"] == ["signed"]
    assert verdicts.combine({"accuracy": v(HOLDS), "signed": v(HOLDS)})["outcome"] == ["accuracy", "signed"]
    disagree = verdicts.combine({"accuracy": v(HOLDS), "signed": v(FAILS)})
    assert disagree["verdict"] == UNDECIDED and disagree["reason"].startswith("the outcomes disagree")
    assert verdicts.combine({"accuracy": v(UNDECIDED), "signed": v(UNDECIDED)})["verdict"] == UNDECIDED


def test_holm_across_the_claims_can_turn_a_verdict(worlds):
    """A test decided alone at α can be undecided once Holm counts the other claims' tests."""
    cohort, items, params = make_cohort("perfect", n_near=10, n_far=20, n_items=1500, seed=3)
    tests = claims.all_tests(cohort, items, params)
    decided = verdicts.decide(tests, verdicts.Rules.of(params))
    assert decided["holm"]["n_tests"] == 8
    for claim in verdicts.CLAIMS:
        for outcome, v in decided[claim]["by_outcome"].items():
            if "p_refute" in v:
                assert v["p_refute_holm"] >= v["p_refute"] - 1e-12 and v["p_hold_holm"] >= v["p_hold"] - 1e-12


def test_verdicts_json_has_the_fields_readers_rely_on(worlds):
    cohort, items, params = worlds["direction"]
    tests = claims.all_tests(cohort, items, params)
    tests["robustness"] = claims.robustness_tests(cohort, items, params, len(tests["inputs"].silent))
    rules = verdicts.Rules.of(params)
    doc = verdicts.document(tests, verdicts.decide(tests, rules), rules)
    for claim in verdicts.CLAIMS:
        entry = doc[claim]
        assert entry["verdict"] in (HOLDS, FAILS, UNDECIDED) and entry["outcome"]
        assert len(entry["ci"]) == 2 and {"reliability", "n_quants", "powered"} <= set(entry["power"])
    assert {"baseline_mean_kld", "silent_pairs_accuracy"} <= set(doc["claim4"])
    signed = doc["signed_outcome"]
    for key in (
        "reliability_full",
        "reliability_silent",
        "rho_kld_mean_full",
        "rho_kld_mean_silent",
        "rho_kld_mean_full_p",
        "rho_kld_mean_silent_p",
    ):
        assert signed[key] is not None, key
    assert doc["silent_zone"] == tests["inputs"].silent and len(doc["silent_zone"]) == 40
    assert doc["robustness"]["kld_rank_zone"]["k"] == 40


def test_the_broader_composite_repeats_claims_1_2_and_5():
    """bench.composite leaves a task out: the cohort carries composite_all, and verdicts.json gains the
    robustness check on it, with its own silent zone."""
    cohort, items, params = make_cohort("direction", n_near=20, n_far=10, n_items=400)
    second = items.assign(task="piqa", correct=~items["correct"])  # a second task, its outcomes reversed
    both = pd.concat([items, second], ignore_index=True)
    scored = schema.scores(both, ["lambada"])
    assert {"composite", "composite_all", "signed", "signed_all"} <= set(scored.columns)
    assert scored["composite"].equals(schema.scores(items)["composite"])
    cohort = cohort.drop(columns=["composite", "signed", "score_lambada", "signed_lambada"]).merge(scored, on=MODEL)
    tests = claims.all_tests(cohort, schema.composite_items(both, ["lambada"]), params)
    tests["broad"] = claims.broad_tests(cohort, both, params)
    rules = verdicts.Rules.of(params)
    doc = verdicts.document(tests, verdicts.decide(tests, rules), rules)
    broad = doc["robustness"]["broad_composite"]
    assert broad["tasks"] == ["lambada", "piqa"] and broad["holm"]["n_tests"] == 6
    assert {broad[c]["verdict"] for c in ("claim1", "claim2", "claim5")} <= {HOLDS, FAILS, UNDECIDED}
