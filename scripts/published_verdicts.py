"""The decision rules (`silentzone verdicts`) applied to a committed published run's own tables.

    python scripts/published_verdicts.py PROFILE [--check]

A published run made before the verdicts stage existed carries its cohort and item tables but no
verdicts. This computes them from those tables alone (no capture, no model), with the run's own
params.yaml and the `verdicts:` rules of the current profile (fixed in profiles/ before these
numbers were computed), and writes

  data/published/<profile>/verdicts/verdicts.json         every test, verdict and reason
  data/published/<profile>/verdicts/headline.json         its headline: what `dvc metrics show` prints (dvc.yaml)
  data/published/<profile>/verdicts/{claims,rho_k}.csv
  data/published/<profile>/verdicts/rho_k_figure.{png,csv}  the rho(k) curves of both outcomes (silentzone.plots)

beside the run's own outputs (numbers/, tables/), which the run wrote and its SHA256SUMS lists.

The signed outcome needs each item's gold log-probability, which collect now adds; the published item
table holds what it is made from (choice_logprobs), so it is derived here by the same function
(silentzone.bench.outcome.gold_logprob). Only tasks whose gold answer needs no prepared item (greedy
tasks, e.g. LAMBADA) can be derived so; a run with other tasks is refused. With --check, nothing is
written and the exit status says whether the committed files are what this computes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from silentzone import config, io, plots, task_registry, verdicts  # noqa: E402
from silentzone.bench.outcome import gold_logprob  # noqa: E402
from silentzone.errors import SilentzoneError  # noqa: E402
from silentzone.schema import GOLD_LOGPROB, SIGNED, SIGNED_PREFIX, signed_scores  # noqa: E402
from silentzone.stages import verdicts as verdicts_stage  # noqa: E402

# params keys of earlier runs that the verdicts section replaced (its rules are the current profile's)
MOVED_KEYS = {"notebooks": {"07-noise-ceiling": ("min_reliability", "min_z")}}


def run_params(run: Path, profile: str) -> config.Params:
    """The run's params.yaml, with the current profile's `verdicts:` rules in place of the keys they replaced."""
    raw = config.read_yaml(run / "params.yaml")
    for section, entries in MOVED_KEYS.items():
        for entry, keys in entries.items():
            for key in keys:
                raw.get(section, {}).get(entry, {}).pop(key, None)
    raw["verdicts"] = config.build_profile(profile)["verdicts"]
    return config.validate(raw, f"{run / 'params.yaml'} (+ profiles/{profile}.yaml verdicts)")


def with_gold_logprob(items: pd.DataFrame, run: Path) -> pd.DataFrame:
    if GOLD_LOGPROB in items:
        return items
    registry = task_registry.TASKS
    kinds = {task: registry[task].kind for task in items["task"].unique()}
    others = sorted(task for task, kind in kinds.items() if kind != "greedy")
    if others:
        raise SilentzoneError(
            f"{run / 'items.parquet'}: tasks {', '.join(others)} need their prepared items for the gold log-probability; "
            "rerun the pipeline (collect adds it) instead"
        )
    values = [gold_logprob("greedy", registry[t].metric, lp, {}) for t, lp in zip(items["task"], items["choice_logprobs"])]
    return items.assign(**{GOLD_LOGPROB: values})


def tables(run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    items = with_gold_logprob(pd.read_parquet(run / "items.parquet"), run)
    cohort = pd.read_parquet(run / "cohort.parquet")
    cohort = cohort[[c for c in cohort.columns if c != SIGNED and not c.startswith(SIGNED_PREFIX)]]
    return cohort.merge(signed_scores(items), on="model", how="left", validate="one_to_one"), items


def write(computed: tuple[dict, dict], verdicts_json: Path, tables_dir: Path) -> str:
    """The verdicts stage's files, and headline.json beside verdicts.json."""
    out = verdicts_stage.write(computed, verdicts_json, tables_dir)
    io.write_json(verdicts_json.with_name("headline.json"), verdicts.headline(computed[0]))
    doc, tables = computed
    if tables["rho_k"] is not None:
        plots.rho_k_curves(tables["rho_k"], tables_dir, doc["rules"]["rho_margin"], name="rho_k_figure")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("profile", help="a folder of data/published/")
    ap.add_argument("--check", action="store_true", help="write nothing; fail when the committed files differ")
    args = ap.parse_args()
    run = REPO / "data" / "published" / args.profile
    try:
        if not (run / "params.yaml").is_file():
            raise SilentzoneError(f"{run}: no published run of profile {args.profile!r} (data/published/<profile>/params.yaml)")
        params = run_params(run, args.profile)
        computed = verdicts_stage.compute(params, *tables(run))
    except SilentzoneError as exc:
        print(f"published_verdicts.py: error: {exc}", file=sys.stderr)
        return 2
    targets = (run / "verdicts" / "verdicts.json", run / "verdicts")
    if not args.check:
        print(write(computed, *targets))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        write(computed, Path(tmp) / "verdicts.json", Path(tmp) / "tables")
        fresh = [Path(tmp) / "verdicts.json", Path(tmp) / "headline.json", *sorted((Path(tmp) / "tables").iterdir())]
        committed = [targets[0], targets[0].with_name("headline.json"), *(targets[1] / f.name for f in fresh[2:])]
        stale = [
            str(c.relative_to(REPO)) for f, c in zip(fresh, committed) if not c.is_file() or c.read_bytes() != f.read_bytes()
        ]
    if stale:
        print(f"published_verdicts.py: {', '.join(stale)} differ from what the run's tables give; rerun without --check")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
