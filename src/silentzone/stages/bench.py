"""bench MODEL: per-item benchmark outcomes and per-prompt KLD of the reference or one quant →
data/bench/<MODEL>.parquet (one row per item; columns in silentzone.schema.ITEM_COLUMNS).

`bench reference` runs first: it also stores, per task, each item's sequence (prompt + the
reference's answer) and the reference's final hidden states over it (data/reference/bench/, in the
one reference-store format of silentzone.refstore); a quant's per-prompt KLD is the mean token KLD
(silentzone.metrics) against the reference over that same sequence. Each task is written as a part
(atomically) under data/bench/.parts/<MODEL>/, so an interrupted run resumes at the first unfinished task;
a part is reused only when made from the same inputs and code and intact (its sha256), else recomputed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from .. import io, metrics, provenance, refstore
from .. import task_registry as registry
from ..bench import batched, code, mc, sandbox
from ..data import items as bench_items
from ..errors import SilentzoneError
from ..layout import Layout
from ..model import head as lm
from ..schema import ITEM_COLUMNS, REFERENCE, typed_items


def limits(params) -> sandbox.Limits:
    b = params.bench
    return sandbox.Limits(timeout_s=b.timeout_s, memory_mb=b.memory_mb, disk_mb=b.disk_mb)


def fingerprint(params, name: str, task: str, layout: Layout, with_reference: bool) -> str:
    """Everything a task's part depends on: its prepared items, the bench/model params, and for a
    quant the reference segment it was compared with."""
    h = hashlib.sha256()
    h.update(layout.bench_items(task).read_bytes())
    keys = {
        "seed": params.seed,
        "model": params.model.model_dump(),
        "threads": params.threads,
        "bench": params.bench.model_dump(),
        "engine": params.engine.model_dump(
            exclude={"also", "server"}
        ),  # which engine and its settings: parts of another are stale
    }
    keys["cohort_entry"] = params.cohort.get(name)
    if name in params.engine.server.members:  # a served member's parts are its server's (only its own entry counts)
        keys["server"] = params.engine.server.members[name].model_dump()
    keys["code"] = provenance.code_sha256("bench-reference" if name == REFERENCE else "bench")  # parts of other code are stale
    h.update(json.dumps([name, task, keys], sort_keys=True, default=str).encode())
    if with_reference:
        h.update(str(refstore.bench_fingerprint(layout.reference, task)).encode())
    return h.hexdigest()


class Context:
    """What scoring one task needs: the model under test and, for a quant, the reference to compare with."""

    def __init__(self, name: str, model, tokenizer, head_R=None, segment: refstore.Segment | None = None):
        self.name, self.model, self.tokenizer = name, model, tokenizer
        self.cap = lm.softcap_of(model)
        self.head_R, self.segment = head_R, segment
        self.segments: dict[str, refstore.Segment] = {}  # a quant's reference segments by task, opened (checked) up front

    @property
    def is_reference(self) -> bool:
        return self.head_R is None

    def reference_path(self, task: str, item_id: str) -> tuple[int, np.ndarray, np.ndarray]:
        """(the reference's chosen choice, its token ids, its hidden states) for one item."""
        i = self.segment.lookup(item_id)
        return int(self.segment.manifest["chosen"][i]), self.segment.tokens(i), self.segment.hidden(i)

    def prompt_kld(self, hidden_R: np.ndarray, hidden_q) -> float:
        import torch

        with torch.inference_mode():
            return metrics.prompt_kld(self.head_R, hidden_R, lm.lm_logits(self.model, hidden_q, self.cap))

    def prompt_klds(self, hidden_R: list[np.ndarray], hidden_q: list) -> list[float]:
        """prompt_kld of several prompts in one pass over their concatenated positions."""
        import torch

        with torch.inference_mode():
            return metrics.prompt_klds(
                self.head_R, hidden_R, torch.cat(hidden_q), lambda h: lm.lm_logits(self.model, h, self.cap)
            )


def _check_tokens(task: str, item_id: str, ref_tokens, tokens) -> None:
    if list(ref_tokens) != list(tokens):
        raise SilentzoneError(
            f"task {task!r} item {item_id!r}: tokens differ from the reference bench store (another tokenizer or changed items); "
            "rerun `silentzone bench reference`"
        )


def _row(ctx: Context, task: str, item: dict, correct: bool, kld: float, n_tokens: int, **fields) -> dict:
    base = {
        "model": ctx.name,
        "task": task,
        "item_id": item["item_id"],
        "correct": bool(correct),
        "chosen": None,
        "chosen_norm": None,
        "choice_logprobs": None,
        "generation": None,
        "test_status": None,
        "prompt_kld": kld,
        "n_prompt_tokens": n_tokens,
    }
    return {**base, **fields}


CHUNK_BATCHES = 16  # items are scored in chunks of about this many batches (bounds the hidden states held)


def _chunks(requests: list, batch_tokens: int) -> list[tuple[int, int]]:
    """(start, stop) ranges of consecutive items, each about CHUNK_BATCHES batches of packed tokens:
    the unit the batched scorer sorts by length and the per-prompt KLD runs over."""
    out, start, tokens = [], 0, 0
    for i, req in enumerate(requests):
        tokens += batched.packed_length(req)
        if tokens >= CHUNK_BATCHES * batch_tokens or i == len(requests) - 1:
            out.append((start, i + 1))
            start, tokens = i + 1, 0
    return out


def likelihood_rows(ctx: Context, task: str, task_items: list[dict], writer, bar, batch_tokens: int) -> list[dict]:
    """mc and greedy items: scored in batches (bench.batched); `correct` by the task's metric. The
    per-prompt KLD runs over context + the reference's answer: mc — the choice its metric picks;
    greedy — the target up to and including the first token where the reference's greedy choice
    leaves it (all of it when the reference is right). Both are prefixes of sequences the scoring
    pass already ran, so no extra forward."""
    spec = registry.get_task(task)
    requests = [mc.request(ctx.tokenizer, item) for item in task_items]
    rows = []
    for start, stop in _chunks(requests, batch_tokens):
        results = batched.score(ctx.model, requests[start:stop], ctx.cap, batch_tokens)
        pending = []  # (item, row fields, positions, hidden_R, hidden_q): rows awaiting the chunk's KLD
        for item, req, res in zip(task_items[start:stop], requests[start:stop], results):
            n_tok = [len(c) for c in req.conts]
            if spec.kind == "mc":
                pick = mc.answer(spec.metric, res.logprobs, item["continuations"], n_tok)
                fields = {
                    "correct": pick == item["label"],
                    "chosen": mc.answer("raw", res.logprobs, item["continuations"], n_tok),
                    "chosen_norm": mc.answer("per_char", res.logprobs, item["continuations"], n_tok),
                    "choice_logprobs": res.logprobs,
                }
                seq, choice = res.tokens[pick], pick
            else:  # greedy: the answer is the greedy tokens up to the first that leaves the target
                target, greedy = req.conts[0], res.greedy[0]
                j = mc.greedy_divergence(target, greedy)
                answer = greedy if j is None else greedy[: j + 1]
                fields = {"correct": j is None, "choice_logprobs": res.logprobs, "generation": ctx.tokenizer.decode(answer)}
                seq, choice = req.contexts[0] + answer, 0
            if ctx.is_reference:
                writer.add(item["item_id"], seq, 0, res.paths[choice][: len(seq) - 1].float().cpu().numpy(), choice)
                rows.append(_row(ctx, task, item, kld=float("nan"), n_tokens=len(seq) - 1, **fields))
                continue
            ref_choice, ref_tokens, hidden_R = ctx.reference_path(task, item["item_id"])
            own = res.tokens[ref_choice]
            n = len(ref_tokens) - 1
            if spec.kind == "mc":
                _check_tokens(task, item["item_id"], ref_tokens, own)
            else:  # the reference's answer may end in a token off the target: compare the positions it was scored at
                _check_tokens(task, item["item_id"], ref_tokens[:n], own[:n])
            pending.append((item, fields, n, hidden_R, res.paths[ref_choice][:n]))
        if pending:
            klds = ctx.prompt_klds([p[3] for p in pending], [p[4] for p in pending])
            rows += [_row(ctx, task, item, kld=kld, n_tokens=n, **fields) for (item, fields, n, _, _), kld in zip(pending, klds)]
        bar.update(stop - start)
    return rows


def code_rows(ctx: Context, task: str, task_items: list[dict], params, writer, bar) -> list[dict]:
    import torch

    gens = code.generate(ctx.model, ctx.tokenizer, task_items, params.bench.max_new_tokens, params.bench.gen_batch, bar)
    rows = []
    for item, gen in zip(task_items, gens):
        try:
            status = code.run_tests(item, gen, limits(params), params.bench.allow_weak_sandbox)
        except sandbox.SandboxError as exc:
            raise SilentzoneError(f"task {task!r}: {exc}") from None
        if ctx.is_reference:
            seq = gen.prompt_ids + gen.new_ids
        else:
            _, seq, hidden_R = ctx.reference_path(task, item["item_id"])
            seq = seq.tolist()
            _check_tokens(task, item["item_id"], seq[: len(gen.prompt_ids)], gen.prompt_ids)
        with torch.inference_mode():
            hidden = lm.final_hidden(ctx.model, torch.tensor([seq], device=ctx.model.device))[0, :-1]
        if ctx.is_reference:
            writer.add(item["item_id"], seq, 0, hidden.float().cpu().numpy(), -1)
            kld = float("nan")
        else:
            kld = ctx.prompt_kld(hidden_R, hidden)
        rows.append(
            _row(
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
    return rows


class _BenchSegment(refstore.SegmentWriter):
    """The reference's sequences of one task, with the choice each one follows."""

    def __init__(self, folder, meta):
        super().__init__(folder, meta)
        self.chosen: list[int] = []

    def add(self, seq_id, tokens, first, hidden, chosen: int) -> None:  # noqa: D401
        super().add(seq_id, tokens, first, hidden)
        self.chosen.append(int(chosen))

    def close(self):
        self.meta = {**self.meta, "chosen": self.chosen}
        return super().close()


def check_sandbox(params, task: str) -> None:
    if registry.get_task(task).kind == "code" and sandbox.capabilities() != "strict" and not params.bench.allow_weak_sandbox:
        raise SilentzoneError(
            f"task {task!r}: running generated code needs the strict sandbox (root: namespaces + uid drop); run as root, "
            "or set bench.allow_weak_sandbox: true (rlimits and a blocked socket module only), or drop the code tasks"
        )


def run_task(params, layout: Layout, ctx: Context, task: str) -> pd.DataFrame:
    kind = registry.get_task(task).kind
    check_sandbox(params, task)
    task_items = bench_items.read_prepared(task, layout.prepared)
    writer = None
    if ctx.is_reference:
        meta = {"task": task, "fingerprint": fingerprint(params, ctx.name, task, layout, False)}
        writer = _BenchSegment(refstore.bench_dir(layout.reference, task), meta)
    else:
        ctx.segment = ctx.segments[task] if task in ctx.segments else refstore.open_bench(layout.reference, task)
    with tqdm(total=len(task_items), desc=f"bench {ctx.name} {task}", unit="item") as bar:
        rows = (
            code_rows(ctx, task, task_items, params, writer, bar)
            if kind == "code"
            else likelihood_rows(ctx, task, task_items, writer, bar, params.bench.batch_tokens)
        )
    if writer is not None:
        writer.close()
    return typed_items(pd.DataFrame(rows, columns=ITEM_COLUMNS))


def open_context(params, layout: Layout, name: str, load_model) -> Context:
    """The torch engine's Context: `load_model()` → (model, tokenizer), and for a quant the reference
    head it is compared with (made by the current params and code, the same vocabulary)."""
    model, tokenizer = load_model()
    head_R = None
    if name != REFERENCE:
        head_R = refstore.read_head(layout.reference, str(model.device))
        provenance.verify_made_by(head_R.manifest, refstore.head_dir(layout.reference) / refstore.MANIFEST, params, "reference")
        head_R.check_vocab(name, model, tokenizer)
    return Context(name, model, tokenizer, head_R)


def run(
    params, layout: Layout, name: str, load_model, open_context=open_context, score_task=None, stamp_extra=None
) -> pd.DataFrame:
    """Benchmark one model over every task of `bench.tasks`; writes and returns its item table.
    `load_model()` → (model, tokenizer) is called only when some task is not already done. Another
    engine passes its own `open_context(params, layout, name, load_model)` and `score_task(params,
    layout, ctx, task)` (default: this module's run_task), and what its stamp adds (`stamp_extra`);
    parts, fingerprints and stamps are shared."""
    score_task = score_task or run_task
    tasks = params.task_names()
    for task in tasks:
        bench_items.read_prepared(task, layout.prepared)  # fail early, before loading a model
    is_ref = name == REFERENCE
    segments = {} if is_ref else reference_inputs(params, layout, tasks)
    parts_dir = layout.bench_parts(name)
    ctx, frames = None, []
    for task in tasks:
        fp = fingerprint(params, name, task, layout, not is_ref)
        part, stamp = parts_dir / f"{task}.parquet", parts_dir / f"{task}.json"
        done = _finished(part, stamp, fp)
        if done and is_ref:
            done = refstore.bench_fingerprint(layout.reference, task) == fp
        if not done:
            if ctx is None:
                ctx = open_context(params, layout, name, load_model)
                ctx.segments = segments
            frame = score_task(params, layout, ctx, task)
            io.write_parquet(part, frame)
            io.write_json(stamp, {"fingerprint": fp, "n_items": len(frame), "sha256": io.sha256_file(part)})
        frames.append(io.read_parquet(part, f"bench part {task} of {name!r}"))
    table = typed_items(pd.concat(frames, ignore_index=True))
    io.write_parquet(layout.bench_table(name), table)
    stage = "bench-reference" if is_ref else "bench"
    found = provenance.stamp(params, stage, [layout.bench_table(name)], None if is_ref else name)
    found.update(stamp_extra or {})  # the server engine: its server (prompt_kld is NaN there)
    io.write_json(layout.bench_stamp(name), found)
    return table


def reference_inputs(params, layout: Layout, tasks: list[str]) -> dict[str, refstore.Segment]:
    """A quant's inputs from the reference, all checked before anything is written (also when every
    part is done, since the table is stamped anew): the head, made by the current params and code, and
    per task the `bench reference` segment, made from the current items, params and code, intact."""
    head = refstore.head_dir(layout.reference)
    provenance.verify_made_by(
        refstore.read_manifest(head, "rerun `silentzone reference`"), head / refstore.MANIFEST, params, "reference"
    )
    segments = {}
    for task in tasks:
        made = refstore.bench_fingerprint(layout.reference, task)
        if made is not None and made != fingerprint(params, REFERENCE, task, layout, False):
            raise SilentzoneError(
                f"{refstore.bench_dir(layout.reference, task)}: stale, made from other items, params (seed, model, threads, bench) "
                f"or code than {layout.bench_items(task)} and {params.source}; rerun `silentzone bench reference`"
            )
        segments[task] = refstore.open_bench(layout.reference, task)
    return segments


def _finished(part: Path, stamp: Path, fp: str) -> bool:
    """Whether a task's part is done for these inputs and intact. A damaged part (or stamp) is
    discarded and recomputed, and we say so; a part made from other inputs is recomputed silently."""
    if not part.exists() or not stamp.exists():
        return False
    try:
        found = json.loads(stamp.read_text(encoding="utf-8"))
        made, digest = found.get("fingerprint"), found.get("sha256")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        made = digest = None
    if made is not None and made != fp:
        return False
    if made is None or digest != io.sha256_file(part):  # a readable but altered part too
        print(f"{part}: damaged resume part, discarded and recomputed", file=sys.stderr)
        part.unlink()
        stamp.unlink()
        return False
    return True


def summary(name: str, table: pd.DataFrame) -> str:
    scores = table.groupby("task", sort=False)["correct"].mean()
    kld = table["prompt_kld"].mean()
    return (
        f"bench {name}: "
        + ", ".join(f"{t} {v:.3f}" for t, v in scores.items())
        + ("" if np.isnan(kld) else f"; mean prompt KLD {kld:.4g}")
    )
