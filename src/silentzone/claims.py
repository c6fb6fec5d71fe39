"""The tests behind the paper's five claims: for each claim (and, for claims 1, 2 and 5, each outcome —
accuracy and the signed outcome), the estimate, its interval, the p-values a rule reads and the power of
the very quants and outcome the test uses. Statistics only; silentzone.verdicts applies the rules.

Every correlation goes through stats.correlate_columns, every reliability through noise.test_power, each
with the generator of its own test (stats.test_rng: seeded from params and what the test is), so a test
prints the same numbers here, in the notebooks' tables and in the manuscript.

Each test returns `p_hold` (the p of the test whose rejection supports the claim) and `p_refute` (the p
of the test whose rejection contradicts it); verdicts Holm-adjusts each family across the claims.
A claim made of several parts holds only if every part does (an intersection–union test: p is the
largest of the parts' p-values); what contradicts it is its central part failing significantly.

  claim 1  KLD ranks the full cohort but not the silent zone: full-cohort ρ(primary, outcome) < 0 and
           significant; silent-zone ρ inside ±rho_margin (equivalence). Contradicted by a significant
           negative ρ in the zone.
  claim 2  ρ(k) over the zones of the k lowest-KLD quants (silent_zone.sweep_ks; selection on the
           predictor), judged on the zones no larger than the silent zone whose outcome is reliable:
           holds when the full cohort ranks and the largest of them shows equivalence; contradicted
           when ρ stays significantly negative in every one of them.
  claim 3  per-prompt KLD is a weak failure detector: the median AUROC over quants (bootstrap over
           quants) below auroc_useful; contradicted when it is at or above.
  claim 4  per-prompt KLD adds nothing to routing by the mean: its pooled accuracy gain over the
           mean-KLD router (same prompts; cluster bootstrap over prompts) below router_margin;
           contradicted when the gain is above 0.
  claim 5  in the silent zone KLD tracks the volume of disagreement (ρ > 0, significant) but not its
           direction (equivalence); contradicted when direction is tracked significantly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from . import analyses, noise, stats, zone
from .schema import COMPOSITE, COMPOSITE_ALL, MODEL, SIGNED, SIGNED_ALL, quant_names

if TYPE_CHECKING:
    from .config import Params

OUTCOMES = tuple(noise.OUTCOMES)  # ("accuracy", "signed")


@dataclass
class Inputs:
    """One cohort, ready for every test: the tables, the zone, the outcomes as matrices."""

    cohort: pd.DataFrame
    items: pd.DataFrame
    params: Params
    zone_table: pd.DataFrame
    quants: list[str]
    silent: list[str]
    outcomes: dict[str, noise.Outcomes | None] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # outcome -> why it is unavailable

    @property
    def alpha(self) -> float:
        return round(1 - self.params.stats.ci, 10)

    @property
    def primary(self) -> str:
        return self.params.stats.primary_variant

    def column(self, outcome: str) -> str:
        return noise.OUTCOMES[outcome][1]


def prepare(cohort: pd.DataFrame, items: pd.DataFrame, params: Params, zone_table: pd.DataFrame | None = None) -> Inputs:
    zone_table = zone.silent_zone(cohort, params, items=items) if zone_table is None else zone_table
    quants = quant_names(cohort)
    data = Inputs(cohort, items, params, zone_table, quants, zone.members(zone_table))
    for outcome, (item_column, cohort_column, _) in noise.OUTCOMES.items():
        if item_column not in items or items[item_column].isna().all() or cohort_column not in cohort:
            data.outcomes[outcome] = None
            data.missing[outcome] = (
                f"the item table has no {item_column} (no task with a gold log-probability, or ingested outcomes)"
            )
            continue
        data.outcomes[outcome] = noise.Outcomes.of(items, quants, column=item_column)
    return data


# ---------------------------------------------------------------- shared pieces


def correlation(data: Inputs, names: list[str], x: str, y: str, table: pd.DataFrame | None = None) -> dict:
    """ρ of two columns over `names` (stats.correlate_columns: its own draw, its equivalence p)."""
    table = data.cohort if table is None else table
    pair = table[table[MODEL].isin(names)].set_index(MODEL)[[x, y]].astype(float).dropna()
    return stats.correlate_columns(pair, x, y, data.params.stats_settings())


def power(data: Inputs, outcome: str, names: list[str]) -> dict:
    """noise.test_power of `outcome` across `names`, with the run's splits, level and threshold."""
    if data.outcomes.get(outcome) is None:
        return {
            "outcome": outcome,
            "n_quants": len(names),
            "reliability": None,
            "ci": [None, None],
            "items_needed": None,
            "n_items": 0,
            "powered": False,
            "reason": data.missing[outcome],
        }
    p = data.params
    return noise.test_power(
        data.outcomes[outcome],
        names,
        outcome,
        p.notebooks.noise_ceiling.n_splits,
        p.stats.ci,
        p.stats.min_n,
        p.seed,
        p.verdicts.min_reliability,
    )


def damage(data: Inputs, outcome: str) -> dict:
    """The most damaged quant on `outcome`: its paired Δ, SE and z = Δ/SE (noise.paired_se), and whether
    it sits at least verdicts.min_z SE below the reference — the benchmark sees damage at all."""
    outcomes = data.outcomes.get(outcome)
    if outcomes is None or not data.quants:
        return {
            "model": None,
            "delta": None,
            "se": None,
            "z": None,
            "sees_damage": False,
            "reason": data.missing.get(outcome, "no quants"),
        }
    delta, se = noise.paired_se(outcomes)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(se > 0, delta / np.where(se > 0, se, 1.0), np.nan)
    i = int(np.argmin(delta))
    out = {
        "model": outcomes.models[i],
        "delta": float(delta[i]),
        "se": float(se[i]),
        "z": None if np.isnan(z[i]) else float(z[i]),
    }
    min_z = data.params.verdicts.min_z
    if out["z"] is None:
        return {**out, "sees_damage": False, "reason": f"{out['model']} has no paired standard error"}
    sees = out["z"] <= -min_z
    where = f"the most damaged quant, {out['model']}, sits {abs(out['z']):.1f} paired SE below the reference"
    return {**out, "sees_damage": bool(sees), "reason": where + (f" (at least {min_z:g})" if sees else f", fewer than {min_z:g}")}


def p_negative(test: dict) -> float:
    """The permutation p of a correlation, counted only when ρ < 0 (1 otherwise)."""
    return float(test["p_perm"]) if test.get("rho") is not None and test["rho"] < 0 else 1.0


def p_positive(test: dict) -> float:
    return float(test["p_perm"]) if test.get("rho") is not None and test["rho"] > 0 else 1.0


def p_equiv(test: dict) -> float:
    return 1.0 if test.get("p_equiv") is None else float(test["p_equiv"])


# ---------------------------------------------------------------- claims 1 and 2: ranking, full and near the baseline


def claim1(data: Inputs, outcome: str) -> dict:
    col = data.column(outcome)
    if data.outcomes.get(outcome) is None:
        return {"outcome": outcome, "available": False, "reason": data.missing[outcome]}
    full = correlation(data, data.quants, data.primary, col)
    silent = correlation(data, data.silent, data.primary, col)
    return {
        "outcome": outcome,
        "available": True,
        "full": full,
        "silent": silent,
        "power": {"full": power(data, outcome, data.quants), "silent": power(data, outcome, data.silent)},
        "damage": damage(data, outcome),
        "p_hold": max(p_negative(full), p_equiv(silent)),
        # contradicted when KLD still ranks the zone (a full cohort that does not rank leaves it unheld)
        "p_refute": p_negative(silent),
    }


def curve(data: Inputs, outcome: str) -> pd.DataFrame:
    """ρ(primary, outcome) over the zones of the k lowest-KLD quants, k in silent_zone.sweep_ks (those
    that fit the cohort), each with its interval, p-values and the outcome's reliability across its k
    quants. Columns: outcome, k, n, rho, ci_low, ci_high, p_perm, p_equiv, reliability, rel_low,
    rel_high, items_needed, powered, refused."""
    rows = []
    col = data.column(outcome)
    for k in zone.sweep_ks(data.params, len(data.quants)):
        names = zone.lowest_k_members(data.cohort[data.cohort[MODEL].isin(data.quants)], data.primary, k)
        test = correlation(data, names, data.primary, col)
        pw = power(data, outcome, names)
        rows.append(
            {
                "outcome": outcome,
                "k": k,
                "n": test["n"],
                "rho": test["rho"],
                "ci_low": test["ci_low"],
                "ci_high": test["ci_high"],
                "p_perm": test["p_perm"],
                "p_equiv": test["p_equiv"],
                "reliability": pw["reliability"],
                "rel_low": pw["ci"][0],
                "rel_high": pw["ci"][1],
                "items_needed": pw["items_needed"],
                "powered": pw["powered"],
                "refused": test["refused"],
            }
        )
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


CURVE_COLUMNS = [
    "outcome",
    "k",
    "n",
    "rho",
    "ci_low",
    "ci_high",
    "p_perm",
    "p_equiv",
    "reliability",
    "rel_low",
    "rel_high",
    "items_needed",
    "powered",
    "refused",
]


def claim2(data: Inputs, outcome: str) -> dict:
    """The curve, and the zones it is judged on: those no larger than the silent zone (the near-baseline
    region the claim is about) whose outcome is reliable. Supported when the full cohort ranks and the
    largest of them shows equivalence; contradicted when ρ is significantly negative in every one."""
    if data.outcomes.get(outcome) is None:
        return {"outcome": outcome, "available": False, "reason": data.missing[outcome]}
    points = curve(data, outcome)
    reach = max(len(data.silent), int(points["k"].min()) if len(points) else 0)
    near = points[points["powered"] & points["rho"].notna() & (points["k"] <= reach)]
    full = correlation(data, data.quants, data.primary, data.column(outcome))
    tested = None if near.empty else near.iloc[-1]
    ranks = [p_negative({"rho": r, "p_perm": p}) for r, p in zip(near["rho"], near["p_perm"])]
    return {
        "outcome": outcome,
        "available": True,
        "curve": points,
        "full": full,
        "power": {"full": power(data, outcome, data.quants), "n_reliable_zones": int(len(near))},
        "damage": damage(data, outcome),
        "n_silent": len(data.silent),
        "reach": reach,
        "tested": None if tested is None else _point(tested),
        "smallest_reliable": None if near.empty else _point(near.iloc[0]),
        "p_hold": 1.0 if tested is None else max(p_negative(full), p_equiv({"p_equiv": tested["p_equiv"]})),
        "p_refute": max(ranks) if ranks else 1.0,
    }


def _point(row: pd.Series) -> dict:
    return {
        k: (None if pd.isna(row[k]) else (int(row[k]) if k in ("k", "n") else float(row[k])))
        for k in ("k", "n", "rho", "ci_low", "ci_high", "p_perm", "p_equiv", "reliability")
    }


# ---------------------------------------------------------------- claim 3: failure prediction


def claim3(data: Inputs) -> dict:
    v = data.params.verdicts
    if not _has_prompt_kld(data):
        return {"outcome": "accuracy", "available": False, "reason": "this cohort has no per-prompt KLD"}
    fp = analyses.failure_prediction(data.items, data.params.stats_settings())
    rows = fp[(fp["task"] == "all") & fp["auroc"].notna() & (fp["n_failed"] >= v.min_prompts) & (fp["n_passed"] >= v.min_prompts)]
    aurocs = rows["auroc"].to_numpy(float)
    out = {"outcome": "accuracy", "available": True, "n_quants": int(len(aurocs)), "models": rows[MODEL].tolist()}
    if len(aurocs) < v.min_failure_quants:
        return {**out, "median": None, "ci": [None, None], "p_hold": 1.0, "p_refute": 1.0}
    s = data.params.stats_settings()
    rng = stats.test_rng(s["seed"], "median AUROC", *sorted(out["models"]))
    boot = np.median(aurocs[rng.integers(0, len(aurocs), (s["n_bootstrap"], len(aurocs)))], axis=1)
    tail = (1 - s["ci"]) / 2
    total = len(boot) + 1
    return {
        **out,
        "median": float(np.median(aurocs)),
        "ci": [float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail))],
        "p_hold": float((np.count_nonzero(boot >= v.auroc_useful) + 1) / total),
        "p_refute": float((np.count_nonzero(boot < v.auroc_useful) + 1) / total),
    }


def _has_prompt_kld(data: Inputs) -> bool:
    return bool(data.items.loc[data.items[MODEL].isin(data.quants), "prompt_kld"].notna().any())


# ---------------------------------------------------------------- claim 4: routing against its baselines


def claim4(data: Inputs) -> dict:
    if not _has_prompt_kld(data):
        return {"outcome": "accuracy", "available": False, "reason": "this cohort has no per-prompt KLD"}
    min_routed = data.params.notebooks.routing.min_disagreements
    all_pairs = [(a, b) for i, a in enumerate(sorted(data.quants)) for b in sorted(data.quants)[i + 1 :]]
    routed = analyses.routed_prompts(data.items, data.cohort, data.primary, all_pairs)
    counts = routed.groupby(["model_a", "model_b"]).size()
    kept = counts[counts >= min_routed].index
    routed = routed.set_index(["model_a", "model_b"]).loc[kept].reset_index() if len(kept) else routed.iloc[:0]
    silent = set(data.silent)
    silent_routed = routed[routed["model_a"].isin(silent) & routed["model_b"].isin(silent)]
    pooled = routing_summary(data, routed, "all pairs")
    return {
        "outcome": "accuracy",
        "available": pooled["n_routed"] > 0,
        "reason": "" if pooled["n_routed"] else f"no pair of quants has {min_routed} or more routed prompts",
        "pooled": pooled,
        "silent": routing_summary(data, silent_routed, "silent-zone pairs"),
        "p_hold": pooled["p_hold"],
        "p_refute": pooled["p_refute"],
    }


def routing_summary(data: Inputs, routed: pd.DataFrame, label: str) -> dict:
    """Pooled accuracy of each router on `routed` prompts with cluster-bootstrap intervals over prompts,
    the per-prompt router's gain over the mean-KLD router, and the p-values of claim 4's rule."""
    s, margin = data.params.stats_settings(), data.params.verdicts.router_margin
    n = len(routed)
    out = {
        "pairs": label,
        "n_pairs": int(routed[["model_a", "model_b"]].drop_duplicates().shape[0]) if n else 0,
        "n_routed": int(n),
        "n_prompts": int(routed[["task", "item_id"]].drop_duplicates().shape[0]) if n else 0,
        "chance": 0.5,
    }
    if n == 0:
        empty = {"accuracy": None, "ci": [None, None]}
        return {
            **out,
            "per_prompt": empty,
            "mean_kld": empty,
            "oracle_fixed": empty,
            "gain": empty,
            "gain_ci_2alpha": [None, None],
            "p_hold": 1.0,
            "p_refute": 1.0,
        }
    rng = stats.test_rng(s["seed"], "routing", label, ",".join(sorted(set(routed["model_a"]) | set(routed["model_b"]))))
    boot = analyses.cluster_bootstrap_accuracy(routed, s["n_bootstrap"], rng)
    tail = (1 - s["ci"]) / 2
    alpha = 1 - s["ci"]

    def summary(name, point):
        return {"accuracy": float(point), "ci": [float(np.quantile(boot[name], tail)), float(np.quantile(boot[name], 1 - tail))]}

    acc = {r: routed[r].mean() for r in ("per_prompt", "mean_kld", "oracle_fixed")}
    total = len(boot["gain"]) + 1
    return {
        **out,
        **{r: summary(r, acc[r]) for r in acc},
        "gain": summary("gain", acc["per_prompt"] - acc["mean_kld"]),
        "gain_ci_2alpha": [float(np.quantile(boot["gain"], alpha)), float(np.quantile(boot["gain"], 1 - alpha))],
        "p_hold": float((np.count_nonzero(boot["gain"] >= margin) + 1) / total),
        "p_refute": float((np.count_nonzero(boot["gain"] <= 0) + 1) / total),
    }


# ---------------------------------------------------------------- claim 5: volume and direction


def claim5(data: Inputs, outcome: str) -> dict:
    if data.outcomes.get(outcome) is None:
        return {"outcome": outcome, "available": False, "reason": data.missing[outcome]}
    table = flip_table(data, outcome)
    volume = correlation(data, data.silent, data.primary, "volume_rate", table)
    direction = correlation(data, data.silent, data.primary, "direction", table)
    return {
        "outcome": outcome,
        "available": True,
        "volume": volume,
        "direction": direction,
        "power": flip_power(data, outcome, data.silent),
        "p_hold": max(p_positive(volume), p_equiv(direction)),
        # contradicted when KLD tracks direction, either way (volume not tracked leaves it unheld)
        "p_refute": 1.0 if direction["p_perm"] is None else float(direction["p_perm"]),
    }


def flip_table(data: Inputs, outcome: str) -> pd.DataFrame:
    """Per quant: the primary variant, composite flip volume (volume_rate) and direction of `outcome`."""
    flips = analyses.flips(data.items) if outcome == "accuracy" else analyses.signed_flips(data.items)
    comp = flips[flips["task"] == COMPOSITE][[MODEL, "volume_rate", "direction"]]
    return data.cohort[[MODEL, data.primary]].merge(comp, on=MODEL, how="inner")


def flip_power(data: Inputs, outcome: str, names: list[str]) -> dict:
    """Split-half reliability across `names` of flip volume and of direction (noise.ratio_reliability),
    each against verdicts.min_reliability."""
    outcomes = data.outcomes[outcome]
    cols = [outcomes.models.index(m) for m in names]
    d = {t: outcomes.blocks[t][:, cols] - outcomes.reference[t][:, None] for t in outcomes.tasks}
    numerators = {"volume": {t: np.abs(x) for t, x in d.items()}, "direction": {t: np.clip(x, 0, None) for t, x in d.items()}}
    denominators = {"volume": {t: np.ones_like(x) for t, x in d.items()}, "direction": {t: np.abs(x) for t, x in d.items()}}
    p, out = data.params, {}
    for what in ("volume", "direction"):
        rng = stats.test_rng(p.seed, "split-half", outcome, what, ",".join(sorted(names)))
        s = noise.ratio_reliability(numerators[what], denominators[what], p.notebooks.noise_ceiling.n_splits, p.stats.ci, rng)
        row = {
            "n_quants": len(names),
            "n_items": sum(x.shape[0] for x in d.values()),
            "reliability": s["reliability"],
            "low": s["low"],
            "high": s["high"],
            "refused": None if s["reliability"] is not None else "every split degenerate",
        }
        out[what] = noise.reliability_power(row, f"{outcome} flip {what}", p.verdicts.min_reliability)
    out["powered"] = out["volume"]["powered"] and out["direction"]["powered"]
    return out


# ---------------------------------------------------------------- all of them


def all_tests(cohort: pd.DataFrame, items: pd.DataFrame, params: Params, zone_table: pd.DataFrame | None = None) -> dict:
    """Every claim's tests on one cohort: {"inputs": Inputs, "claim1": {outcome: test}, ...}."""
    data = prepare(cohort, items, params, zone_table)
    return {
        "inputs": data,
        "claim1": {o: claim1(data, o) for o in OUTCOMES},
        "claim2": {o: claim2(data, o) for o in OUTCOMES},
        "claim3": {"accuracy": claim3(data)},
        "claim4": {"accuracy": claim4(data)},
        "claim5": {o: claim5(data, o) for o in OUTCOMES},
    }


def robustness_tests(cohort: pd.DataFrame, items: pd.DataFrame, params: Params, silent_size: int) -> dict:
    """Claims 1 and 5 again with the silent zone replaced by the `silent_size` quants of lowest mean KLD:
    a zone selected on the predictor, not on the outcome (the paired-bootstrap zone keeps the quants
    whose score moved least, which restricts the outcome's range and so weakens any correlation)."""
    zone_table = zone.silent_zone(cohort, params, items=items, criterion="lowest_k", k=max(1, silent_size))
    data = prepare(cohort, items, params, zone_table)
    return {"inputs": data, "claim1": {o: claim1(data, o) for o in OUTCOMES}, "claim5": {o: claim5(data, o) for o in OUTCOMES}}


def broad_tests(cohort: pd.DataFrame, items: pd.DataFrame, params: Params) -> dict:
    """Claims 1, 2 and 5 on the broader composite of every benchmarked task (schema.COMPOSITE_ALL and
    SIGNED_ALL in place of the composite and the signed outcome, every item, its own silent zone)."""
    broad = cohort.assign(**{COMPOSITE: cohort[COMPOSITE_ALL]})
    if SIGNED_ALL in cohort:
        broad[SIGNED] = cohort[SIGNED_ALL]
    data = prepare(broad, items, params)
    return {
        "inputs": data,
        "tasks": sorted(items["task"].unique()),
        **{
            claim: {o: fn(data, o) for o in OUTCOMES}
            for claim, fn in (("claim1", claim1), ("claim2", claim2), ("claim5", claim5))
        },
    }
