"""`silentzone bench MODEL`: per-item benchmark outcomes and per-prompt KLD of the reference or one
quant, written to data/bench/<MODEL>.parquet (one row per item; schema in docs/bench.md).

`silentzone bench reference` must run first: it also stores what every quant's per-prompt KLD needs
(data/reference/bench/, see prompt_kld.py). Each task is written as a part file (atomically) under
data/bench/.parts/<MODEL>/, so an interrupted run resumes at the first unfinished task.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from .. import config, io
from ..errors import SilentzoneError
from . import code, items, mc, prompt_kld, registry, sandbox

REFERENCE = "reference"
COLUMNS = ["model", "task", "item_id", "correct", "chosen", "chosen_norm", "choice_logprobs", "generation", "test_status", "prompt_kld", "n_prompt_tokens"]


def load_model(params: dict, name: str):
    """(model, tokenizer) of `name` ("reference" or a quant in `cohort`)."""
    try:
        from ..quant import load_quant
    except ImportError:
        load_quant = None
    if load_quant is None:
        if name != REFERENCE:
            raise SilentzoneError("silentzone.quant is not available; only `silentzone bench reference` can run")
        from ..models import load_reference

        return load_reference(params)
    model, tokenizer, _ = load_quant(params, name)
    return model, tokenizer


def limits(params: dict) -> sandbox.Limits:
    return sandbox.Limits(
        timeout_s=config.get(params, "bench.timeout_s", float, default=10.0),
        memory_mb=config.get(params, "bench.memory_mb", int, default=1024),
    )


def fingerprint(params: dict, name: str, task: str, prepared_dir: Path, reference_dir: Path | None) -> str:
    """Everything a task's part depends on: its prepared items, the bench/model params, and for a
    quant the reference store it was compared with."""
    h = hashlib.sha256()
    h.update((Path(prepared_dir) / "bench" / f"{task}.jsonl").read_bytes())
    keys = {k: params.get(k) for k in ("seed", "model", "threads", "bench")}
    keys["cohort_entry"] = (params.get("cohort") or {}).get(name)
    h.update(json.dumps([name, task, keys], sort_keys=True, default=str).encode())
    if reference_dir is not None:
        h.update(str(prompt_kld.task_fingerprint(task, reference_dir)).encode())
    return h.hexdigest()


def mc_rows(name: str, task: str, task_items: list[dict], model, tokenizer, cap, head, ref_store, bar) -> tuple[list[dict], list[dict]]:
    import torch

    rows, entries = [], []
    for item in task_items:
        scored = mc.score_item(model, tokenizer, item, cap)
        kld = float("nan")
        if ref_store is None:
            path_choice = scored.chosen
            entries.append({"item_id": item["item_id"], "chosen": scored.chosen, "tokens": scored.tokens[scored.chosen],
                            "hidden": scored.paths[scored.chosen].float().cpu().numpy()})
        else:
            path_choice, ref_tokens, ref_hidden = ref_store.get(item["item_id"])
            _check_tokens(task, item["item_id"], ref_tokens, scored.tokens[path_choice])
            with torch.inference_mode():
                kld = prompt_kld.mean_kld(head, ref_hidden, mc.lm_logits(model, scored.paths[path_choice], cap))
        rows.append({
            "model": name, "task": task, "item_id": item["item_id"], "correct": scored.chosen == item["label"],
            "chosen": scored.chosen, "chosen_norm": scored.chosen_norm, "choice_logprobs": scored.logprobs,
            "generation": None, "test_status": None, "prompt_kld": kld, "n_prompt_tokens": len(scored.tokens[path_choice]) - 1,
        })
        bar.update(1)
    return rows, entries


def code_rows(name: str, task: str, task_items: list[dict], model, tokenizer, cap, head, ref_store, params, bar) -> tuple[list[dict], list[dict]]:
    import torch

    max_new = config.get(params, "bench.max_new_tokens", int)
    gens = code.generate(model, tokenizer, task_items, max_new, config.get(params, "bench.gen_batch", int, default=8), bar)
    rows, entries = [], []
    allow_weak = config.get(params, "bench.allow_weak_sandbox", bool, default=False)
    for item, gen in zip(task_items, gens):
        try:
            status = code.run_tests(item, gen, limits(params), allow_weak)
        except sandbox.SandboxError as exc:
            raise SilentzoneError(f"task {task!r}: {exc}") from None
        if ref_store is None:
            seq = gen.prompt_ids + gen.new_ids
            with torch.inference_mode():
                hidden = model.get_decoder()(input_ids=torch.tensor([seq], device=model.device)).last_hidden_state[0, :-1]
            entries.append({"item_id": item["item_id"], "chosen": -1, "tokens": seq, "hidden": hidden.float().cpu().numpy()})
            kld = float("nan")
        else:
            _, seq, ref_hidden = ref_store.get(item["item_id"])
            _check_tokens(task, item["item_id"], seq[: len(gen.prompt_ids)], gen.prompt_ids)
            with torch.inference_mode():
                hidden = model.get_decoder()(input_ids=torch.tensor([seq], device=model.device)).last_hidden_state[0, :-1]
                kld = prompt_kld.mean_kld(head, ref_hidden, mc.lm_logits(model, hidden, cap))
        rows.append({
            "model": name, "task": task, "item_id": item["item_id"], "correct": status == "passed",
            "chosen": None, "chosen_norm": None, "choice_logprobs": None,
            "generation": gen.text, "test_status": status, "prompt_kld": kld, "n_prompt_tokens": len(seq) - 1,
        })
    return rows, entries


def _check_tokens(task: str, item_id: str, ref_tokens: list[int], tokens: list[int]) -> None:
    if list(ref_tokens) != list(tokens):
        raise SilentzoneError(f"task {task!r} item {item_id!r}: tokens differ from the reference bench store (another tokenizer or changed items); rerun `silentzone bench reference`")


def to_frame(rows: list[dict]) -> pd.DataFrame:
    return typed(pd.DataFrame(rows, columns=COLUMNS))


def typed(df: pd.DataFrame) -> pd.DataFrame:
    """Column types of the item table (chosen/chosen_norm nullable: code rows have none)."""
    return df.astype({"model": str, "task": str, "item_id": str, "correct": bool, "chosen": "Int64", "chosen_norm": "Int64",
                      "prompt_kld": "float64", "n_prompt_tokens": "int64"})


def run_task(params, name, task, model, tokenizer, head, prepared_dir, reference_dir) -> pd.DataFrame:
    from ..reference import softcap_of

    kind = registry.get_task(task, params).kind
    if kind == "code" and sandbox.capabilities() != "strict" and not config.get(params, "bench.allow_weak_sandbox", bool, default=False):
        raise SilentzoneError(f"task {task!r}: running generated code needs the strict sandbox (root: namespaces + uid drop); run as root, "
                              "or set bench.allow_weak_sandbox: true (rlimits and a blocked socket module only), or drop the code tasks")
    task_items = items.read_prepared(task, prepared_dir)
    ref_store = None if name == REFERENCE else prompt_kld.TaskStore(task, reference_dir)
    with tqdm(total=len(task_items), desc=f"bench {name} {task}", unit="item") as bar:
        if kind == "mc":
            rows, entries = mc_rows(name, task, task_items, model, tokenizer, softcap_of(model), head, ref_store, bar)
        else:
            rows, entries = code_rows(name, task, task_items, model, tokenizer, softcap_of(model), head, ref_store, params, bar)
    if name == REFERENCE:
        prompt_kld.write_task(task, entries, fingerprint(params, name, task, prepared_dir, None), reference_dir)
    return to_frame(rows)


def run_bench(params: dict, name: str, prepared_dir=None, reference_dir=None, out_dir=None) -> pd.DataFrame:
    """Benchmark one model over every task of params `bench.tasks`; returns (and writes) its item table."""
    prepared_dir = Path(prepared_dir or config.PATHS["prepared"])
    reference_dir = Path(reference_dir or config.PATHS["reference"])
    out_dir = Path(out_dir or config.PATHS["bench"])
    tasks = registry.task_names(params)
    if not tasks:
        raise SilentzoneError(f"{params.get('_source', 'params.yaml')}: bench.tasks is empty; name at least one task (see docs/bench.md)")
    for task in tasks:
        items.read_prepared(task, prepared_dir)  # fail early, before loading a model
    parts_dir = out_dir / ".parts" / name
    model = tokenizer = head = None
    frames = []
    for task in tasks:
        fp = fingerprint(params, name, task, prepared_dir, None if name == REFERENCE else reference_dir)
        part, stamp = parts_dir / f"{task}.parquet", parts_dir / f"{task}.json"
        done = part.exists() and stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == fp
        if done and name == REFERENCE:
            done = prompt_kld.task_fingerprint(task, reference_dir) == fp
        if not done:
            if model is None:
                model, tokenizer = load_model(params, name)
                if name == REFERENCE:
                    prompt_kld.write_head(model, tokenizer, reference_dir)
                else:
                    head = prompt_kld.ReferenceHead(reference_dir)
            frame = run_task(params, name, task, model, tokenizer, head, prepared_dir, reference_dir)
            io.write_parquet(part, frame)
            io.write_json(stamp, {"fingerprint": fp, "n_items": len(frame)})
        frames.append(io.read_parquet(part, f"bench part {task} of {name!r}"))
    table = typed(pd.concat(frames, ignore_index=True))
    io.write_parquet(out_dir / f"{name}.parquet", table)
    return table


def add_arguments(p):
    p.add_argument("model", help='"reference" (run it first) or a quant name from params `cohort`')
    p.add_argument("--prepared", default=config.PATHS["prepared"], help="prepared items root (default: data/prepared)")
    p.add_argument("--reference-dir", default=config.PATHS["reference"], help="reference store root (default: data/reference)")
    p.add_argument("--out", default=config.PATHS["bench"], help="output folder (default: data/bench)")


def run(args):
    params = config.load(args.params)
    table = run_bench(params, args.model, args.prepared, args.reference_dir, args.out)
    summary = table.groupby("task", sort=False)["correct"].mean()
    kld = table["prompt_kld"].mean()
    print(f"bench {args.model}: " + ", ".join(f"{t} {v:.3f}" for t, v in summary.items()) + ("" if np.isnan(kld) else f"; mean prompt KLD {kld:.4g}"))
    return 0
