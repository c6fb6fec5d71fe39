"""Which tasks can see quantization at all: per task, the reference's accuracy, chance, and for each
of two quants (a mid one and the most damaged) the accuracy drop, the flips against the reference,
the paired z, the mean per-prompt KLD and the seconds per item.

    .venv/bin/python benchmarks/task_sensitivity.py --items 25
    .venv/bin/python benchmarks/task_sensitivity.py --profile default --quants q4_0 mxfp4+embedding-mxfp4 --items 100 --tasks lambada sciq piqa

Items are each task's seeded subset for the profile's seed (the draw `prepare` makes, so n items here
are the first n a profile with n items would score). Scoring is the bench stage's own
(silentzone.stages.bench.run_task: batched scoring, `correct` by the task's metric, per-prompt KLD
against the reference over context + the reference's answer), run in a scratch folder
(benchmarks/out/task_sensitivity/work/), with the reference's lm_head taken from the loaded model.

Flips against the reference: L = quant right where the reference is wrong, D = the reverse;
drop = acc_R − acc_q = (D − L)/n; paired z = (D − L)/√(D + L) (McNemar's statistic, signed: > 0
when the quant is worse); n(z=2) = the items at which the same flip rates would give |z| = 2
(n·(2/z)²). Writes benchmarks/out/task_sensitivity/<tag>.csv and .json.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from silentzone import config, io  # noqa: E402
from silentzone import task_registry as registry  # noqa: E402
from silentzone.data import items as bench_items  # noqa: E402
from silentzone.layout import Layout  # noqa: E402
from silentzone.stages import bench  # noqa: E402

QUANTS = ["q4_0", "mxfp4+embedding-mxfp4"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="default")
    ap.add_argument("--quants", nargs="+", default=QUANTS)
    ap.add_argument("--tasks", nargs="+", default=[n for n, t in registry.TASKS.items() if t.kind != "code"])
    ap.add_argument(
        "--items", type=int, nargs="+", default=[25], help="items per task: one number for every task, or one per --tasks entry"
    )
    ap.add_argument(
        "--offset",
        type=int,
        nargs="+",
        default=[0],
        help="skip this many items of each task's seeded draw first (one number, or one per task): "
        "fresh items to validate a design chosen on the first ones",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tag", default=None)
    args = ap.parse_args()
    import numpy as np
    import pandas as pd
    import torch

    raw = config.build_profile(args.profile, REPO / "profiles")
    n_items = per_task(args.items, args.tasks, "--items")
    offset = per_task(args.offset, args.tasks, "--offset")
    raw["bench"]["tasks"] = {task: offset[task] + n_items[task] for task in args.tasks}
    if args.threads:
        raw["threads"] = args.threads
    params = config.validate(raw, f"profiles/{args.profile}.yaml")
    from silentzone.model.head import ReferenceHead, head_arrays
    from silentzone.quant.load import check_name, load_quant

    for q in args.quants:
        check_name(params, q)
    out = REPO / "benchmarks" / "out" / "task_sensitivity"
    layout = Layout(out / "work")
    shutil.rmtree(layout.root, ignore_errors=True)
    drawn = bench_items.draw_all(params)
    bench_items.write_all({task: chosen[offset[task] :] for task, chosen in drawn.items()}, layout.prepared)

    frames, seconds = {}, {}
    head_R = None
    for name in ["reference", *args.quants]:
        model, tokenizer, _ = load_quant(params, name)
        torch.set_num_threads(params.threads)
        if name == "reference":
            head_R = ReferenceHead(*head_arrays(model, tokenizer, name))
            ctx = bench.Context(name, model, tokenizer)
        else:
            ctx = bench.Context(name, model, tokenizer, head_R)
        for task in args.tasks:
            start = time.perf_counter()
            frames[name, task] = bench.run_task(params, layout, ctx, task).set_index("item_id")
            seconds[name, task] = (time.perf_counter() - start) / len(frames[name, task])
            print(
                f"{name} {task}: accuracy {frames[name, task]['correct'].mean():.3f}, {seconds[name, task]:.3f} s/item, "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        del model

    rows = []
    for task in args.tasks:
        spec = registry.TASKS[task]
        ref = frames["reference", task]["correct"]
        row = {
            "task": task,
            "kind": spec.kind,
            "metric": spec.metric,
            "n": len(ref),
            "chance": spec.chance,
            "acc_R": round(float(ref.mean()), 3),
            "s_item_R": round(seconds["reference", task], 3),
        }
        for q in args.quants:
            quant = frames[q, task]
            cq = quant["correct"].reindex(ref.index)
            lead, drop = int((cq & ~ref).sum()), int((~cq & ref).sum())
            z = (drop - lead) / math.sqrt(drop + lead) if drop + lead else 0.0
            row.update(
                {
                    f"drop[{q}]": round(float(ref.mean() - cq.mean()), 3),
                    f"L/D[{q}]": f"{lead}/{drop}",
                    f"z[{q}]": round(z, 2),
                    f"n(z=2)[{q}]": (int(math.ceil(len(ref) * (2 / z) ** 2)) if z > 0 else None),
                    f"kld[{q}]": round(float(np.nanmean(quant["prompt_kld"])), 4),
                    f"s_item[{q}]": round(seconds[q, task], 3),
                }
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    composite = {q: composite_z(frames, args.tasks, q) for q in args.quants}
    with pd.option_context("display.width", 250, "display.max_columns", 50):
        print(f"\nprofile {args.profile}, {args.items} items per task, threads {params.threads}, load {os.getloadavg()[0]:.1f}")
        print(table.to_string(index=False))
    for q, c in composite.items():
        print(
            f"composite (unweighted mean of the task scores) {q}: drop {c['drop']:.4f}, paired se {c['se']:.4f}, z {c['z']:.2f}"
        )
    print(
        "seconds per model: "
        + ", ".join(
            f"{name} {sum(seconds[name, t] * len(frames[name, t]) for t in args.tasks):.0f}"
            for name in ["reference", *args.quants]
        )
    )
    tag = args.tag or f"{args.profile}-n{'-'.join(map(str, args.items))}" + (
        f"-from{'-'.join(map(str, args.offset))}" if any(args.offset) else ""
    )
    io.write_csv(out / f"{tag}.csv", table)
    io.write_json(out / f"{tag}.json", {"args": vars(args), "threads": params.threads, "rows": rows, "composite": composite})


def per_task(values: list[int], tasks: list[str], flag: str) -> dict[str, int]:
    if len(values) == 1:
        return {task: values[0] for task in tasks}
    if len(values) != len(tasks):
        raise SystemExit(f"{flag}: give one number or one per task ({len(tasks)}), not {len(values)}")
    return dict(zip(tasks, values))


def composite_z(frames: dict, tasks: list[str], quant: str) -> dict:
    """Drop of the composite (unweighted mean of the task accuracies) and its paired standard error,
    by the pipeline's own noise.paired_se."""
    import pandas as pd

    from silentzone import noise

    items = pd.concat(
        [
            frames[name, task]["correct"].rename("correct").reset_index().assign(model=name, task=task)
            for name in ("reference", quant)
            for task in tasks
        ],
        ignore_index=True,
    )
    delta, se = noise.paired_se(noise.Outcomes.of(items, [quant], reference="reference"))
    drop, se = -float(delta[0]), float(se[0])
    return {"drop": drop, "se": se, "z": drop / se if se else float("nan")}


if __name__ == "__main__":
    main()
