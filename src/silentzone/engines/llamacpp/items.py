"""The bench stage through llama.cpp: the torch engine's items, outcomes and per-prompt KLD, as deployed.

Each choice of an item is a sequence (its context, then its continuation); sequences run several per
llama_decode, sorted by length, and llama.cpp returns logits only where they are scored: the
positions that predict a continuation token, and — for a quant — every position of the reference's
path (the prompt plus the reference's answer), for the per-prompt KLD against the reference's stored
hidden states. The reference's context has embeddings on (llama.cpp then outputs every position):
its logits score the choices and its hidden states along the chosen path are stored
(data/engines/<engine>/reference/bench/, or data/reference/bench/ when llama.cpp is the run's engine).

`correct`, `chosen`, `choice_logprobs` (summed float32 log-softmax values in float64, as the torch
engine sums them), the greedy answer and the per-prompt KLD follow stages/bench.py's definitions
through its own helpers; code tasks generate greedily through llama.cpp, one prompt at a time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm import tqdm

from ... import metrics, provenance, refstore
from ... import task_registry as registry
from ...bench import code, mc, sandbox
from ...data import items as bench_items
from ...errors import SilentzoneError
from ...schema import ITEM_COLUMNS, REFERENCE, typed_items
from ...stages import bench as stage
from . import files, runtime
from .common import check_vocab, settings

ROW_ELEMENTS = 1 << 26  # logits held per scoring group (rows x vocabulary): 256 MiB of float32
SEQS_PER_DECODE = 16  # sequences per context (each its own KV cells); llama.cpp batches their tokens n_batch at a time


class Context(stage.Context):
    """stages.bench.Context with a llama.cpp model in place of the torch one."""

    def __init__(self, name: str, model: runtime.Model, head_R=None):
        self.name, self.model, self.tokenizer = name, model, model.tokenizer
        self.cap = None
        self.head_R, self.segment = head_R, None
        self.segments = {}


def open_context(params, layout, name: str, load_model) -> Context:
    model = load_model()
    head_R = None
    if name != REFERENCE:
        head_R = refstore.read_head(layout.reference)
        provenance.verify_made_by(head_R.manifest, refstore.head_dir(layout.reference) / refstore.MANIFEST, params, "reference")
        check_vocab(name, head_R.manifest, model.tokenizer)
    return Context(name, model, head_R)


def _log_softmax_picked(z: np.ndarray, targets) -> tuple[np.ndarray, np.ndarray]:
    """(log-probability of each target, argmax) per row, float32 log-softmax as the torch engine's."""
    import torch

    logp = torch.log_softmax(torch.from_numpy(z), dim=-1)
    picked = logp.gather(1, torch.as_tensor(targets, dtype=torch.long)[:, None])[:, 0].double().numpy()
    return picked, logp.argmax(-1).numpy()


def _groups(sizes: list[int], limit: int) -> list[list[int]]:
    """Consecutive indices whose summed sizes stay under `limit` (one oversized alone)."""
    out, cur, total = [], [], 0
    for i, n in enumerate(sizes):
        if cur and total + n > limit:
            out.append(cur)
            cur, total = [], 0
        cur.append(i)
        total += n
    return out + ([cur] if cur else [])


def likelihood_rows(ctx: Context, task: str, task_items: list[dict], writer, bar, params) -> list[dict]:
    """mc and greedy items (see stages/bench.likelihood_rows for what each field is)."""
    spec = registry.get_task(task)
    requests = [mc.request(ctx.tokenizer, item) for item in task_items]
    # per item: its sequences, and the output positions each needs
    plans = []
    for item, req in zip(task_items, requests):
        ref_choice = None if ctx.is_reference else ctx.reference_path(task, item["item_id"])[0]
        seqs, outs = [], []
        for k, (c, t) in enumerate(zip(req.contexts, req.conts)):
            seq = c + t
            whole = ctx.is_reference or k == ref_choice or spec.kind == "greedy"
            seqs.append(seq)
            outs.append(np.arange(0 if whole else len(c) - 1, len(seq) - 1))
        plans.append((seqs, outs))
    seq_len = max(len(s) for seqs, _ in plans for s in seqs)
    seq_len = -(-seq_len // 256) * 256  # KV cells per sequence, padded as llama.cpp pads them
    vocab = ctx.model.n_vocab
    rows = []
    with ctx.model.context(SEQS_PER_DECODE, seq_len, embeddings=ctx.is_reference) as c:
        for group in _groups([sum(len(o) for o in outs) * vocab for _, outs in plans], ROW_ELEMENTS):
            flat_seqs = [s for i in group for s in plans[i][0]]
            flat_outs = [o for i in group for o in plans[i][1]]
            order = sorted(range(len(flat_seqs)), key=lambda j: (len(flat_seqs[j]), j))  # similar lengths share a decode
            logits, hidden = c.run([flat_seqs[j] for j in order], [flat_outs[j] for j in order])
            back = {j: r for r, j in enumerate(order)}
            j = 0
            pending = []
            for i in group:
                item, req = task_items[i], requests[i]
                n_choices = len(plans[i][0])
                idx = [back[j + k] for k in range(n_choices)]
                j += n_choices
                zs = [logits[r] for r in idx]
                hs = [hidden[r] for r in idx] if hidden is not None else None
                rows_or_pending = _item(ctx, task, spec, item, req, plans[i], zs, hs, writer)
                if isinstance(rows_or_pending, dict):
                    rows.append(rows_or_pending)
                else:
                    pending.append(rows_or_pending)
            for item, f, n, hidden_R, z in pending:  # one item at a time: no copy of the group's logits
                kld = metrics.prompt_kld(ctx.head_R, hidden_R, _tensor(z))
                rows.append(stage._row(ctx, task, item, kld=kld, n_tokens=n, **f))
            bar.update(len(group))
    return rows


def _tensor(array):
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


def _item(ctx, task, spec, item, req, plan, zs, hs, writer):
    """One item's row (reference) or its pending KLD inputs (quant): (item, fields, n, hidden_R, logits_q)."""
    seqs, outs = plan
    logprobs, greedy = [], []
    for (c, t), z, o in zip(zip(req.contexts, req.conts), zs, outs):
        at = np.searchsorted(o, np.arange(len(c) - 1, len(c) - 1 + len(t)))  # rows of the continuation positions
        picked, arg = _log_softmax_picked(z[at], t)
        logprobs.append(float(picked.sum()))
        greedy.append(arg.tolist())
    n_tok = [len(t) for t in req.conts]
    if spec.kind == "mc":
        pick = mc.answer(spec.metric, logprobs, item["continuations"], n_tok)
        fields = {
            "correct": pick == item["label"],
            "chosen": mc.answer("raw", logprobs, item["continuations"], n_tok),
            "chosen_norm": mc.answer("per_char", logprobs, item["continuations"], n_tok),
            "choice_logprobs": logprobs,
        }
        seq, choice = seqs[pick], pick
    else:
        target, g = req.conts[0], greedy[0]
        j = mc.greedy_divergence(target, g)
        answer = g if j is None else g[: j + 1]
        fields = {"correct": j is None, "choice_logprobs": logprobs, "generation": ctx.tokenizer.decode(answer)}
        seq, choice = req.contexts[0] + answer, 0
    if ctx.is_reference:
        writer.add(item["item_id"], seq, 0, hs[choice][: len(seq) - 1], choice)
        return stage._row(ctx, task, item, kld=float("nan"), n_tokens=len(seq) - 1, **fields)
    ref_choice, ref_tokens, hidden_R = ctx.reference_path(task, item["item_id"])
    n = len(ref_tokens) - 1
    own = seqs[ref_choice]
    if spec.kind == "mc":
        stage._check_tokens(task, item["item_id"], ref_tokens, own)
    else:
        stage._check_tokens(task, item["item_id"], ref_tokens[:n], own[:n])
    return (item, fields, n, hidden_R, zs[ref_choice][:n])


def code_rows(ctx: Context, task: str, task_items: list[dict], params, writer, bar) -> list[dict]:
    """Greedy generation through llama.cpp (stops on EOS/EOG or the closing fence), tests in the sandbox,
    per-prompt KLD along the reference's sequence (prompt + its generation)."""

    class EndOfGeneration:
        def __contains__(self, token):
            return ctx.tokenizer.is_eog(token)

    stops = EndOfGeneration()
    max_new = params.bench.max_new_tokens
    prompts = [code.prompt_ids(ctx.tokenizer, item) for item in task_items]
    seqs = []
    if not ctx.is_reference:
        seqs = [ctx.reference_path(task, item["item_id"])[1].tolist() for item in task_items]
    longest = max([len(p) + max_new for p in prompts] + [len(s) for s in seqs])
    rows = []
    with ctx.model.context(1, -(-longest // 256) * 256, embeddings=ctx.is_reference) as c:
        for i, (item, prompt) in enumerate(zip(task_items, prompts)):
            new = c.greedy(prompt, max_new, lambda ids: ids[-1] in stops or code._fence_at(ctx.tokenizer, ids, len(ids) - 1))
            keep, closed = code.stop_index(ctx.tokenizer, new, stops)
            gen = code.Generated(prompt, new[:keep], ctx.tokenizer.decode(new[:keep]), closed)
            try:
                status = code.run_tests(item, gen, stage.limits(params), params.bench.allow_weak_sandbox)
            except sandbox.SandboxError as exc:
                raise SilentzoneError(f"task {task!r}: {exc}") from None
            seq = gen.prompt_ids + gen.new_ids if ctx.is_reference else seqs[i]
            if not ctx.is_reference:
                stage._check_tokens(task, item["item_id"], seq[: len(prompt)], prompt)
            logits, hidden = c.run([seq], [np.arange(0, len(seq) - 1)])
            if ctx.is_reference:
                writer.add(item["item_id"], seq, 0, hidden[0], -1)
                kld = float("nan")
            else:
                hidden_R = ctx.reference_path(task, item["item_id"])[2]
                kld = metrics.prompt_kld(ctx.head_R, hidden_R, _tensor(logits[0]))
            rows.append(
                stage._row(
                    ctx,
                    task,
                    item,
                    correct=status == "passed",
                    kld=kld,
                    n_tokens=len(seq) - 1,
                    generation=gen.text,
                    test_status=status,
                )
            )
            bar.update(1)
    return rows


def score_task(params, layout, ctx: Context, task: str) -> pd.DataFrame:
    kind = registry.get_task(task).kind
    if kind == "code" and sandbox.capabilities() != "strict" and not params.bench.allow_weak_sandbox:
        raise SilentzoneError(
            f"task {task!r}: running generated code needs the strict sandbox (root: namespaces + uid drop); run as root, "
            "or set bench.allow_weak_sandbox: true (rlimits and a blocked socket module only), or drop the code tasks"
        )
    task_items = bench_items.read_prepared(task, layout.prepared)
    writer = None
    if ctx.is_reference:
        meta = {"task": task, "fingerprint": stage.fingerprint(params, ctx.name, task, layout, False), "engine": "llamacpp"}
        writer = stage._BenchSegment(refstore.bench_dir(layout.reference, task), meta)
    else:
        ctx.segment = ctx.segments[task] if task in ctx.segments else refstore.open_bench(layout.reference, task)
    with tqdm(total=len(task_items), desc=f"bench {ctx.name} {task} (llama.cpp)", unit="item") as bar:
        rows = (
            code_rows(ctx, task, task_items, params, writer, bar)
            if kind == "code"
            else likelihood_rows(ctx, task, task_items, writer, bar, params)
        )
    if writer is not None:
        writer.close()
    return typed_items(pd.DataFrame(rows, columns=ITEM_COLUMNS))


def run(params, layout, name: str):
    from ...quant.load import check_name

    check_name(params, name)
    state = {}

    def load_model():
        path, _ = files.member_file(params, name)
        state["model"] = runtime.Model(path, settings(params))
        return state["model"]

    try:
        return stage.run(params, layout, name, load_model, open_context=open_context, score_task=score_task)
    finally:
        if "model" in state:
            state["model"].close()
