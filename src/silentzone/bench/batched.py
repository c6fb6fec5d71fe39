"""Batched log-likelihood scoring: many items' continuations in few forward passes.

Each item becomes one *packed row*: its distinct context(s) once, then every continuation after
them. A block attention mask lets a continuation see only its own context and itself (causally),
and position ids restart at the end of its context, so every continuation is computed as if it
followed its context alone — the shared context runs once per item, as with the per-item KV cache
of `mc.score_item`, but many items share one forward. Rows are sorted by length and cut into
right-padded batches of at most `batch_tokens` (rows × width); padding attends only to padding, and
no real position attends to it. (Models with sliding-window layers get the window applied on the
same positions.) lm_head and the log-softmax run only at the positions that predict a
continuation token, in row chunks, so no batch materialises logits for every position.

Returned per item: the summed log-probability of each continuation (float64 sum of float32
log-softmax values, as `mc.score_item`), the greedy (argmax) token at every continuation position,
and each choice's *path* — the final hidden states of context + continuation but its last token —
for the per-prompt KLD, as views into the batch's hidden states (no copy until asked).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..model.head import lm_logits

HEAD_CHUNK_ELEMENTS = 1 << 24  # logits per lm_head chunk (rows x vocab): 64 MiB of float32


@dataclass
class Request:
    """One item, tokenised: per choice its context and continuation ids (contexts may repeat)."""

    contexts: list[list[int]]
    conts: list[list[int]]


class Paths:
    """paths[k]: hidden states [len(tokens[k]) - 1, hidden] of choice k (a concatenation of views)."""

    def __init__(self, hidden, spans):
        self._hidden, self._spans = hidden, spans  # spans[k] = (ctx_start, ctx_len, cont_start, cont_len)

    def __len__(self) -> int:
        return len(self._spans)

    def __getitem__(self, k: int):
        import torch

        cs, cl, ts, tl = self._spans[k]
        return torch.cat([self._hidden[cs : cs + cl], self._hidden[ts : ts + tl - 1]])


@dataclass
class Result:
    logprobs: list[float]  # summed log-probability of each continuation
    greedy: list[list[int]]  # argmax token at each continuation position
    tokens: list[list[int]]  # per choice: context + continuation ids
    paths: Paths = field(repr=False)


def pack(req: Request) -> tuple[list[int], list[int], list[int], list[int], list[tuple[int, int, int, int]]]:
    """(tokens, positions, block, part, spans) of one packed row. block = index of the context a token
    belongs to (a continuation: its context's); part = -1 for context tokens, else the choice index."""
    tokens, positions, block, part, spans = [], [], [], [], []
    starts: dict[tuple[int, ...], tuple[int, int, int]] = {}
    for k, (ctx, cont) in enumerate(zip(req.contexts, req.conts)):
        key = tuple(ctx)
        if key not in starts:
            starts[key] = (len(tokens), len(ctx), len(starts))
            tokens += ctx
            positions += range(len(ctx))
            block += [starts[key][2]] * len(ctx)
            part += [-1] * len(ctx)
        cs, cl, b = starts[key]
        spans.append((cs, cl, len(tokens), len(cont)))
        tokens += cont
        positions += range(cl, cl + len(cont))
        block += [b] * len(cont)
        part += [k] * len(cont)
    return tokens, positions, block, part, spans


def packed_length(req: Request) -> int:
    """Tokens of a request's packed row: each distinct context once, every continuation."""
    return sum(len(c) for c in {tuple(c) for c in req.contexts}) + sum(len(c) for c in req.conts)


def batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices sorted by length (stable), cut so that rows x width <= batch_tokens (a longer row alone)."""
    out, cur, width = [], [], 0
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        wider = max(width, lengths[i])
        if cur and wider * (len(cur) + 1) > batch_tokens:
            out.append(cur)
            cur, wider = [], lengths[i]
        cur.append(i)
        width = wider
    if cur:
        out.append(cur)
    return out


def score(model, requests: list[Request], cap: float | None, batch_tokens: int) -> list[Result]:
    """Every request's continuation log-likelihoods, greedy tokens and paths, in request order."""
    import torch

    packed = [pack(r) for r in requests]
    results: list[Result | None] = [None] * len(requests)
    decoder, device = model.get_decoder(), model.device
    with torch.inference_mode():
        for batch in batches([len(p[0]) for p in packed], batch_tokens):
            width = max(len(packed[i][0]) for i in batch)
            ids = torch.zeros(len(batch), width, dtype=torch.long)
            pos = torch.arange(width).repeat(len(batch), 1)
            block = torch.full((len(batch), width), -2, dtype=torch.long)  # padding: a block of its own
            part = torch.full((len(batch), width), -3, dtype=torch.long)
            rows, targets, counts = [], [], []
            for r, i in enumerate(batch):
                tokens, positions, blk, prt, spans = packed[i]
                n = len(tokens)
                ids[r, :n] = torch.tensor(tokens)
                pos[r, :n] = torch.tensor(positions)
                block[r, :n] = torch.tensor(blk)
                part[r, :n] = torch.tensor(prt)
                for cs, cl, ts, tl in spans:  # the position before each continuation token predicts it
                    rows.append(r * width + cs + cl - 1)
                    rows.extend(r * width + ts + q for q in range(tl - 1))
                    targets.extend(tokens[ts : ts + tl])
                    counts.append(tl)
            causal = torch.ones(width, width, dtype=torch.bool).tril()
            allowed = (
                causal
                & (block[:, :, None] == block[:, None, :])
                & ((part[:, None, :] == -1) | (part[:, :, None] == part[:, None, :]))
            )
            mask = _attention_mask(model, allowed, pos, device)
            hidden = decoder(input_ids=ids.to(device), position_ids=pos.to(device), attention_mask=mask).last_hidden_state
            flat = hidden.reshape(-1, hidden.shape[-1])
            picked, greedy = _continuation_scores(
                model, flat, torch.tensor(rows, device=device), torch.tensor(targets, device=device), cap
            )
            starts = np.concatenate([[0], np.cumsum(counts)])
            c = 0
            for r, i in enumerate(batch):
                tokens, _, _, _, spans = packed[i]
                lps, gs, seqs = [], [], []
                for cs, cl, ts, tl in spans:
                    lps.append(float(picked[starts[c] : starts[c + 1]].sum()))
                    gs.append(greedy[starts[c] : starts[c + 1]].tolist())
                    seqs.append(tokens[cs : cs + cl] + tokens[ts : ts + tl])
                    c += 1
                results[i] = Result(lps, gs, seqs, Paths(hidden[r], spans))
    return results


def _attention_mask(model, allowed, pos, device):
    """The additive 4D mask (0 where allowed, the dtype's minimum elsewhere), used as given by the
    model. Models with sliding-window layers (Gemma 3) get one mask per layer type, the sliding one
    also limited to keys less than `sliding_window` positions back, as the model's own mask is."""
    import torch

    dtype = next(model.parameters()).dtype

    def additive(ok):
        return torch.zeros(ok.shape, dtype=dtype).masked_fill_(~ok, torch.finfo(dtype).min)[:, None].to(device)

    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if "sliding_attention" not in set(getattr(cfg, "layer_types", None) or []):
        return additive(allowed)
    near = (pos[:, :, None] - pos[:, None, :]) < cfg.sliding_window
    return {"full_attention": additive(allowed), "sliding_attention": additive(allowed & near)}


def _continuation_scores(model, flat, rows, targets, cap):
    """(float64 log-probability of each target, argmax token) at the given rows of flat hidden states."""
    import torch

    vocab = model.get_output_embeddings().weight.shape[0]
    step = max(1, HEAD_CHUNK_ELEMENTS // vocab)
    picked, greedy = [], []
    for start in range(0, len(rows), step):
        logp = torch.log_softmax(lm_logits(model, flat.index_select(0, rows[start : start + step]), cap), dim=-1)
        picked.append(logp.gather(1, targets[start : start + step, None])[:, 0].double().cpu())
        greedy.append(logp.argmax(-1).cpu())
    return torch.cat(picked).numpy(), torch.cat(greedy).numpy()
