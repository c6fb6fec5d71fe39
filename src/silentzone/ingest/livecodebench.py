"""LiveCodeBench code-generation `*_eval_all.json` into item rows.

The file (lcb_runner/runner/main.py) is a JSON list, one object per problem: question_id,
question_title, platform, contest_id, contest_date (ISO), difficulty, output_list, code_list,
graded_list (one bool per generation), pass@1 (share of generations passing) and metadata (one JSON
string per generation, e.g. `{"error_code": -2, "error_message": "Wrong Answer", ...}`).

LiveCodeBench scores a *release* (release_v1 … v6) within a contest-date window; both are recorded
on every row, and problems outside the window are dropped as `compute_scores.py --start_date
--end_date` does. Correct = the first generation passed (the greedy run the per-prompt study uses);
pass_at_1 keeps the share over all generations.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

from ..errors import SilentzoneError
from ..schema import MODEL
from . import ITEM_COLUMNS
from .checks import read_text

TASK = "livecodebench"
EXTRA_COLUMNS = [
    "pass_at_1",
    "n_generations",
    "generation",
    "test_status",
    "difficulty",
    "platform",
    "contest_date",
    "release",
    "window_start",
    "window_end",
    "source",
]
REQUIRED = ("question_id", "contest_date", "graded_list")


def _date(text: str, where: str) -> datetime:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        raise SilentzoneError(f"{where}: date {text!r} is not ISO format (YYYY-MM-DD[THH:MM:SS])") from None


def _status(problem: dict, passed: bool) -> str:
    """'passed', or the error message of the first generation's metadata."""
    if passed:
        return "passed"
    meta = problem.get("metadata") or []
    first = meta[0] if isinstance(meta, list) and meta else meta
    if isinstance(first, str):
        try:
            first = json.loads(first)
        except json.JSONDecodeError:
            return first
    if isinstance(first, dict):
        return str(first.get("error_message") or first.get("error") or "failed")
    return "failed"


def _line_of(text: str, question_id: str) -> int:
    """Line of a problem in the (indented) JSON file, for error messages."""
    pos = text.find(json.dumps(str(question_id)))
    return text.count("\n", 0, pos) + 1 if pos >= 0 else 1


def read_eval_all(
    path: str | Path, model: str, release: str, start_date: str | None = None, end_date: str | None = None, task: str = TASK
):
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise SilentzoneError(f"{path}: not found")
    text = read_text(path, "a LiveCodeBench *_eval_all.json")
    try:
        problems = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SilentzoneError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg}); the file is truncated or edited") from None
    if not isinstance(problems, list) or not problems:
        raise SilentzoneError(f"{path}: expected a non-empty JSON list of problems (LiveCodeBench *_eval_all.json)")
    start = _date(start_date, "--start-date") if start_date else None
    end = _date(end_date, "--end-date") if end_date else None
    if start and end and start > end:
        raise SilentzoneError(
            f"{path}: the window starts ({start_date}) after it ends ({end_date}); swap --start-date and --end-date"
        )
    rows, seen = [], {}
    for problem in problems:
        qid = str(problem.get("question_id")) if isinstance(problem, dict) else None
        where = f"{path}:{_line_of(text, qid) if qid else 1}"
        missing = [k for k in REQUIRED if not isinstance(problem, dict) or k not in problem]
        if missing:
            raise SilentzoneError(
                f"{where}: problem lacks {', '.join(missing)}; is this an *_eval_all.json (run with --evaluate)?"
            )
        if not isinstance(problem["question_id"], (str, int)) or isinstance(problem["question_id"], bool) or not qid.strip():
            raise SilentzoneError(
                f"{where}: question_id {problem['question_id']!r} is not an id; the file is edited: use the file LiveCodeBench wrote"
            )
        if qid in seen:
            raise SilentzoneError(f"{where}: duplicate question_id {qid}; one entry per problem")
        seen[qid] = True
        graded = problem["graded_list"]
        if not isinstance(graded, list) or not graded or not all(isinstance(g, bool) for g in graded):
            raise SilentzoneError(f"{where}: graded_list of {qid} must be a non-empty list of true/false")
        pass_at_1 = sum(graded) / len(graded)
        if "pass@1" in problem and not (isinstance(problem["pass@1"], (int, float)) and not isinstance(problem["pass@1"], bool)):
            raise SilentzoneError(
                f"{where}: pass@1 {problem['pass@1']!r} of {qid} is not a number; the file is edited: use the file LiveCodeBench wrote"
            )
        if "pass@1" in problem and not math.isclose(float(problem["pass@1"]), pass_at_1, abs_tol=1e-9):
            raise SilentzoneError(
                f"{where}: pass@1 {problem['pass@1']} of {qid} disagrees with graded_list ({pass_at_1}); the file is inconsistent"
            )
        date = _date(problem["contest_date"], where)
        if (start and date < start) or (end and date > end):
            continue
        codes = problem.get("code_list") or problem.get("output_list") or [""]
        rows.append(
            {
                MODEL: model,
                "task": task,
                "item_id": qid,
                "correct": bool(graded[0]),
                "prompt_kld": math.nan,
                "n_prompt_tokens": pd.NA,
                "pass_at_1": pass_at_1,
                "n_generations": len(graded),
                "generation": str(codes[0]),
                "test_status": _status(problem, graded[0]),
                "difficulty": problem.get("difficulty"),
                "platform": problem.get("platform"),
                "contest_date": date.date().isoformat(),
                "release": release,
                "source": path.name,
            }
        )
    if not rows:
        raise SilentzoneError(
            f"{path}: no problem dated within {start_date or '…'} – {end_date or '…'}; check --start-date/--end-date"
        )
    # Without a stated window, the window is the span of contest dates actually present.
    dates = [r["contest_date"] for r in rows]
    for r in rows:
        r["window_start"] = start.date().isoformat() if start else min(dates)
        r["window_end"] = end.date().isoformat() if end else max(dates)
    frame = pd.DataFrame(rows, columns=ITEM_COLUMNS + EXTRA_COLUMNS)
    frame["n_prompt_tokens"] = frame["n_prompt_tokens"].astype("Int64")
    frame["prompt_kld"] = frame["prompt_kld"].astype("float64")
    return frame
