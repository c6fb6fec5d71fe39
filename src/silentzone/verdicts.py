"""The decision rules: one verdict per claim of the paper (holds, does not hold, undecided), each a
tested function of the numbers the analyses wrote (results/numbers, results/tables). Science, not
presentation: nothing here knows Quarto; the Methods section prints the rules from the variables
`silentzone paper inputs` writes (silentzone.paper)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import SilentzoneError
from .formatting import NUMBER_WORDS, ci_text, count, distinct_texts, estimate_text, fmt_pct, is_number, join_words
from .stats import critical_rho


def need(raw: dict, namespace: str, dotted: str, source: str = "results/numbers"):
    """A number the verdicts or the prose cannot do without, with a one-line error naming it."""
    node = raw.get(namespace)
    if node is None:
        raise SilentzoneError(f"{source}/*-{namespace.replace('_', '-')}.json: missing; rerun its notebook (`dvc repro`)")
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SilentzoneError(
                f"{source}/*-{namespace.replace('_', '-')}.json: no key `{dotted}`; "
                f"the notebook must write it (or src/silentzone/verdicts.py must stop reading it)"
            )
        node = node[part]
    return node


@dataclass(frozen=True)
class Rules:
    """The thresholds of the decision rules; the Methods section prints them from _variables.yml."""

    alpha: float = 0.05  # 1 - stats.ci
    min_outside: int = 3  # quants the benchmark must tell from the reference for a ranking to exist
    paper_rho_full: float = 0.72  # the weaker of the paper's two full-cohort |rho| (Qwen)
    paper_rho_volume: float = 0.55  # the weaker of its two silent-zone |rho(KLD, volume)| (Devstral)
    auroc_useful: float = 0.70  # conventional "acceptable discrimination"
    min_prompts: int = 10  # failed and passed prompts a quant needs for its AUROC to count
    min_failure_quants: int = 3
    router_useful: float = 0.60  # a router right this often would be worth using
    min_routed: int = 1  # routed prompts a pair needs to count (notebook 04's min_disagreements)


@dataclass(frozen=True)
class Verdict:
    verdict: str  # holds | does not hold | undecided
    reason: str

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "reason": self.reason[:1].upper() + self.reason[1:],
            "holds": self.verdict == "holds",
            "fails": self.verdict == "does not hold",
            "undecided": self.verdict == "undecided",
        }


def too_few_check(n: int, who: str, paper_rho: float, alpha: float) -> tuple[bool, str]:
    """A `_first_reason` pair: true when n quants cannot make the paper's |ρ| significant."""
    crit = critical_rho(n, alpha)
    crit_text, paper_text = distinct_texts(crit, paper_rho)
    return (crit > paper_rho, f"with {who} only |ρ| ≥ {crit_text} can reach significance, more than the paper's {paper_text}")


def _first_reason(*checks: tuple[bool, str]) -> str | None:
    """Power checks in order; the first that fails explains why a claim is undecided. A new power
    number (a power analysis, a noise ceiling) is one more (condition, reason) pair."""
    for failed, reason in checks:
        if failed:
            return reason
    return None


def power_check(raw: dict) -> tuple[bool, str]:
    """The noise ceiling's verdict (notebook 07) as a `_first_reason` pair: a claim the benchmark
    was not powered to test is undecided, whatever its correlations say."""
    power = need(raw, "noise_ceiling", "power")
    return (not power.get("powered"), f"the benchmark is underpowered: {power.get('reason') or 'no reason recorded'}")


def verdict_claim1(raw: dict, rules: Rules) -> Verdict:
    full = need(raw, "fidelity_vs_score", "primary.full")
    silent = need(raw, "fidelity_vs_score", "primary.silent")
    n = int(need(raw, "fidelity_vs_score", "n_quants"))
    n_out = n - int(need(raw, "fidelity_vs_score", "n_silent"))
    why = _first_reason(
        (not is_number(full.get("rho")), "the full-cohort ρ is undefined"),
        (
            n_out < rules.min_outside,
            f"the benchmark tells {'none' if n_out == 0 else f'only {n_out}'} of the {n} quants "
            f"from the reference (at least {rules.min_outside} needed), so there is no measured "
            f"quality spread to rank",
        ),
        too_few_check(n, f"{n} quants", rules.paper_rho_full, rules.alpha),
        power_check(raw),
    )
    if why:
        return Verdict("undecided", why)
    p_full = full.get("p_holm", full.get("p_perm"))
    p_silent = silent.get("p_holm", silent.get("p_perm"))
    ranks_full = full["rho"] < 0 and is_number(p_full) and p_full < rules.alpha
    ranks_silent = is_number(silent.get("rho")) and is_number(p_silent) and p_silent < rules.alpha
    text = f"full cohort {estimate_text(full)}; silent zone {estimate_text(silent)}"
    if ranks_full and not ranks_silent:
        return Verdict("holds", text)
    if not ranks_full:
        return Verdict("does not hold", "mean KLD does not rank the full cohort: " + text)
    return Verdict("does not hold", "mean KLD still ranks the silent zone: " + text)


def sweep_zones(sweep) -> list[dict]:
    """The lowest-k zones whose ρ exists, smallest k first."""
    if sweep is None or sweep.empty:
        return []
    rows = sweep[(sweep["criterion"] == "lowest_k") & sweep["rho"].notna()].sort_values("threshold")
    return [
        {
            "k": int(r["threshold"]),
            "n": int(r["n"]),
            "rho": float(r["rho"]),
            "p_perm": None if math.isnan(r["p_perm"]) else float(r["p_perm"]),
            "ci_low": None if math.isnan(r["ci_low"]) else float(r["ci_low"]),
            "ci_high": None if math.isnan(r["ci_high"]) else float(r["ci_high"]),
        }
        for _, r in rows.iterrows()
    ]


def verdict_claim2(raw: dict, zones: list[dict], rules: Rules) -> Verdict:
    n = int(need(raw, "fidelity_vs_score", "n_quants"))
    n_out = n - int(need(raw, "fidelity_vs_score", "n_silent"))
    largest = zones[-1] if zones else None
    why = _first_reason(
        (
            len(zones) < 2,
            f"{count(len(zones), 'swept zone', words=True)} {'has' if len(zones) <= 1 else 'have'} "
            f"enough quants for a ρ (at least two are needed)",
        ),
        (
            n_out < rules.min_outside,
            f"the benchmark tells {'none' if n_out == 0 else f'only {n_out}'} of the {n} quants "
            f"from the reference, so no zone can show a ranking",
        ),
        (
            largest is not None and critical_rho(largest["n"], rules.alpha) > rules.paper_rho_full,
            f"the largest zone ({largest['n'] if largest else 0} quants) cannot reach significance at the paper's "
            f"|ρ| = {rules.paper_rho_full:.2f}",
        ),
        power_check(raw),
    )
    if why:
        return Verdict("undecided", why)
    small = zones[0]
    sig_large = largest["rho"] < 0 and largest["p_perm"] is not None and largest["p_perm"] < rules.alpha
    sig_small = small["p_perm"] is not None and small["p_perm"] < rules.alpha
    text = f"k = {small['k']}: {estimate_text(small)}; k = {largest['k']}: {estimate_text(largest)}"
    if sig_large and not sig_small:
        return Verdict("holds", text)
    return Verdict("does not hold", text)


def verdict_claim3(raw: dict, failure, rules: Rules) -> Verdict:
    available = need(raw, "failure_prediction", "prompt_kld_available")
    median = need(raw, "failure_prediction", "auroc_median")
    enough = 0
    if failure is not None and not failure.empty:
        rows = failure[(failure["task"] == "all") & failure["auroc"].notna()]
        enough = int(((rows["n_failed"] >= rules.min_prompts) & (rows["n_passed"] >= rules.min_prompts)).sum())
    why = _first_reason(
        (not available, "this cohort has no per-prompt KLD"),
        (
            enough < rules.min_failure_quants,
            f"{count(enough, 'quant', words=True)} {'has' if enough <= 1 else 'have'} at least {rules.min_prompts} failed "
            f"and {rules.min_prompts} passed prompts (at least {rules.min_failure_quants} needed)",
        ),
        (median is None, "no quant has an AUROC"),
    )
    if why:
        return Verdict("undecided", why)
    text = f"median AUROC {median:.2f} over the quants, against {rules.auroc_useful:.2f} for a useful detector"
    return Verdict("holds" if median < rules.auroc_useful else "does not hold", text)


def pooled_routing(routing, alpha: float, min_routed: int = 1) -> dict:
    """Every routed prompt of every pair pooled, with a Clopper-Pearson interval (an approximation:
    pairs share prompts, so the pooled prompts are not independent)."""
    from scipy import stats

    if routing is None or routing.empty:
        return {"n_routed": 0, "n_correct": 0, "accuracy": None, "ci_low": None, "ci_high": None}
    rows = routing[(routing["task"] == "all") & (routing["n_routed"] >= max(1, min_routed))]
    n, k = int(rows["n_routed"].sum()), int(rows["n_correct"].sum())
    if n == 0:
        return {"n_routed": 0, "n_correct": 0, "accuracy": None, "ci_low": None, "ci_high": None}
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return {"n_routed": n, "n_correct": k, "accuracy": k / n, "ci_low": low, "ci_high": high}


def verdict_claim4(pooled: dict, rules: Rules, prompt_kld: bool = True) -> Verdict:
    why = _first_reason(
        (not prompt_kld, "this cohort has no per-prompt KLD"),
        (
            pooled["n_routed"] == 0,
            f"no pair of quants has {rules.min_routed} or more prompts on which exactly one of them passes and their KLDs differ",
        ),
    )
    if why:
        return Verdict("undecided", why)
    text = (
        f"pooled accuracy {fmt_pct(pooled['accuracy'])}{ci_text(pooled['ci_low'], pooled['ci_high'], fmt_pct)} "
        f"over {pooled['n_routed']} routed prompts"
    )
    if pooled["ci_high"] < rules.router_useful:
        return Verdict("holds", text + f", below the {fmt_pct(rules.router_useful)} of a useful router")
    if pooled["ci_low"] >= rules.router_useful:
        return Verdict("does not hold", text + f", above the {fmt_pct(rules.router_useful)} of a useful router")
    return Verdict("undecided", text + f": the interval includes {fmt_pct(rules.router_useful)}, too few prompts to tell")


def verdict_claim5(raw: dict, rules: Rules) -> Verdict:
    volume = need(raw, "volume_direction", "volume.silent")
    direction = need(raw, "volume_direction", "direction.silent")
    n = int(volume.get("n") or 0)
    why = _first_reason(
        (not is_number(volume.get("rho")), "the silent-zone ρ of mean KLD with flip volume is undefined"),
        too_few_check(n, f"{n} quants in the silent zone", rules.paper_rho_volume, rules.alpha),
        power_check(raw),
    )
    if why:
        return Verdict("undecided", why)
    tracks_volume = volume["rho"] > 0 and volume.get("p_perm") is not None and volume["p_perm"] < rules.alpha
    tracks_direction = (
        is_number(direction.get("rho")) and direction.get("p_perm") is not None and direction["p_perm"] < rules.alpha
    )
    text = f"volume {estimate_text(volume)}; direction {estimate_text(direction)}"
    return Verdict("holds" if tracks_volume and not tracks_direction else "does not hold", text)


def verdict_summary(verdicts: dict) -> str:
    """ "two hold, one does not and two are undecided for lack of power" (only the non-zero parts)."""
    counts = {v: sum(1 for d in verdicts.values() if d["verdict"] == v) for v in ("holds", "does not hold", "undecided")}

    def word(n):
        if n == len(verdicts) and n > 1:
            return "all " + (NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n))
        return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)

    parts = []
    if counts["holds"]:
        parts.append(f"{word(counts['holds'])} {'holds' if counts['holds'] == 1 else 'hold'}")
    if counts["does not hold"]:
        parts.append(f"{word(counts['does not hold'])} {'does' if counts['does not hold'] == 1 else 'do'} not")
    if counts["undecided"]:
        parts.append(f"{word(counts['undecided'])} {'is' if counts['undecided'] == 1 else 'are'} undecided for lack of power")
    return join_words(parts)


def rules_from(params: dict) -> Rules:
    """alpha from stats.ci; the prompt and pair minimums are the notebooks' own, so the verdicts
    count what the figures show."""
    ci = float(params["stats"]["ci"])
    min_routed = params["notebooks"]["04-routing"]["min_disagreements"]
    return Rules(alpha=round(1 - ci, 10), min_prompts=Rules.min_prompts, min_routed=int(min_routed))
