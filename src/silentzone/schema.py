"""The tables every part of silentzone exchanges: names, column sets, the composite, the writers.

One naming scheme everywhere (the pipeline, ingest, the analyses):
  - a model of the study (the reference or a quant) is `model`, in the item table and the cohort table
    alike; the reference is the row whose `model` is REFERENCE (and `is_reference` is true);
  - per-token columns follow llama.cpp's base-vs-quant reading with R for the reference and q for
    the quant (`nll_R`, `nll_q`, `top1`): the fidelity stage's names, so no stored table changes;
  - a task's score is `score_<task>` (share of items correct), the composite the unweighted mean of
    the task scores; the signed outcome is `signed_<task>` (mean paired change of the gold answer's
    log-probability against the reference, silentzone.bench.outcome) and `signed` its unweighted mean
    over the tasks that have one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

REFERENCE = "reference"
MODEL = "model"

# per-token fidelity table (data/fidelity/<quant>.parquet), sorted by TOKEN_KEYS
TOKEN_KEYS = ["corpus", "ctx", "window", "pos"]
TOKEN_METRICS = ["kld", "rkld", "kld_topk", "top1", "nll_q", "nll_R", "nll_q_greedy", "dp"]
TOKEN_COLUMNS = [*TOKEN_KEYS, "token", *TOKEN_METRICS]

# item table (data/bench/<model>.parquet, data/processed/items.parquet): one row per model and item
ITEM_KEYS = [MODEL, "task", "item_id"]
ITEM_COLUMNS = [
    *ITEM_KEYS,
    "correct",
    "chosen",
    "chosen_norm",
    "choice_logprobs",
    "generation",
    "test_status",
    "prompt_kld",
    "n_prompt_tokens",
]
# collect adds the gold answer's log-probability (silentzone.bench.outcome; NaN for code tasks)
GOLD_LOGPROB = "gold_logprob"
ITEM_TYPES = {
    MODEL: str,
    "task": str,
    "item_id": str,
    "correct": bool,
    "chosen": "Int64",
    "chosen_norm": "Int64",
    "prompt_kld": "float64",
    "n_prompt_tokens": "int64",
}

# cohort table (data/processed/cohort.parquet): one row per model; then the variants, score_<task>, composite
COHORT_KEYS = [MODEL, "is_reference", "bpw"]
COMPOSITE = "composite"

# KLD ≥ −KLD_TOLERANCE for numbers measured by llama.cpp (ingested logs and .kld files, published
# tables): it stores base log-probs as uint16 steps of at most 16/65535 nats, so a KLD it prints may
# read below zero by up to half a step per file (its reference against itself: minimum −0.000049).
# One full step is allowed; anything lower is not rounding.
KLD_TOLERANCE = 16 / 65535
SCORE_PREFIX = "score_"
SIGNED = "signed"
SIGNED_PREFIX = "signed_"
# When bench.composite names fewer than every task: the composite and the signed outcome over all tasks
# (the robustness check's broader composite)
COMPOSITE_ALL = "composite_all"
SIGNED_ALL = "signed_all"


def score_column(task: str) -> str:
    return f"{SCORE_PREFIX}{task}"


def score_columns(table: pd.DataFrame) -> list[str]:
    """score_<task> columns in table order, then the composite (when present)."""
    return [c for c in table.columns if c.startswith(SCORE_PREFIX)] + ([COMPOSITE] if COMPOSITE in table else [])


def typed_items(items: pd.DataFrame) -> pd.DataFrame:
    """The item table's column types (chosen/chosen_norm nullable: code rows have none)."""
    return items.astype(ITEM_TYPES)


def composite(scores: pd.DataFrame) -> pd.Series:
    """Unweighted mean of the score_<task> columns; NaN where any task score is missing."""
    cols = [c for c in scores.columns if c.startswith(SCORE_PREFIX)]
    return scores[cols].mean(axis=1, skipna=False) if cols else pd.Series(float("nan"), index=scores.index)


def scores(items: pd.DataFrame, composite_tasks: list[str] | None = None) -> pd.DataFrame:
    """Per model: score_<task> (share of items correct, tasks in sorted order) and the composite over
    `composite_tasks` (default: every task; when fewer, also composite_all over every task); with a
    gold_logprob column, also the signed outcome (signed_scores)."""
    per_task = items.groupby([MODEL, "task"])["correct"].mean().unstack("task")
    tasks = list(per_task.columns)
    per_task.columns = [score_column(t) for t in tasks]
    chosen = [t for t in tasks if composite_tasks is None or t in composite_tasks]
    per_task[COMPOSITE] = composite(per_task[[score_column(t) for t in chosen]])
    if len(chosen) < len(tasks):
        per_task[COMPOSITE_ALL] = composite(per_task[[score_column(t) for t in tasks]])
    out = per_task.reset_index()
    if GOLD_LOGPROB in items:
        out = out.merge(signed_scores(items, composite_tasks), on=MODEL, how="left", validate="one_to_one")
    return out


def composite_items(items: pd.DataFrame, composite_tasks: list[str] | None) -> pd.DataFrame:
    """The item table of the composite's tasks: what every analysis of the composite reads."""
    return items if composite_tasks is None else items[items["task"].isin(composite_tasks)].reset_index(drop=True)


def signed_scores(items: pd.DataFrame, composite_tasks: list[str] | None = None) -> pd.DataFrame:
    """Per model: signed_<task>, the mean over the task's items of gold_logprob − the reference's on the
    same item (0 for the reference), for the tasks that have the outcome, and `signed`, their unweighted
    mean over `composite_tasks` (default every task; when fewer, also signed_all over every task; NaN
    when no task has it)."""
    ref = items[items[MODEL] == REFERENCE].set_index(["task", "item_id"])[GOLD_LOGPROB]
    paired = items.join(ref.rename("ref_logprob"), on=["task", "item_id"])
    delta = (paired[GOLD_LOGPROB] - paired["ref_logprob"]).astype(float)
    per_task = delta.groupby([items[MODEL], items["task"]]).mean().unstack("task")
    per_task = per_task.loc[:, per_task.notna().any()]
    tasks = list(per_task.columns)
    per_task.columns = [f"{SIGNED_PREFIX}{t}" for t in tasks]
    chosen = [f"{SIGNED_PREFIX}{t}" for t in tasks if composite_tasks is None or t in composite_tasks]
    all_tasks = list(per_task.columns)
    per_task[SIGNED] = per_task[chosen].mean(axis=1, skipna=False) if chosen else float("nan")
    if composite_tasks is not None and set(composite_tasks) != set(items["task"]):
        per_task[SIGNED_ALL] = per_task[all_tasks].mean(axis=1, skipna=False) if all_tasks else float("nan")
    per_task.index.name = MODEL
    return per_task.reset_index()


def reference_rows(table: pd.DataFrame) -> pd.Series:
    """Boolean mask of the reference row(s) of a cohort or item table."""
    if "is_reference" in table:
        return table["is_reference"].astype(bool)
    return table[MODEL] == REFERENCE


def quant_names(cohort: pd.DataFrame) -> list[str]:
    """Every non-reference model of a cohort table, in table order."""
    return cohort.loc[~reference_rows(cohort), MODEL].tolist()


def write_tables(out_dir: str | Path, cohort: pd.DataFrame, items: pd.DataFrame | None = None) -> None:
    """cohort.parquet (+ a CSV copy for people and spreadsheets) and items.parquet, atomically."""
    from . import io

    out_dir = Path(out_dir)
    io.write_parquet(out_dir / "cohort.parquet", cohort)
    io.write_csv(out_dir / "cohort.csv", cohort, float_format="%.9g")
    if items is not None:
        io.write_parquet(out_dir / "items.parquet", items)
