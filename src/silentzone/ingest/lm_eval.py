"""lm-evaluation-harness `--log_samples` output into item rows.

lm-eval writes, per task, `samples_<task>_<date>.jsonl` (one JSON object per document and filter)
beside `results_<date>.json`. Before writing, it turns `resps`/`filtered_resps` into nested lists
of *strings* (`sanitize_list`): a log-likelihood answer `(-1.23, False)` arrives as
`["-1.23", "False"]`, and `arguments` becomes `{"gen_args_0": {"arg_0": context, "arg_1": continuation}}`.
The per-sample metrics (`acc`, `acc_norm`, `exact_match`, …) sit at the top level of each object.

Correct = the task's per-item metric (first of DEFAULT_METRICS present, or the one named) equal to 1.
Multiple-choice rows also get the chosen index (argmax log-likelihood), the length-normalised
choice and the choice log-likelihoods; generative rows get the filtered generation.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ..errors import SilentzoneError
from ..schema import MODEL
from . import ITEM_COLUMNS
from .checks import read_text
from .llamacpp_log import quant_from_model_file

DEFAULT_METRICS = ("acc", "exact_match", "pass@1", "pass_at_1", "em", "correct")
SAMPLE_FILE = re.compile(r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T[\d\-.:]+)\.jsonl$")
EXTRA_COLUMNS = ["metric", "filter", "target", "chosen", "chosen_norm", "choice_logprobs", "generation", "source"]


def task_of(path: Path) -> str:
    """`samples_arc_easy_2025-01-02T03-04-05.678901.jsonl` -> `arc_easy` (lm-eval's own rule)."""
    match = SAMPLE_FILE.match(path.name)
    if not match:
        raise SilentzoneError(f"{path}: not an lm-eval samples file name (expected samples_<task>_<date>.jsonl)")
    return match.group("task")


def sample_files(paths) -> list[Path]:
    """Files as given, folders expanded to their samples_*.jsonl (sorted)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob("samples_*.jsonl"))
            if not found:
                raise SilentzoneError(f"{p}: no samples_*.jsonl inside; run lm-eval with --log_samples --output_path")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise SilentzoneError(f"{p}: not found")
    return files


def _number(value, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SilentzoneError(f"{where}: {value!r} is not a number") from None
    if not math.isfinite(number):
        raise SilentzoneError(
            f"{where}: {value!r} is not a finite number; the run diverged or the file was edited: rerun lm-eval"
        )
    return number


def _is_loglikelihood(resp) -> bool:
    """A sanitised (ll, is_greedy) pair: ["-1.23", "False"] (or unsanitised [-1.23, false])."""
    return isinstance(resp, list) and len(resp) == 2 and str(resp[1]) in ("True", "False", "true", "false")


def _continuations(sample: dict) -> list[str]:
    args = sample.get("arguments")
    if isinstance(args, dict):  # sanitised form
        return [str(a.get("arg_1", "")) for _, a in sorted(args.items(), key=lambda kv: int(kv[0].rsplit("_", 1)[1]))]
    return [str(a[1]) if len(a) > 1 else "" for a in args or []]


def _binary(value, where: str, metric: str) -> bool:
    number = _number(value, where) if not isinstance(value, bool) else float(value)
    if number not in (0.0, 1.0):
        raise SilentzoneError(
            f"{where}: metric {metric!r} = {value!r} is not 0/1; name a per-item binary metric (--metric TASK=NAME)"
        )
    return number == 1.0


def _row(sample: dict, where: str, metric: str) -> dict:
    row = {"correct": _binary(sample[metric], where, metric), "target": str(sample.get("target", ""))}
    resps = sample.get("filtered_resps")
    if not isinstance(resps, list) or not resps:
        raise SilentzoneError(f"{where}: `filtered_resps` missing or empty; is this an lm-eval --log_samples file?")
    if all(_is_loglikelihood(r) for r in resps):
        lls = [_number(r[0], f"{where}: filtered_resps") for r in resps]
        if max(lls) > 1e-6:  # a sum of log-probabilities; allow float rounding only
            raise SilentzoneError(
                f"{where}: log-likelihood {max(lls)!r} > 0 in `filtered_resps`, impossible for a sum of log-probabilities; "
                "the file is edited or corrupt: use the file lm-eval wrote"
            )
        conts = _continuations(sample)
        lengths = [len(c[1:] if c.startswith(" ") else c) or 1 for c in conts] if len(conts) == len(lls) else [1] * len(lls)
        row["choice_logprobs"] = lls
        row["chosen"] = max(range(len(lls)), key=lambda i: (lls[i], -i))
        row["chosen_norm"] = max(range(len(lls)), key=lambda i: (lls[i] / lengths[i], -i))
        _check_choice(sample, row, where)
    else:
        first = resps[0][0] if isinstance(resps[0], list) and resps[0] else resps[0]
        row["generation"] = str(first)
    return row


def _check_choice(sample: dict, row: dict, where: str) -> None:
    """With an integer gold index, acc and acc_norm must follow from the logged log-likelihoods."""
    if not re.fullmatch(r"\d+", row["target"]):
        return
    gold = int(row["target"])
    for metric, key in (("acc", "chosen"), ("acc_norm", "chosen_norm")):
        if metric in sample and _binary(sample[metric], where, metric) != (row[key] == gold):
            raise SilentzoneError(
                f"{where}: {metric}={sample[metric]} disagrees with the logged log-likelihoods (argmax {row[key]}, gold {gold}); the file is inconsistent"
            )


def read_samples(path: str | Path, model: str, metric: str | None = None, filter_name: str | None = None):
    """Item rows of one samples file, as a DataFrame (ITEM_COLUMNS + EXTRA_COLUMNS)."""
    import pandas as pd

    path = Path(path)
    task = task_of(path)
    samples = []
    for number, line in enumerate(read_text(path, "an lm-eval samples file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            sample = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SilentzoneError(f"{path}:{number}: invalid JSON ({exc.msg}); the file is truncated or edited") from None
        if not isinstance(sample, dict) or "doc_id" not in sample:
            raise SilentzoneError(f"{path}:{number}: no `doc_id`; is this an lm-eval --log_samples file?")
        doc_id = sample["doc_id"]
        if isinstance(doc_id, bool) or not (
            isinstance(doc_id, int) and doc_id >= 0 or isinstance(doc_id, str) and doc_id.isdigit()
        ):
            raise SilentzoneError(
                f"{path}:{number}: doc_id {doc_id!r} is not a document index (lm-eval writes 0, 1, …); the file is edited"
            )
        samples.append((number, sample))
    if not samples:
        raise SilentzoneError(f"{path}: no samples; the file is empty")
    filters = sorted({s.get("filter", "none") for _, s in samples})
    if filter_name is None and len(filters) > 1:
        raise SilentzoneError(f"{path}: several filters ({', '.join(filters)}); choose one with --filter {task}=NAME")
    chosen_filter = filter_name or filters[0]
    if chosen_filter not in filters:
        raise SilentzoneError(f"{path}: no filter {chosen_filter!r} (has {', '.join(filters)}); fix --filter {task}=NAME")
    rows, seen = [], {}
    for number, sample in samples:
        if sample.get("filter", "none") != chosen_filter:
            continue
        where = f"{path}:{number}"
        item_id = str(sample["doc_id"])
        if item_id in seen:
            raise SilentzoneError(
                f"{where}: duplicate doc_id {item_id} (first at line {seen[item_id]}); one line per document and filter"
            )
        seen[item_id] = number
        name = metric or next((m for m in DEFAULT_METRICS if m in sample), None)
        if name is None or name not in sample:
            have = [k for k in sample.get("metrics", []) if k in sample] or sorted(
                k for k, v in sample.items() if isinstance(v, (int, float)) and k != "doc_id"
            )
            raise SilentzoneError(
                f"{where}: no per-item metric {name or '/'.join(DEFAULT_METRICS)}; available: {', '.join(have) or 'none'}; choose with --metric {task}=NAME"
            )
        row = _row(sample, where, name)
        rows.append(
            {
                MODEL: model,
                "task": task,
                "item_id": item_id,
                "prompt_kld": math.nan,
                "n_prompt_tokens": pd.NA,
                "metric": name,
                "filter": chosen_filter,
                "source": path.name,
                **row,
            }
        )
    frame = pd.DataFrame(rows, columns=ITEM_COLUMNS + EXTRA_COLUMNS)
    frame["correct"] = frame["correct"].astype(bool)
    frame["n_prompt_tokens"] = frame["n_prompt_tokens"].astype("Int64")
    frame["prompt_kld"] = frame["prompt_kld"].astype("float64")
    for col in ("chosen", "chosen_norm"):
        frame[col] = frame[col].astype("Int64")
    return frame


def read_model(paths, model: str, metrics: dict | None = None, filters: dict | None = None, options_for_all: bool = True):
    """All tasks of one model: a task given by two files is an error (which run counts?), and so is
    a --metric/--filter for a task none of the files holds (it would silently change nothing;
    `options_for_all=False` leaves that check to a caller reading several models)."""
    import pandas as pd

    metrics, filters = metrics or {}, filters or {}
    files = sample_files(paths)
    frames, by_task = [], {}
    for path in files:
        task = task_of(path)
        if task in by_task:
            what = (
                "the same file given twice" if Path(path).resolve() == Path(by_task[task]).resolve() else "keep one run per task"
            )
            raise SilentzoneError(f"{path}: task {task!r} already read from {by_task[task]} for model {model!r}; {what}")
        by_task[task] = path
    for option, given in (("--metric", metrics), ("--filter", filters)) if options_for_all else ():
        for task in given:
            if task not in by_task:
                raise SilentzoneError(
                    f"{files[0]}: {option} {task}={given[task]}: no samples file of task {task!r} for model {model!r} "
                    f"(tasks: {', '.join(sorted(by_task))}); fix the task name"
                )
    for path in files:
        task = task_of(path)
        frames.append(read_samples(path, model, metrics.get(task), filters.get(task)))
    return pd.concat(frames, ignore_index=True)


def results_quant_names(paths) -> dict[str, Path]:
    """Quant names found in results_*.json (a .gguf in model_args or model_name) beside the samples."""
    names = {}
    folders = {p if p.is_dir() else p.parent for p in map(Path, paths)}
    for folder in sorted(folders):
        for results in sorted(folder.rglob("results_*.json")):
            try:
                data = json.loads(read_text(results, "an lm-eval results file"))
            except json.JSONDecodeError as exc:
                raise SilentzoneError(f"{results}:{exc.lineno}: invalid JSON ({exc.msg})") from None
            cfg = data.get("config", {}) if isinstance(data, dict) else {}
            text = " ".join(str(x) for x in (cfg.get("model_args", ""), data.get("model_name", "")))
            for gguf in re.findall(r"[^\s,=/\"']+\.gguf", text):
                names[quant_from_model_file(gguf)] = results
    return names
