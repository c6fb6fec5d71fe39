"""Which composite buys the most split-half reliability per CPU-second — from a run's per-item outcomes.

    .venv/bin/python benchmarks/composite_design.py
    .venv/bin/python benchmarks/composite_design.py --validate data/published/default/items.parquet

Inputs (defaults: the 4-task default run published before LAMBADA-only, kept in benchmarks/data/):
  --outcomes  model, task, item_id, correct for the reference and every quant (any run's items.parquet);
  --seconds   model, task, n_items, seconds: each bench stage's time per task (the tqdm totals of
              that run's log), so quant-seconds per item is the median over the quants.

Per task and for every mix of tasks at the run's item counts it reports the composite's split-half
reliability across the quants — the pipeline's own statistic (silentzone.noise: random halves within
each task, Spearman r across quants, Spearman–Brown, mean over splits) — the most damaged quant's
paired z (silentzone.noise.paired_se), and the quant-seconds per model it costs. A design is compared
with another at equal cost by Spearman–Brown: k times the items gives reliability kr / (1 + (k−1)r)
and z·√k; hence the quant-seconds each design needs to reach --target.

--validate NEW_ITEMS checks a design chosen here on items that did not choose it: NEW_ITEMS (a later
run's items.parquet) gets the same statistics on all its items and on its fresh items alone — those
absent from the outcomes above; a larger subset of the same seed holds the smaller one, so they are
each task's next items in the seeded order — next to the Spearman–Brown projection from the design
run. Writes
benchmarks/out/composite_design/{tasks,designs,validation}.csv and prints markdown tables.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from silentzone import noise  # noqa: E402
from silentzone.schema import COMPOSITE, REFERENCE  # noqa: E402

DATA = REPO / "benchmarks" / "data"
OUT = REPO / "benchmarks" / "out" / "composite_design"


def spearman_brown(r: float, k: float) -> float:
    return k * r / (1 + (k - 1) * r)


def factor_for(r: float, target: float) -> float:
    """k such that Spearman–Brown takes reliability r to target."""
    return target * (1 - r) / (r * (1 - target))


def reliability(outcomes: noise.Outcomes, tasks: list[str], n_splits: int, seed: int) -> float:
    """The composite's split-half reliability across quants, as notebook 07 computes it."""
    corr = noise.split_half_correlations({t: outcomes.blocks[t] for t in tasks}, n_splits, np.random.default_rng(seed))
    return noise.summarize_splits(corr[COMPOSITE][0], 0.95)["reliability"]


def worst_z(outcomes: noise.Outcomes, tasks: list[str]) -> tuple[str, float]:
    """(quant, z) of the quant whose composite sits the most paired SE below the reference's."""
    sub = noise.Outcomes(
        tasks, outcomes.models, {t: outcomes.blocks[t] for t in tasks}, {t: outcomes.reference[t] for t in tasks}
    )
    delta, se = noise.paired_se(sub)
    z = np.where(se > 0, delta / np.where(se > 0, se, 1), 0.0)
    i = int(np.argmin(z))
    return outcomes.models[i], float(z[i])


def outcomes_of(items: pd.DataFrame) -> noise.Outcomes:
    quants = sorted(m for m in items["model"].unique() if m != REFERENCE)
    return noise.Outcomes.of(items, quants)


def seconds_per_item(seconds: pd.DataFrame) -> pd.DataFrame:
    s = seconds.assign(per_item=seconds["seconds"] / seconds["n_items"])
    quant = s[s["model"] != REFERENCE].groupby("task")["per_item"].median()
    ref = s[s["model"] == REFERENCE].set_index("task")["per_item"]
    return pd.DataFrame({"quant_s_per_item": quant, "reference_s_per_item": ref})


def task_table(outcomes: noise.Outcomes, cost: pd.DataFrame, n_splits: int, seed: int, target: float) -> pd.DataFrame:
    rows = []
    for t in outcomes.tasks:
        quant, z = worst_z(outcomes, [t])
        j = outcomes.models.index(quant)
        r = reliability(outcomes, [t], n_splits, seed)
        n, per_item = outcomes.n_items(t), float(cost.loc[t, "quant_s_per_item"])
        rows.append(
            {
                "task": t,
                "n": n,
                "acc_reference": outcomes.reference[t].mean(),
                "most_damaged": quant,
                "drop": outcomes.reference[t].mean() - outcomes.blocks[t][:, j].mean(),
                "z": z,
                "reliability": r,
                "quant_s_per_item": per_item,
                "quant_s": n * per_item,
                f"quant_s_for_{target:g}": n * per_item * factor_for(r, target) if r and r > 0 else np.nan,
            }
        )
    return pd.DataFrame(rows)


def design_table(
    outcomes: noise.Outcomes, cost: pd.DataFrame, n_splits: int, seed: int, target: float, budget: float
) -> pd.DataFrame:
    rows = []
    for size in range(1, len(outcomes.tasks) + 1):
        for tasks in itertools.combinations(outcomes.tasks, size):
            tasks = list(tasks)
            r = reliability(outcomes, tasks, n_splits, seed)
            quant, z = worst_z(outcomes, tasks)
            secs = sum(outcomes.n_items(t) * float(cost.loc[t, "quant_s_per_item"]) for t in tasks)
            rows.append(
                {
                    "tasks": " + ".join(f"{t} {outcomes.n_items(t)}" for t in tasks),
                    "quant_s": secs,
                    "reliability": r,
                    "most_damaged": quant,
                    "z": z,
                    f"quant_s_for_{target:g}": secs * factor_for(r, target) if r and r > 0 else np.nan,
                    f"reliability_at_{budget:g}_s": spearman_brown(r, budget / secs) if r and r > 0 else np.nan,
                    f"z_at_{budget:g}_s": z * np.sqrt(budget / secs),
                }
            )
    return pd.DataFrame(rows).sort_values(f"quant_s_for_{target:g}").reset_index(drop=True)


def validation_table(items: pd.DataFrame, known: set, design: noise.Outcomes, n_splits: int, seed: int) -> pd.DataFrame:
    """A later run's statistics on all its items and on the fresh ones alone (the (task, item_id)
    pairs not in `known`, the design run's), with the projection from the design run (one task)."""
    fresh = items[[(t, i) not in known for t, i in zip(items["task"], items["item_id"])]]
    rows = []
    for label, table in (("all items", items), ("fresh items only", fresh)):
        if table.empty:
            rows.append({"items": f"{label}: none"})
            continue
        o = outcomes_of(table)
        r = reliability(o, o.tasks, n_splits, seed)
        quant, z = worst_z(o, o.tasks)
        n = {t: o.n_items(t) for t in o.tasks}
        if all(t in design.tasks for t in o.tasks) and len(o.tasks) == 1:
            t = o.tasks[0]
            k = n[t] / design.n_items(t)
            r_design = reliability(design, [t], n_splits, seed)
            projected = spearman_brown(r_design, k)
            z_projected = worst_z(design, [t])[1] * np.sqrt(k)
        else:
            projected = z_projected = np.nan
        rows.append(
            {
                "items": label,
                "n": ", ".join(f"{t} {v}" for t, v in n.items()),
                "reliability": r,
                "projected_reliability": projected,
                "most_damaged": quant,
                "z": z,
                "projected_z": z_projected,
            }
        )
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--outcomes", type=Path, default=DATA / "default-4task-outcomes.parquet")
    ap.add_argument("--seconds", type=Path, default=DATA / "default-4task-seconds.csv")
    ap.add_argument("--n-splits", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=20260619)
    ap.add_argument("--target", type=float, default=0.9, help="reliability the designs are costed for")
    ap.add_argument("--budget", type=float, default=162.0, help="quant-seconds per model the designs are projected to")
    ap.add_argument("--validate", type=Path, help="a later run's items.parquet to check the chosen design on")
    args = ap.parse_args()

    items = pd.read_parquet(args.outcomes)
    outcomes = outcomes_of(items)
    cost = seconds_per_item(pd.read_csv(args.seconds))
    OUT.mkdir(parents=True, exist_ok=True)
    tasks = task_table(outcomes, cost, args.n_splits, args.seed, args.target)
    designs = design_table(outcomes, cost, args.n_splits, args.seed, args.target, args.budget)
    tasks.to_csv(OUT / "tasks.csv", index=False)
    designs.to_csv(OUT / "designs.csv", index=False)
    print(f"{args.outcomes.name}: {len(outcomes.models)} quants; quant-seconds per item from {args.seconds.name}\n")
    print(tasks.to_markdown(index=False, floatfmt=".3g"), "\n")
    print(designs.to_markdown(index=False, floatfmt=".3g"))
    if args.validate:
        new = pd.read_parquet(args.validate)
        known = set(zip(items["task"], items["item_id"]))
        check = validation_table(new, known, outcomes, args.n_splits, args.seed)
        check.to_csv(OUT / "validation.csv", index=False)
        print("\n" + check.to_markdown(index=False, floatfmt=".3g"))


if __name__ == "__main__":
    main()
