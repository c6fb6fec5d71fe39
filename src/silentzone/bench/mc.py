"""Cloze multiple choice: score each continuation by its log-probability given its context.

The bench scores items in batches (silentzone.bench.batched: many items per forward pass); this
module turns items into token requests (`request`), picks the answer a task's metric gives
(`answer`), and keeps the per-item scorer `score_item`, the definition the batched one is tested
against.

Per-item speed: when the choices share their context (all tasks but Winogrande), the context runs once and
its KV cache is repeated across the choices, which then run as one right-padded batch (padding at
the end of a causal sequence never changes the real positions, so no attention mask is needed).
Otherwise (Winogrande: the blank is filled in the context) the full sequences run as one batch.

Every choice's *path* (the final hidden states at all positions of context + continuation but the
last, i.e. the positions that predict a next token) is returned, so the same pass yields the
per-prompt KLD on the reference's chosen continuation without another forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SilentzoneError
from ..model.head import lm_logits


@dataclass
class Scored:
    logprobs: list[float]  # summed log-probability of each continuation
    chosen: int  # argmax of logprobs (raw)
    chosen_norm: int  # argmax of logprobs / len(continuation in characters)
    tokens: list[list[int]]  # per choice: context + continuation token ids
    paths: list  # per choice: final hidden states [len(tokens) - 1, hidden] (torch)


def encode(tokenizer, item: dict) -> tuple[list[list[int]], list[list[int]]]:
    """Contexts with the tokenizer's usual special tokens (a BOS where it adds one); continuations
    without, so they join the context as plain text."""
    contexts = [tokenizer(c).input_ids for c in item["contexts"]]
    conts = [tokenizer(c, add_special_tokens=False).input_ids for c in item["continuations"]]
    for i, ids in enumerate(conts):
        if not ids:
            raise SilentzoneError(f"task {item['task']!r} item {item['item_id']!r}: continuation {i} tokenizes to nothing")
    return contexts, conts


def request(tokenizer, item: dict):
    """A batched.Request for an mc item (every choice) or a greedy item (its one target)."""
    from .batched import Request

    if item["kind"] == "greedy":
        item = {**item, "contexts": [item["context"]], "continuations": [item["target"]]}
    return Request(*encode(tokenizer, item))


def answer(metric: str, logprobs: list[float], continuations: list[str], n_tokens: list[int]) -> int:
    """The choice a metric picks: raw summed log-probability, per character or per token (first on ties)."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if metric == "raw":
        return int(np.argmax(lp))
    if metric == "per_char":
        return int(np.argmax(lp / np.array([len(c) for c in continuations], dtype=np.float64)))
    if metric == "per_token":
        return int(np.argmax(lp / np.asarray(n_tokens, dtype=np.float64)))
    raise SilentzoneError(f"metric {metric!r} does not pick a choice; use raw, per_char or per_token")


def greedy_divergence(target: list[int], greedy: list[int]) -> int | None:
    """Index of the first target token the greedy (argmax) token differs from; None when all match."""
    for j, (t, g) in enumerate(zip(target, greedy)):
        if t != g:
            return j
    return None


def choice_paths(model, contexts: list[list[int]], conts: list[list[int]]) -> list:
    import torch

    decoder = model.get_decoder()
    device = model.device
    if all(c == contexts[0] for c in contexts):
        out = decoder(input_ids=torch.tensor([contexts[0]], device=device), use_cache=True)
        h_ctx, cache = out.last_hidden_state[0], out.past_key_values
        cache.batch_repeat_interleave(len(conts))
        width = max(len(c) for c in conts)
        batch = torch.tensor([c + [0] * (width - len(c)) for c in conts], device=device)
        h = decoder(input_ids=batch, past_key_values=cache, use_cache=False).last_hidden_state
        return [torch.cat([h_ctx, h[i, : len(c) - 1]]) for i, c in enumerate(conts)]
    seqs = [a + b for a, b in zip(contexts, conts)]
    width = max(len(s) for s in seqs)
    batch = torch.tensor([s + [0] * (width - len(s)) for s in seqs], device=device)
    h = decoder(input_ids=batch).last_hidden_state
    return [h[i, : len(s) - 1] for i, s in enumerate(seqs)]


def score_item(model, tokenizer, item: dict, cap: float | None) -> Scored:
    import torch

    contexts, conts = encode(tokenizer, item)
    with torch.inference_mode():
        paths = choice_paths(model, contexts, conts)
        logprobs = []
        for ctx, cont, path in zip(contexts, conts, paths):
            logp = torch.log_softmax(lm_logits(model, path[len(ctx) - 1 :], cap), dim=-1)
            picked = logp.gather(1, torch.tensor(cont, device=logp.device)[:, None])
            logprobs.append(float(picked.double().sum()))
    return Scored(
        logprobs=logprobs,
        chosen=answer("raw", logprobs, item["continuations"], [len(c) for c in conts]),
        chosen_norm=answer("per_char", logprobs, item["continuations"], [len(c) for c in conts]),
        tokens=[a + b for a, b in zip(contexts, conts)],
        paths=paths,
    )
