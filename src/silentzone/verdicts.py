"""The decision rules: one verdict per claim of the paper (holds, does not hold, undecided), each a tested
function of the tests silentzone.claims computes. Science, not presentation: nothing here knows Quarto;
the Methods section prints these rules and their thresholds (params `verdicts`, fixed before a run).

Per claim and outcome (claims 1, 2 and 5 are tested on accuracy and on the signed outcome; 3 and 4 on
accuracy), in this order:

  1. unavailable (no such outcome, no per-prompt KLD) → undecided, saying why;
  2. not powered → undecided, saying why. Power is one definition (silentzone.noise.reliability_power):
     the split-half reliability of the test's outcome across the very quants it uses reaches
     min_reliability; full-cohort tests also need the most damaged quant min_z paired SE below the
     reference; claim 2 needs a zone of its curve no larger than the silent zone with a reliable outcome
     (else it cannot speak of the near-baseline region); claim 3 enough quants with
     enough failed and passed prompts; claim 4 a gain interval narrower than twice its margin;
  3. its two p-values, each Holm-adjusted across the family of the eight tests (one family for the
     p-values that support a claim, one for those that contradict it): holds when the supporting p is
     below α and the contradicting one is not; does not hold in the mirror case; undecided otherwise
     (the interval is too wide to tell).

A claim's verdict joins its outcomes: the verdicts of the outcomes that reached one, if they agree;
undecided when none did or when they disagree (the reason says which said what).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import stats
from .formatting import ci_text, fmt_pct, fmt_signed, p_phrase

if TYPE_CHECKING:
    from .config import Params

HOLDS, FAILS, UNDECIDED = "holds", "does not hold", "undecided"
CLAIMS = ("claim1", "claim2", "claim3", "claim4", "claim5")
OUTCOME_NAMES = {"accuracy": "accuracy", "signed": "the signed outcome"}


@dataclass(frozen=True)
class Rules:
    """The rules' thresholds: params `verdicts`, and α = 1 − stats.ci."""

    alpha: float = 0.05
    min_reliability: float = 0.8
    min_z: float = 6.0
    rho_margin: float = 0.5
    router_margin: float = 0.02
    auroc_useful: float = 0.70
    min_prompts: int = 10
    min_failure_quants: int = 3

    @classmethod
    def of(cls, params: Params) -> Rules:
        v = params.verdicts
        return cls(
            alpha=round(1 - params.stats.ci, 10),
            min_reliability=v.min_reliability,
            min_z=v.min_z,
            rho_margin=v.rho_margin,
            router_margin=v.router_margin,
            auroc_useful=v.auroc_useful,
            min_prompts=v.min_prompts,
            min_failure_quants=v.min_failure_quants,
        )


# ---------------------------------------------------------------- texts, from the numbers


def rho_text(test: dict) -> str:
    """ "ρ = −0.74 [−0.97, −0.27], p = 0.005" (n quants), or why it is undefined."""
    if test.get("rho") is None:
        return f"ρ undefined ({test.get('refused') or 'no quants'})"
    return (
        f"ρ = {fmt_signed(test['rho'])}{ci_text(test['ci_low'], test['ci_high'])}, {p_phrase(test['p_perm'])} (n = {test['n']})"
    )


def margin_text(rules: Rules) -> str:
    return f"±{rules.rho_margin:.2f}"


# ---------------------------------------------------------------- power per test


def power_check(claim: str, test: dict, rules: Rules) -> tuple[bool, str | None, dict]:
    """(powered, why not, the power object verdicts.json prints) of one claim's test."""
    if claim in ("claim1", "claim2"):
        full = test["power"]["full"]
        parts = [(full["powered"], full["reason"]), (test["damage"]["sees_damage"], test["damage"]["reason"])]
        if claim == "claim1":
            silent = test["power"]["silent"]
            parts.append((silent["powered"], f"in the silent zone {silent['reason']}"))
            shown = {**silent, "full": full}
        else:
            reliable = test["curve"][test["curve"]["powered"].astype(bool)]
            why = (
                "no zone of the curve has a reliable outcome"
                if reliable.empty
                else f"the outcome is reliable only in zones of {int(reliable['k'].min())} or more quants, larger than the "
                f"{test['n_silent']}-quant silent zone"
            )
            parts.append((test["tested"] is not None, why))
            shown = {
                **full,
                "n_reliable_zones": test["power"]["n_reliable_zones"],
                "tested_k": None if test["tested"] is None else test["tested"]["k"],
            }
    elif claim == "claim3":
        n = test["n_quants"]
        parts = [
            (
                n >= rules.min_failure_quants,
                f"{n} quants have at least {rules.min_prompts} failed and passed prompts "
                f"(at least {rules.min_failure_quants} needed)",
            )
        ]
        shown = {"reliability": None, "n_quants": n, "basis": "quants with an AUROC"}
    elif claim == "claim4":
        low, high = test["pooled"]["gain_ci_2alpha"]
        narrow = low is not None and (high - low) < 2 * rules.router_margin
        width = "undefined" if low is None else f"{100 * (high - low):.1f} points wide"
        parts = [
            (
                narrow,
                f"the interval of the per-prompt router's gain is {width}, not narrower than "
                f"{200 * rules.router_margin:.0f} points",
            )
        ]
        shown = {"reliability": None, "n_quants": None, "n_prompts": test["pooled"]["n_prompts"], "basis": "gain interval width"}
    else:  # claim5
        p = test["power"]
        parts = [
            (p["volume"]["powered"], f"in the silent zone {p['volume']['reason']}"),
            (p["direction"]["powered"], f"in the silent zone {p['direction']['reason']}"),
        ]
        shown = {**p["direction"], "volume": p["volume"]}
    why = next((reason for ok, reason in parts if not ok), None)
    powered = why is None
    return powered, why, {**shown, "powered": powered}


# ---------------------------------------------------------------- one test's verdict


def estimate_of(claim: str, test: dict) -> tuple[float | None, list]:
    """The number a claim's verdict is about, with its interval: claim 1 the silent-zone ρ; claim 2 the ρ
    of the largest reliable zone no larger than the silent zone; claim 3 the median AUROC; claim 4 the per-prompt
    router's gain over the mean-KLD router; claim 5 the silent-zone ρ of KLD with direction."""
    if claim == "claim1":
        t = test["silent"]
    elif claim == "claim2":
        t = test["tested"] or {}
    elif claim == "claim3":
        return test.get("median"), list(test.get("ci", [None, None]))
    elif claim == "claim4":
        return test["pooled"]["gain"]["accuracy"], list(test["pooled"]["gain"]["ci"])
    else:
        t = test["direction"]
    return t.get("rho"), [t.get("ci_low"), t.get("ci_high")]


def reason_of(claim: str, verdict: str, test: dict, rules: Rules, holm: tuple[float, float]) -> str:
    """The sentence that says why, generated from the numbers the rule compared."""
    margin = margin_text(rules)
    p_hold, p_refute = holm
    if claim == "claim1":
        full, silent = test["full"], test["silent"]
        if verdict == HOLDS:
            return (
                f"mean KLD ranks the full cohort ({rho_text(full)}) and not the silent zone: {rho_text(silent)}, "
                f"inside {margin} (equivalence {p_phrase(p_hold)}, Holm)"
            )
        if verdict == FAILS:
            if silent.get("rho") is not None and silent["rho"] < 0 and (silent["p_perm"] or 1) < 1 and p_refute < rules.alpha:
                return f"mean KLD still ranks the silent zone: {rho_text(silent)} (Holm {p_phrase(p_refute)})"
            return f"mean KLD does not rank the full cohort: {rho_text(full)}, inside {margin}"
        return (
            f"full cohort {rho_text(full)}; silent zone {rho_text(silent)}: neither inside {margin} nor significantly "
            f"negative after Holm ({p_phrase(p_hold)} and {p_phrase(p_refute)})"
        )
    if claim == "claim2":
        tested, small = test["tested"] or {}, test["smallest_reliable"] or {}
        if verdict == HOLDS:
            return (
                f"in the zone of the {tested['k']} lowest-KLD quants, the largest no larger than the silent zone with a "
                f"reliable outcome, ρ = {fmt_signed(tested['rho'])}{ci_text(tested['ci_low'], tested['ci_high'])} lies inside "
                f"{margin} (Holm {p_phrase(p_hold)}), while the full cohort ranks ({rho_text(test['full'])})"
            )
        if verdict == FAILS:
            return (
                f"ρ stays significantly negative in every zone of up to {test['reach']} lowest-KLD quants whose outcome is "
                f"reliable, down to k = {small['k']} (ρ = {fmt_signed(small['rho'])}; Holm {p_phrase(p_refute)})"
            )
        interval = ci_text(tested.get("ci_low"), tested.get("ci_high")) if tested.get("rho") is not None else ""
        rho = fmt_signed(tested["rho"]) if tested.get("rho") is not None else "—"
        return (
            f"in the zone of the {tested.get('k')} lowest-KLD quants ρ = {rho}{interval}: not inside {margin} after Holm "
            f"({p_phrase(p_hold)}), and not every smaller reliable zone ranks significantly"
        )
    if claim == "claim3":
        low, high = test["ci"]
        where = {HOLDS: "below", FAILS: "at or above"}.get(verdict, "on both sides of")
        return (
            f"median AUROC {test['median']:.2f} [{low:.2f}, {high:.2f}] over {test['n_quants']} quants, {where} the "
            f"{rules.auroc_useful:.2f} of a useful failure detector"
        )
    if claim == "claim4":
        pooled = test["pooled"]
        base = (
            f"the per-prompt KLD router is right on {fmt_pct(pooled['per_prompt']['accuracy'])} of "
            f"{pooled['n_routed']} routed prompts, the mean-KLD router on {fmt_pct(pooled['mean_kld']['accuracy'])}: a gain of "
            f"{fmt_signed(100 * pooled['gain']['accuracy'], 1)} points"
            f"{ci_text(*[100 * x for x in pooled['gain']['ci']], fmt=lambda v: fmt_signed(v, 1))}"
        )
        if verdict == HOLDS:
            return (
                base
                + f", under the {100 * rules.router_margin:.0f}-point margin (Holm {p_phrase(p_hold)}): per-prompt KLD adds nothing to the mean"
            )
        if verdict == FAILS:
            return base + f", above 0 (Holm {p_phrase(p_refute)}): per-prompt KLD routes better than the mean"
        return base + f": the interval reaches past both 0 and the {100 * rules.router_margin:.0f}-point margin"
    volume, direction = test["volume"], test["direction"]
    if verdict == HOLDS:
        return (
            f"in the silent zone KLD tracks volume ({rho_text(volume)}) and not direction ({rho_text(direction)}, inside "
            f"{margin}, Holm {p_phrase(p_hold)})"
        )
    if verdict == FAILS:
        return f"in the silent zone volume {rho_text(volume)}; direction {rho_text(direction)} (Holm {p_phrase(p_refute)})"
    return (
        f"in the silent zone volume {rho_text(volume)}; direction {rho_text(direction)}: not inside {margin} "
        f"after Holm ({p_phrase(p_hold)})"
    )


def judge(claim: str, test: dict, rules: Rules, holm: tuple[float, float]) -> dict:
    """One test's verdict: {verdict, reason, powered, power, estimate, ci, p_hold, p_refute, p_hold_holm, p_refute_holm}."""
    if not test.get("available", False):
        return {
            "verdict": UNDECIDED,
            "reason": test.get("reason") or "unavailable",
            "powered": False,
            "power": {"reliability": None, "n_quants": None, "powered": False},
            "estimate": None,
            "ci": [None, None],
        }
    powered, why, shown = power_check(claim, test, rules)
    estimate, ci = estimate_of(claim, test)
    out = {
        "powered": powered,
        "power": shown,
        "estimate": estimate,
        "ci": ci,
        "p_hold": test["p_hold"],
        "p_refute": test["p_refute"],
        "p_hold_holm": holm[0],
        "p_refute_holm": holm[1],
    }
    if not powered:
        return {"verdict": UNDECIDED, "reason": f"not powered: {why}", **out}
    holds, refuted = holm[0] < rules.alpha, holm[1] < rules.alpha
    verdict = HOLDS if holds and not refuted else FAILS if refuted and not holds else UNDECIDED
    return {"verdict": verdict, "reason": reason_of(claim, verdict, test, rules, holm), **out}


def combine(per_outcome: dict[str, dict]) -> dict:
    """A claim's verdict from its outcomes' (module docstring): which outcome(s) decided, and why."""
    decided = {o: v for o, v in per_outcome.items() if v["verdict"] != UNDECIDED}
    kinds = {v["verdict"] for v in decided.values()}
    if len(kinds) == 1:
        verdict = kinds.pop()
        outcomes = list(decided)
        lead = per_outcome[outcomes[0]]
        others = [f"on {OUTCOME_NAMES.get(o, o)} undecided ({v['reason']})" for o, v in per_outcome.items() if o not in decided]
        reason = f"on {' and '.join(OUTCOME_NAMES.get(o, o) for o in outcomes)}: {lead['reason']}" + (
            f"; {'; '.join(others)}" if others and len(per_outcome) > 1 else ""
        )
        return {
            "verdict": verdict,
            "outcome": outcomes,
            "reason": reason if len(per_outcome) > 1 else lead["reason"],
            **_lead(lead),
        }
    if decided:  # the outcomes disagree
        said = "; ".join(
            f"on {OUTCOME_NAMES.get(o, o)} it {'holds' if v['verdict'] == HOLDS else 'does not hold'} ({v['reason']})"
            for o, v in decided.items()
        )
        lead = next(iter(decided.values()))
        return {"verdict": UNDECIDED, "outcome": list(decided), "reason": f"the outcomes disagree: {said}", **_lead(lead)}
    lead_outcome = next(iter(per_outcome))
    lead = per_outcome[lead_outcome]
    reason = (
        "; ".join(f"on {OUTCOME_NAMES.get(o, o)}: {v['reason']}" for o, v in per_outcome.items())
        if len(per_outcome) > 1
        else lead["reason"]
    )
    return {"verdict": UNDECIDED, "outcome": list(per_outcome), "reason": reason, **_lead(lead)}


def _lead(v: dict) -> dict:
    return {"estimate": v.get("estimate"), "ci": v.get("ci", [None, None]), "power": v.get("power")}


# ---------------------------------------------------------------- all claims


def decide(tests: dict, rules: Rules, which: tuple[str, ...] = CLAIMS) -> dict:
    """Every claim's verdict from silentzone.claims.all_tests: {claim: {verdict, outcome, reason, estimate,
    ci, power, by_outcome}}, plus the Holm family. Holm runs across every (claim, outcome) test of `which`."""
    family = [(claim, outcome) for claim in which for outcome in tests[claim]]
    p_hold = [tests[c][o].get("p_hold", 1.0) if tests[c][o].get("available") else 1.0 for c, o in family]
    p_refute = [tests[c][o].get("p_refute", 1.0) if tests[c][o].get("available") else 1.0 for c, o in family]
    holm_hold, holm_refute = stats.holm(p_hold), stats.holm(p_refute)
    out = {}
    for claim in which:
        per = {}
        for outcome in tests[claim]:
            i = family.index((claim, outcome))
            per[outcome] = judge(claim, tests[claim][outcome], rules, (float(holm_hold[i]), float(holm_refute[i])))
        out[claim] = {**combine(per), "by_outcome": per}
    out["holm"] = {"family": [f"{c}:{o}" for c, o in family], "alpha": rules.alpha, "n_tests": len(family)}
    return out


def summary(verdicts: dict) -> dict:
    """Counts of each verdict over the five claims."""
    return {v: sum(1 for c in CLAIMS if verdicts[c]["verdict"] == v) for v in (HOLDS, FAILS, UNDECIDED)}


def as_plain(x):
    """JSON-ready: numpy scalars to Python, NaN to None."""
    if isinstance(x, dict):
        return {k: as_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [as_plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and x != x:
        return None
    return x


# ---------------------------------------------------------------- results/numbers/verdicts.json


def document(tests: dict, decided: dict, rules: Rules) -> dict:
    """verdicts.json: per claim verdict, outcome, estimate, ci, power (and claim 4's baselines), the
    signed outcome's headline numbers, the silent zone, the headline numbers of the cohort and the rules."""
    data = tests["inputs"]
    doc = {}
    for claim in CLAIMS:
        d = decided[claim]
        entry = {k: d[k] for k in ("verdict", "outcome", "estimate", "ci", "power")}
        entry["reason"] = d["reason"][:1].upper() + d["reason"][1:]  # a sentence: readers and the paper print it as one
        entry["by_outcome"] = {
            o: {
                k: v.get(k)
                for k in ("verdict", "reason", "estimate", "ci", "powered", "p_hold", "p_refute", "p_hold_holm", "p_refute_holm")
            }
            | {"power": v.get("power")}
            for o, v in d["by_outcome"].items()
        }
        doc[claim] = entry
    routing = tests["claim4"]["accuracy"]
    if routing.get("available"):
        pooled, silent = routing["pooled"], routing["silent"]
        doc["claim4"] |= {
            "accuracy": pooled["per_prompt"]["accuracy"],
            "accuracy_ci": pooled["per_prompt"]["ci"],
            "baseline_mean_kld": pooled["mean_kld"]["accuracy"],
            "baseline_mean_kld_ci": pooled["mean_kld"]["ci"],
            "oracle_fixed": pooled["oracle_fixed"]["accuracy"],
            "chance": pooled["chance"],
            "n_routed": pooled["n_routed"],
            "n_pairs": pooled["n_pairs"],
            "silent_pairs_accuracy": silent["per_prompt"]["accuracy"],
            "silent_pairs_baseline_mean_kld": silent["mean_kld"]["accuracy"],
            "silent_pairs_n_routed": silent["n_routed"],
        }
    else:
        keys = (
            "accuracy",
            "accuracy_ci",
            "baseline_mean_kld",
            "baseline_mean_kld_ci",
            "oracle_fixed",
            "chance",
            "n_routed",
            "n_pairs",
            "silent_pairs_accuracy",
            "silent_pairs_baseline_mean_kld",
            "silent_pairs_n_routed",
        )
        doc["claim4"] |= dict.fromkeys(keys)
    doc["signed_outcome"] = outcome_headline(tests, "signed")
    doc["accuracy"] = outcome_headline(tests, "accuracy")
    doc["silent_zone"] = list(data.silent)
    doc["n_quants"] = len(data.quants)
    doc["n_silent"] = len(data.silent)
    doc["summary"] = summary(decided)
    doc["holm"] = decided["holm"]
    doc["rules"] = {k: getattr(rules, k) for k in Rules.__dataclass_fields__}
    if "robustness" in tests:
        rob = tests["robustness"]
        rob_decided = decide(rob, rules, ("claim1", "claim5"))
        doc["robustness"] = {
            "kld_rank_zone": {
                "k": len(rob["inputs"].silent),
                "members": list(rob["inputs"].silent),
                **{
                    c: {
                        "verdict": rob_decided[c]["verdict"],
                        "outcome": rob_decided[c]["outcome"],
                        "reason": rob_decided[c]["reason"],
                        "by_outcome": {o: v["verdict"] for o, v in rob_decided[c]["by_outcome"].items()},
                    }
                    for c in ("claim1", "claim5")
                },
                "holm": rob_decided["holm"],
            }
        }
    if "broad" in tests:
        broad = tests["broad"]
        decided_broad = decide(broad, rules, ("claim1", "claim2", "claim5"))
        doc.setdefault("robustness", {})["broad_composite"] = {
            "tasks": broad["tasks"],
            "n_silent": len(broad["inputs"].silent),
            **{
                c: {
                    "verdict": decided_broad[c]["verdict"],
                    "outcome": decided_broad[c]["outcome"],
                    "reason": decided_broad[c]["reason"],
                    "by_outcome": {o: v["verdict"] for o, v in decided_broad[c]["by_outcome"].items()},
                }
                for c in ("claim1", "claim2", "claim5")
            },
            "holm": decided_broad["holm"],
        }
    return as_plain(doc)


def outcome_headline(tests: dict, outcome: str) -> dict:
    """reliability full and in the zone, ρ(mean KLD, outcome) full and in the zone with p, and the most
    damaged quant's paired z, of one outcome (None where it is unavailable)."""
    test = tests["claim1"][outcome]
    if not test.get("available"):
        return {"available": False, "reason": test.get("reason")}
    full, silent = test["full"], test["silent"]
    return {
        "available": True,
        "reliability_full": test["power"]["full"]["reliability"],
        "reliability_full_ci": test["power"]["full"]["ci"],
        "reliability_silent": test["power"]["silent"]["reliability"],
        "reliability_silent_ci": test["power"]["silent"]["ci"],
        "items_needed_silent": test["power"]["silent"]["items_needed"],
        "rho_kld_mean_full": full["rho"],
        "rho_kld_mean_full_ci": [full["ci_low"], full["ci_high"]],
        "rho_kld_mean_full_p": full["p_perm"],
        "rho_kld_mean_silent": silent["rho"],
        "rho_kld_mean_silent_ci": [silent["ci_low"], silent["ci_high"]],
        "rho_kld_mean_silent_p": silent["p_perm"],
        "most_damaged": test["damage"]["model"],
        "most_damaged_z": test["damage"]["z"],
    }


def tables(tests: dict, decided: dict) -> dict:
    """The tables behind verdicts.json: one row per claim and outcome; the ρ(k) curve of both outcomes."""
    import pandas as pd

    rows = []
    for claim in CLAIMS:
        for outcome, v in decided[claim]["by_outcome"].items():
            power = v.get("power") or {}
            rows.append(
                {
                    "claim": claim,
                    "outcome": outcome,
                    "verdict": v["verdict"],
                    "estimate": v.get("estimate"),
                    "ci_low": (v.get("ci") or [None, None])[0],
                    "ci_high": (v.get("ci") or [None, None])[1],
                    "reliability": power.get("reliability"),
                    "n_quants": power.get("n_quants"),
                    "powered": v.get("powered"),
                    "p_hold": v.get("p_hold"),
                    "p_hold_holm": v.get("p_hold_holm"),
                    "p_refute": v.get("p_refute"),
                    "p_refute_holm": v.get("p_refute_holm"),
                    "reason": v["reason"],
                }
            )
    curves = [t["curve"] for t in tests["claim2"].values() if t.get("available")]
    curve = pd.concat(curves, ignore_index=True) if curves else None
    return {"claims": pd.DataFrame(rows), "rho_k": curve}


def headline(doc: dict) -> dict:
    """The few numbers a reader looks at first (what `dvc metrics show` prints for a published run):
    each claim's verdict and the outcome it rests on, and per outcome the full-cohort and silent-zone
    ρ with mean KLD, the silent zone's split-half reliability and the most damaged quant's z."""
    out = {"n_quants": doc["n_quants"], "n_silent": doc["n_silent"]}
    out.update({claim: {"verdict": doc[claim]["verdict"], "outcome": "+".join(doc[claim]["outcome"])} for claim in CLAIMS})
    for name, key in (("accuracy", "accuracy"), ("signed", "signed_outcome")):
        numbers = doc.get(key) or {}
        out[name] = {
            field: numbers.get(field)
            for field in ("rho_kld_mean_full", "rho_kld_mean_silent", "reliability_silent", "most_damaged_z")
        }
    return out
