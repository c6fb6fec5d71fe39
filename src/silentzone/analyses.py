"""Item-level analyses: flips against the reference (volume and direction), their correlation
with the fidelity variants, per-prompt failure prediction and KLD routing between models.

Inputs are the item table (model, task, item_id, correct, prompt_kld, ...; the reference's model
name is schema.REFERENCE) and the cohort table; outputs are tidy DataFrames, one row per result.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from scipy.stats import beta, binom, rankdata

from . import stats
from .errors import SilentzoneError
from .progress import progress
from .schema import COMPOSITE, MODEL, REFERENCE, quant_names

FLIP_COLUMNS = [
    MODEL,
    "task",
    "n_items",
    "leapfrogs",
    "drops",
    "volume",
    "volume_rate",
    "direction",
    "score_q",
    "score_ref",
    "delta",
]
FAILURE_COLUMNS = [
    MODEL,
    "task",
    "n_failed",
    "n_passed",
    "gm_failed",
    "gm_passed",
    "gm_ratio",
    "ci_low",
    "ci_high",
    "auroc",
    "refused",
]
ROUTING_COLUMNS = [
    "model_a",
    "model_b",
    "task",
    "n_disagree",
    "n_ties",
    "n_routed",
    "n_correct",
    "accuracy",
    "ci_low",
    "ci_high",
    "p_binom",
    "refused",
]


def outcome_table(items: pd.DataFrame, column: str = "correct") -> pd.DataFrame:
    """Wide table (task, item_id) × model of one per-item outcome: `correct` (bool), or a numeric one
    such as `gold_logprob` (tasks without it, whose every value is NaN — code — are left out). One-line
    errors for a duplicate row or a model without an outcome for some item (every model must answer
    every item)."""
    stats.require_columns(items, [MODEL, "task", "item_id", column], "item table")
    dupes = items.duplicated([MODEL, "task", "item_id"])
    if dupes.any():
        first = items[dupes].iloc[0]
        raise SilentzoneError(
            f"item table: duplicate row for {first[MODEL]} {first['task']}/{first['item_id']}; keep one outcome per item"
        )
    wide = items.pivot(index=["task", "item_id"], columns=MODEL, values=column)
    if column != "correct":
        wide = wide.astype(float)
        empty = wide.isna().all(axis=1).groupby(level="task").all()
        wide = wide[~wide.index.get_level_values("task").isin(empty[empty].index)]
        return _no_gaps(wide, column)
    return _no_gaps(wide, column).astype(bool)


def _no_gaps(wide: pd.DataFrame, column: str) -> pd.DataFrame:
    gaps = wide.isna()
    if gaps.any().any():
        model = gaps.any().idxmax()
        task, item = gaps.index[gaps[model].to_numpy().argmax()]
        raise SilentzoneError(f"item table: model {model!r} has no `{column}` for {task}/{item}; every model needs every item")
    return wide


def flips(items: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Leapfrogs L (q right, R wrong), drops D (R right, q wrong) per quant and task.

    volume = L + D, volume_rate = volume / n_items, direction f = L / volume (NaN when volume = 0:
    no flips, no direction). Per task the identity delta = score_q − score_R = (L − D)/N =
    volume·(2f − 1)/N holds exactly. Rows with task "composite" pool the tasks: volume_rate =
    Σ volume / Σ N, direction = Σ L / Σ volume, score_q / score_ref / delta = mean over tasks (the
    composite's definition; equal to (ΣL − ΣD)/ΣN only when tasks have equal N).
    """
    wide = outcome_table(items)
    if reference not in wide:
        raise SilentzoneError(f"item table: no rows for model {reference!r}; flips are counted against the reference")
    ref = wide[reference]
    rows = []
    for model in sorted(m for m in wide.columns if m != reference):
        q = wide[model]
        per_task = pd.DataFrame(
            {
                "n_items": q.groupby(level="task").size(),
                "leapfrogs": (q & ~ref).groupby(level="task").sum(),
                "drops": (~q & ref).groupby(level="task").sum(),
                "score_q": q.groupby(level="task").mean(),
                "score_ref": ref.groupby(level="task").mean(),
            }
        ).reset_index()
        composite = {
            "task": COMPOSITE,
            **per_task[["n_items", "leapfrogs", "drops"]].sum().to_dict(),
            "score_q": per_task["score_q"].mean(),
            "score_ref": per_task["score_ref"].mean(),
        }
        block = pd.concat([per_task, pd.DataFrame([composite])], ignore_index=True)
        block.insert(0, MODEL, model)
        rows.append(block)
    out = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=FLIP_COLUMNS)
    out[["n_items", "leapfrogs", "drops"]] = out[["n_items", "leapfrogs", "drops"]].astype(np.int64)
    out["volume"] = out["leapfrogs"] + out["drops"]
    out["volume_rate"] = out["volume"] / out["n_items"]
    out["direction"] = (out["leapfrogs"] / out["volume"].where(out["volume"] > 0)).astype(float)
    is_task = out["task"] != COMPOSITE
    out["delta"] = np.where(is_task, (out["leapfrogs"] - out["drops"]) / out["n_items"], out["score_q"] - out["score_ref"])
    return out[FLIP_COLUMNS]


def signed_flips(items: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """The flip decomposition of the signed outcome: per quant and task, the paired change of the gold
    answer's log-probability Δ_i = gold_logprob_q − gold_logprob_R, split into its gains (Δ > 0) and
    losses: volume = ΣΔ⁺ + Σ|Δ⁻| (how far the quant moves, whichever way; volume_rate = volume/N = mean
    |Δ|), direction = ΣΔ⁺/volume (the share of that movement toward the gold answer), delta = mean Δ;
    the identity delta = volume_rate·(2·direction − 1) holds exactly, as for flips.
    Task "composite" pools the tasks that have the outcome (volume and direction over all their items;
    delta the mean of the task deltas, the signed composite's definition). Same columns as `flips`,
    with leapfrogs/drops the counts of items moving up/down and score_q/score_ref the mean gold
    log-probabilities."""
    wide = outcome_table(items, "gold_logprob")
    if reference not in wide:
        raise SilentzoneError(f"item table: no rows for model {reference!r}; the signed outcome is paired with the reference")
    ref = wide[reference]
    rows = []
    for model in sorted(m for m in wide.columns if m != reference):
        d = wide[model] - ref
        by_task = d.groupby(level="task")
        per_task = pd.DataFrame(
            {
                "n_items": by_task.size(),
                "leapfrogs": (d > 0).groupby(level="task").sum(),
                "drops": (d < 0).groupby(level="task").sum(),
                "gain": d.clip(lower=0).groupby(level="task").sum(),
                "loss": (-d).clip(lower=0).groupby(level="task").sum(),
                "score_q": wide[model].groupby(level="task").mean(),
                "score_ref": ref.groupby(level="task").mean(),
            }
        ).reset_index()
        composite = {
            "task": COMPOSITE,
            **per_task[["n_items", "leapfrogs", "drops", "gain", "loss"]].sum().to_dict(),
            "score_q": per_task["score_q"].mean(),
            "score_ref": per_task["score_ref"].mean(),
            "delta": ((per_task["gain"] - per_task["loss"]) / per_task["n_items"]).mean(),
        }
        per_task["delta"] = (per_task["gain"] - per_task["loss"]) / per_task["n_items"]
        block = pd.concat([per_task, pd.DataFrame([composite])], ignore_index=True)
        block.insert(0, MODEL, model)
        rows.append(block)
    if not rows:
        return pd.DataFrame(columns=FLIP_COLUMNS)
    out = pd.concat(rows, ignore_index=True)
    out[["n_items", "leapfrogs", "drops"]] = out[["n_items", "leapfrogs", "drops"]].astype(np.int64)
    out["volume"] = out["gain"] + out["loss"]
    out["volume_rate"] = out["volume"] / out["n_items"]
    out["direction"] = (out["gain"] / out["volume"].where(out["volume"] > 0)).astype(float)
    return out[FLIP_COLUMNS]


def flip_correlations(
    cohort: pd.DataFrame, flip_table: pd.DataFrame, variants: list[str], settings: dict, zones: dict[str, list[str]] | None = None
) -> pd.DataFrame:
    """Spearman of each variant with flip volume (volume_rate) and direction, per task and
    composite, in each zone. Quants whose direction is NaN (no flips) drop out of that pair.
    Returns stats.correlation_table's columns with target = "volume:<task>" / "direction:<task>"
    (a flip table without quants gives refused rows for the composite)."""
    wide = flip_table.pivot(index=MODEL, columns="task", values=["volume_rate", "direction"])
    tasks = [t for t in flip_table["task"].unique() if t != COMPOSITE] + [COMPOSITE]
    targets = [f"{'volume' if m == 'volume_rate' else m}:{t}" for m in ("volume_rate", "direction") for t in tasks]
    wide.columns = [f"{'volume' if m == 'volume_rate' else m}:{t}" for m, t in wide.columns]
    table = cohort[[MODEL, *variants]].merge(wide.reindex(columns=targets), left_on=MODEL, right_index=True, how="inner")
    if zones is None:
        zones = {"full": quant_names(cohort)}
    return stats.correlation_table(table, variants, targets, settings, zones)


def auroc(failed, passed) -> float:
    """P(KLD of a failed prompt > KLD of a passed one), ties counted half: U_failed / (n_f · n_p)."""
    failed, passed = np.asarray(failed, float), np.asarray(passed, float)
    ranks = rankdata(np.concatenate([failed, passed]))
    u_failed = ranks[: len(failed)].sum() - len(failed) * (len(failed) + 1) / 2
    return float(u_failed / (len(failed) * len(passed)))


def _gm_ratio_bootstrap(log_failed: np.ndarray, log_passed: np.ndarray, n_bootstrap: int, rng) -> np.ndarray:
    """Bootstrap of exp(mean log KLD failed − mean log KLD passed), resampling each group's items
    (failed, then passed) with replacement, so both group sizes stay fixed."""
    f = stats.resample_means(log_failed, n_bootstrap, rng)  # log_failed[rng.integers(0, n, (B, n))].mean(axis=1)
    p = stats.resample_means(log_passed, n_bootstrap, rng)
    return np.exp(f - p)


def _quant_klds(items: pd.DataFrame, reference: str) -> pd.DataFrame:
    """The non-reference rows, after checking every prompt_kld is a number ≥ 0."""
    stats.require_columns(items, [MODEL, "task", "item_id", "correct", "prompt_kld"], "item table")
    quants = items[items[MODEL] != reference]
    bad = quants[quants["prompt_kld"].isna() | (quants["prompt_kld"] < 0)]
    if len(bad):
        row = bad.iloc[0]
        raise SilentzoneError(
            f"item table: prompt_kld of {row[MODEL]} {row['task']}/{row['item_id']} is {row['prompt_kld']}; rerun its bench stage"
        )
    return quants


def failure_prediction(items: pd.DataFrame, settings: dict, reference: str = REFERENCE) -> pd.DataFrame:
    """Does per-prompt KLD predict which prompts a quant fails? Per model and task, and per model
    over all tasks (task "all"): geometric mean of prompt_kld over failed / over passed items
    (gm_ratio, > 1 = failures sit where the quant is further from the reference) with a percentile
    bootstrap CI over items, and AUROC of prompt_kld as a failure score. Refused (with a reason)
    when a group is empty or a KLD is 0 (its log is undefined)."""
    quants = _quant_klds(items, reference)
    rng = np.random.default_rng(settings["seed"])
    alpha = (1 - settings["ci"]) / 2
    rows = []
    # one pass over the table (a mask per model would read all of it once per model: quadratic in quants)
    by_model = quants.groupby(MODEL, sort=True)
    for model, of_model in progress(by_model, "failure prediction", total=by_model.ngroups, unit="model"):
        groups = [(t, g) for t, g in of_model.groupby("task", sort=True)] + [("all", of_model)]
        for task, g in groups:
            kld, correct = g["prompt_kld"].to_numpy(float), g["correct"].to_numpy(bool)
            row = {
                MODEL: model,
                "task": task,
                "n_failed": int((~correct).sum()),
                "n_passed": int(correct.sum()),
                "gm_failed": None,
                "gm_passed": None,
                "gm_ratio": None,
                "ci_low": None,
                "ci_high": None,
                "auroc": None,
                "refused": None,
            }
            if row["n_failed"] == 0 or row["n_passed"] == 0:
                row["refused"] = f"no {'failed' if row['n_failed'] == 0 else 'passed'} items"
            elif (kld == 0).any():
                row["refused"] = f"{int((kld == 0).sum())} prompts with KLD exactly 0 (geometric mean undefined)"
            else:
                logs = np.log(kld)
                lf, lp = logs[~correct], logs[correct]
                boot = _gm_ratio_bootstrap(lf, lp, settings["n_bootstrap"], rng)
                low, high = np.quantile(boot, [alpha, 1 - alpha])
                row.update(
                    gm_failed=float(np.exp(lf.mean())),
                    gm_passed=float(np.exp(lp.mean())),
                    gm_ratio=float(np.exp(lf.mean() - lp.mean())),
                    ci_low=float(low),
                    ci_high=float(high),
                    auroc=auroc(kld[~correct], kld[correct]),
                )
            rows.append(row)
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS)


def routing(items: pd.DataFrame, settings: dict, reference: str = REFERENCE) -> pd.DataFrame:
    """KLD as a router between two quants: on disagreement prompts (exactly one of the pair passes)
    pick the model with the lower prompt_kld; accuracy = share of picks that passed (chance 50%).
    One row per pair (model_a < model_b) and task, plus task "all". Prompts where both KLDs are
    equal are not routed (n_ties). CI: Clopper–Pearson exact binomial; p_binom: two-sided
    binomial test of accuracy = 0.5. The reference (no prompt_kld) is not routed."""
    quants = _quant_klds(items, reference)
    models = sorted(quants[MODEL].unique())
    if len(models) < 2:
        raise SilentzoneError(f"item table: routing needs at least two quants with prompt_kld, found {len(models)}")
    outcomes = outcome_table(quants)
    correct = outcomes[models].to_numpy()
    kld = quants.pivot(index=["task", "item_id"], columns=MODEL, values="prompt_kld").loc[outcomes.index, models].to_numpy(float)
    task_of_item = outcomes.index.get_level_values("task")
    tasks = sorted(task_of_item.unique())
    groups = [(t, np.asarray(task_of_item == t)) for t in tasks] + [("all", np.ones(len(task_of_item), bool))]
    rows = []
    n_pairs = len(models) * (len(models) - 1) // 2
    for i, j in progress(itertools.combinations(range(len(models)), 2), "routing", total=n_pairs, unit="pair"):
        disagree = correct[:, i] != correct[:, j]
        routed = disagree & (kld[:, i] != kld[:, j])
        good = routed & np.where(kld[:, i] < kld[:, j], correct[:, i], correct[:, j])
        for task, in_task in groups:
            rows.append(
                {
                    "model_a": models[i],
                    "model_b": models[j],
                    "task": task,
                    "n_disagree": int((disagree & in_task).sum()),
                    "n_ties": int((disagree & ~routed & in_task).sum()),
                    "n_routed": int((routed & in_task).sum()),
                    "n_correct": int((good & in_task).sum()),
                }
            )
    out = pd.DataFrame(rows)
    k, n = out["n_correct"].to_numpy(), out["n_routed"].to_numpy()
    alpha = (1 - settings["ci"]) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        out["accuracy"] = np.where(n > 0, k / np.maximum(n, 1), np.nan)
        # Clopper–Pearson bounds and the two-sided binomial p at 0.5 (symmetric), vectorised over rows
        out["ci_low"] = np.where(k > 0, beta.ppf(alpha, k, n - k + 1), 0.0)
        out["ci_high"] = np.where(k < n, beta.ppf(1 - alpha, k + 1, n - k), 1.0)
        out["p_binom"] = np.minimum(1.0, 2 * binom.cdf(np.minimum(k, n - k), n, 0.5))
    empty = n == 0
    out.loc[empty, ["accuracy", "ci_low", "ci_high", "p_binom"]] = np.nan
    out["refused"] = np.where(empty, "no disagreement prompts with distinct KLD", None)
    return out


# ---------------------------------------------------------------- routing against its baselines

ROUTER_COLUMNS = ["pairs", "n_pairs", "n_routed", "router", "accuracy", "ci_low", "ci_high"]


def routed_prompts(items: pd.DataFrame, cohort: pd.DataFrame, primary: str, pairs, reference: str = REFERENCE) -> pd.DataFrame:
    """Every routed prompt of every pair in `pairs` (model_a, model_b): one row per (pair, prompt) where
    exactly one of the two passes and their per-prompt KLDs differ, with what each router picks there:
    `per_prompt` (the lower per-prompt KLD), `mean_kld` (the quant with the lower cohort mean KLD,
    `primary`: the cohort-level ranking, the same pick on every prompt of the pair) and `oracle_fixed`
    (the quant of the pair that passes more of the pair's routed prompts: the best any fixed choice can
    do). Columns: model_a, model_b, task, item_id, per_prompt, mean_kld, oracle_fixed (1 = that router
    picked the quant that passed)."""
    quants = _quant_klds(items, reference)
    correct = outcome_table(quants)
    kld = quants.pivot(index=["task", "item_id"], columns=MODEL, values="prompt_kld").loc[correct.index]
    mean = cohort.set_index(MODEL)[primary].astype(float)
    frames = []
    for a, b in pairs:
        ca, cb = correct[a].to_numpy(), correct[b].to_numpy()
        ka, kb = kld[a].to_numpy(float), kld[b].to_numpy(float)
        routed = (ca != cb) & (ka != kb)
        if not routed.any():
            continue
        pick_a_prompt = ka < kb
        pick_a_mean = mean[a] < mean[b] if mean[a] != mean[b] else a < b  # a tie in the mean: the first name, fixed
        per_prompt = np.where(pick_a_prompt, ca, cb)[routed]
        mean_pick = (ca if pick_a_mean else cb)[routed]
        oracle = (ca if ca[routed].sum() >= cb[routed].sum() else cb)[routed]
        index = correct.index[routed]
        frames.append(
            pd.DataFrame(
                {
                    "model_a": a,
                    "model_b": b,
                    "task": index.get_level_values("task"),
                    "item_id": index.get_level_values("item_id"),
                    "per_prompt": per_prompt.astype(np.int64),
                    "mean_kld": mean_pick.astype(np.int64),
                    "oracle_fixed": oracle.astype(np.int64),
                }
            )
        )
    columns = ["model_a", "model_b", "task", "item_id", "per_prompt", "mean_kld", "oracle_fixed"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def cluster_bootstrap_accuracy(routed: pd.DataFrame, n_bootstrap: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Bootstrap of each router's pooled accuracy, resampling prompts (task, item_id) — the clusters:
    a prompt routed in many pairs enters every resample with all of its pairs, so the interval respects
    that pairs share prompts. Returns {router: accuracies (n_bootstrap,)} and "gain" = per_prompt −
    mean_kld, paired within each resample."""
    keys = pd.MultiIndex.from_frame(routed[["task", "item_id"]])
    codes, uniques = pd.factorize(keys)
    n = len(uniques)
    per_prompt = np.bincount(codes, minlength=n).astype(float)
    sums = {
        r: np.bincount(codes, weights=routed[r].to_numpy(float), minlength=n) for r in ("per_prompt", "mean_kld", "oracle_fixed")
    }
    out = {r: np.empty(n_bootstrap) for r in (*sums, "gain")}
    chunk = max(1, 2_000_000 // max(n, 1))
    for start in range(0, n_bootstrap, chunk):
        stop = min(n_bootstrap, start + chunk)
        draws = rng.integers(0, n, (stop - start, n))
        weights = np.stack([np.bincount(row, minlength=n) for row in draws]).astype(float)
        total = weights @ per_prompt
        for r, s in sums.items():
            out[r][start:stop] = (weights @ s) / total
        out["gain"][start:stop] = out["per_prompt"][start:stop] - out["mean_kld"][start:stop]
    return out
