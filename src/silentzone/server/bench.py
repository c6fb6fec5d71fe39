"""Per-item benchmark outcomes of a member served by an inference server.

The same items, token ids and metrics as in-process (silentzone.bench), from the server's
log-probabilities of the gold continuations (vLLM's `prompt_logprobs` over context + continuation):
  - multiple choice: one prompt per choice; its continuation's summed log-probability is
    `choice_logprobs`; `chosen` (raw), `chosen_norm` (per character) and `correct` by the task's metric;
  - greedy (LAMBADA): one prompt, context + target; correct when the server's top-1 is the target at
    every target position; `generation` the top-1 tokens along the target up to the first that leaves it;
  - code: greedy generation on the server (temperature 0, stopped at the closing fence), then the
    same extraction and sandboxed tests as in-process.
`prompt_kld` needs the member's full distribution: NaN (the stamp records the server). The token ids
sent are checked against the reference's bench store, as in-process.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import refstore
from .. import task_registry as registry
from ..bench import code, mc
from ..data import items as bench_items
from ..errors import SilentzoneError
from ..layout import Layout
from ..schema import ITEM_COLUMNS, typed_items
from .client import Endpoint, generate, map_ordered, prompt_logprobs

LIKELIHOOD_K = 1  # the observed token's log-probability comes with every entry; top-1 gives the greedy token


def model_folder(params, layout: Layout):
    """The reference's Hugging Face folder (a GGUF's fp32 cache, or the hf: directory); None for tiny."""
    from ..model import load as model_load

    kind, path = model_load.resolve_source(params.model.source)
    return None if kind == "tiny" else layout.models / params.model.name if kind == "gguf" else path


def tokenizer_of(params, layout: Layout):
    """The reference's tokenizer alone (a served member shares it; its weights are not loaded)."""
    from ..model import load as model_load

    folder = model_folder(params, layout)
    if folder is None:
        return model_load.build_byte_tokenizer(params.model.tiny.vocab_size)
    from transformers import AutoTokenizer

    if not (folder / "tokenizer_config.json").exists() and not (folder / "tokenizer.json").exists():
        raise SilentzoneError(
            f"{folder}: no tokenizer (the reference's fp32 cache is made by `silentzone reference`); run it first"
        )
    return AutoTokenizer.from_pretrained(folder)


def eos_ids(params, layout: Layout, tokenizer) -> set[int]:
    """The ids that end a generation, as in-process (silentzone.bench.code.eos_ids): the tokenizer's
    EOS and the model's generation config's (which the server stops on too)."""
    import json

    ids = {tokenizer.eos_token_id} - {None}
    folder = model_folder(params, layout)
    config = None if folder is None else folder / "generation_config.json"
    if config is not None and config.exists():
        found = json.loads(config.read_text(encoding="utf-8")).get("eos_token_id")
        ids |= set(found if isinstance(found, list) else [found] if found is not None else [])
    return ids


def _check(task: str, item_id: str, ref_tokens, tokens) -> None:
    if list(ref_tokens) != list(tokens):
        raise SilentzoneError(
            f"task {task!r} item {item_id!r}: tokens differ from the reference bench store (another tokenizer or changed items); "
            "rerun `silentzone bench reference`"
        )


def _row(name: str, task: str, item: dict, correct: bool, n_tokens: int, **fields) -> dict:
    base = dict.fromkeys(ITEM_COLUMNS)
    base.update(
        model=name, task=task, item_id=item["item_id"], correct=bool(correct), prompt_kld=float("nan"), n_prompt_tokens=n_tokens
    )
    return {**base, **fields}


def likelihood_rows(name: str, endpoint: Endpoint, tokenizer, task: str, task_items: list[dict], segment, bar) -> list[dict]:
    spec = registry.get_task(task)
    requests = [mc.request(tokenizer, item) for item in task_items]
    prompts, owner = [], []
    for i, req in enumerate(requests):
        for k, (ctx, cont) in enumerate(zip(req.contexts, req.conts)):
            prompts.append(ctx + cont)
            owner.append((i, k))
    answers = prompt_logprobs(endpoint, prompts, LIKELIHOOD_K, f"bench {name} {task}")
    per_item: list[dict[int, object]] = [{} for _ in requests]
    for (i, k), lp in zip(owner, answers):
        per_item[i][k] = lp
    rows = []
    for item, req, got in zip(task_items, requests, per_item):
        spans = [slice(len(ctx) - 1, len(ctx) + len(cont) - 1) for ctx, cont in zip(req.contexts, req.conts)]
        logprobs = [float(np.sum(got[k].logprob[spans[k]], dtype=np.float64)) for k in range(len(req.conts))]
        n_tok = [len(c) for c in req.conts]
        ref_choice = int(segment.manifest["chosen"][segment.lookup(item["item_id"])])
        ref_tokens = segment.tokens(segment.lookup(item["item_id"]))
        n = len(ref_tokens) - 1
        if spec.kind == "mc":
            pick = mc.answer(spec.metric, logprobs, item["continuations"], n_tok)
            fields = {
                "correct": pick == item["label"],
                "chosen": mc.answer("raw", logprobs, item["continuations"], n_tok),
                "chosen_norm": mc.answer("per_char", logprobs, item["continuations"], n_tok),
                "choice_logprobs": logprobs,
            }
            _check(task, item["item_id"], ref_tokens, req.contexts[ref_choice] + req.conts[ref_choice])
        else:  # greedy: the server's top-1 at every target position
            target = req.conts[0]
            greedy = got[0].top_ids[spans[0], 0].tolist()
            j = mc.greedy_divergence(target, greedy)
            answer = greedy if j is None else greedy[: j + 1]
            fields = {"correct": j is None, "choice_logprobs": logprobs, "generation": tokenizer.decode(answer)}
            _check(task, item["item_id"], ref_tokens[:n], (req.contexts[0] + target)[:n])
        rows.append(_row(name, task, item, n_tokens=n, **fields))
        bar.update(1)
    return rows


def run_task(params, layout: Layout, name: str, endpoint: Endpoint, tokenizer, task: str, run_tests) -> pd.DataFrame:
    """One task's item table for a served member (nothing written here)."""
    from tqdm import tqdm

    kind = registry.get_task(task).kind
    task_items = bench_items.read_prepared(task, layout.prepared)
    segment = refstore.open_bench(layout.reference, task)
    with tqdm(total=len(task_items), desc=f"bench {name} {task} (server {endpoint.model})", unit="item") as bar:
        if kind == "code":
            rows = generated_rows(name, endpoint, tokenizer, task, task_items, segment, params, layout, run_tests, bar)
        else:
            rows = likelihood_rows(name, endpoint, tokenizer, task, task_items, segment, bar)
    return typed_items(pd.DataFrame(rows, columns=ITEM_COLUMNS))


def generated_rows(name, endpoint: Endpoint, tokenizer, task, task_items, segment, params, layout, run_tests, bar) -> list[dict]:
    """Code items: greedy generation on the server, stopped at the closing fence, then the tests."""
    prompts = [code.prompt_ids(tokenizer, item) for item in task_items]
    for item, ids in zip(task_items, prompts):
        _check(task, item["item_id"], segment.tokens(segment.lookup(item["item_id"]))[: len(ids)], ids)
    stops = eos_ids(params, layout, tokenizer)

    def one(ids):
        return generate(endpoint, ids, params.bench.max_new_tokens, stop=[code.FENCE])

    outs = map_ordered(endpoint, one, prompts)
    rows = []
    for item, ids, out in zip(task_items, prompts, outs):
        new = out["token_ids"]
        keep, closed = code.stop_index(tokenizer, new, stops)
        gen = code.Generated(ids, new[:keep], tokenizer.decode(new[:keep], skip_special_tokens=True), closed)
        status = run_tests(item, gen)
        n = len(segment.tokens(segment.lookup(item["item_id"]))) - 1
        rows.append(_row(name, task, item, correct=status == "passed", n_tokens=n, generation=gen.text, test_status=status))
        bar.update(1)
    return rows
