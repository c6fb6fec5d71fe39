"""reference: run the reference once over the corpora and store what fidelity needs → data/reference/.

Windows: each corpus is tokenized once, without special tokens (SmolLM2's tokenizer has
add_bos_token = false, as in llama.cpp's runs; for a tokenizer with add_bos_token = true the first
token of every window is replaced by BOS, which is what llama-perplexity does per chunk). The token
stream is cut into `fidelity.n_windows` non-overlapping windows of `fidelity.ctx` tokens; the primary
corpus is also cut at `fidelity.ctx_alt` over the same tokens (n_windows*ctx/ctx_alt windows).

Scored positions: i = score_from*ctx … ctx-2, each predicting token i+1 — llama.cpp's
n_ctx/2 … n_ctx-2, i.e. 255 per 512-token window. The store (silentzone.refstore) keeps the
reference's final hidden state at those positions and its lm_head, once for every stage.
Every window is cut (and every corpus checked long enough) before anything is written.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from .. import provenance, refstore
from ..data import corpora
from ..errors import SilentzoneError
from ..layout import Layout
from ..model import head as lm


def score_range(ctx: int, score_from: float) -> tuple[int, int]:
    """[first, stop) of the scored positions of a window (each predicts the next token)."""
    return int(score_from * ctx), ctx - 1


def tokenize(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def cut_windows(ids: list[int], ctx: int, n_windows: int, ctx_base: int, corpus: str, bos_id: int | None) -> np.ndarray:
    """(n, ctx) token windows over the first n_windows*ctx_base tokens of the stream."""
    need = n_windows * ctx_base
    if len(ids) < need:
        raise SilentzoneError(
            f"corpus {corpus!r}: {len(ids)} tokens, fewer than n_windows x ctx = {n_windows} x {ctx_base} = {need}; "
            f"lower `fidelity.n_windows` or raise `corpora.{corpus}.max_docs` and rerun `silentzone prepare`"
        )
    windows = np.asarray(ids[:need], dtype=np.int64).reshape(-1, ctx)
    if bos_id is not None:
        windows[:, 0] = bos_id
    return windows


def plan(params, tokenizer, prepared_dir) -> list[tuple[str, int, np.ndarray, dict]]:
    """(corpus, ctx, windows, segment metadata) of every fidelity segment, all checked first."""
    f = params.fidelity
    add_bos = bool(getattr(tokenizer, "add_bos_token", False)) and tokenizer.bos_token_id is not None
    bos_id = tokenizer.bos_token_id if add_bos else None
    token_cache, out = {}, []
    for corpus, ctx in params.store_specs():
        if corpus not in token_cache:
            text, entry = corpora.load_text(corpus, prepared_dir)
            token_cache[corpus] = (tokenize(tokenizer, text), entry["sha256"])
        ids, corpus_sha = token_cache[corpus]
        first, stop = score_range(ctx, f.score_from)
        meta = {
            "model": params.model.name,
            "corpus": corpus,
            "corpus_sha256": corpus_sha,
            "corpus_tokens": len(ids),
            "add_bos": add_bos,
            "score_from": f.score_from,
            "score_first": first,
            "score_stop": stop,
            "ctx": ctx,
        }
        out.append((corpus, ctx, cut_windows(ids, ctx, f.n_windows, f.ctx, corpus, bos_id), meta))
    return out


def write_segment(model, windows: np.ndarray, folder, meta: dict) -> None:
    import torch

    writer = refstore.SegmentWriter(folder, {**meta, "hidden_size": int(model.config.get_text_config().hidden_size)})
    first, stop = meta["score_first"], meta["score_stop"]
    with torch.inference_mode():
        for w in tqdm(range(len(windows)), desc=f"reference {folder.name}", unit="window"):
            ids = torch.from_numpy(windows[w : w + 1]).to(model.device)
            hidden = lm.final_hidden(model, ids)[0, first:stop]
            writer.add(f"w{w:05d}", windows[w], first, hidden.float().cpu().numpy())
    writer.close()


def check_sizes(params, model) -> None:
    """Fidelity sizes the model must have, refused before anything is computed: a window longer than
    its positions would be scored where the rotary embedding extrapolates, silently; a top-k larger
    than its vocabulary would quietly make kld_topk the full KLD (metrics clamps k to the vocabulary)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    f, name = params.fidelity, params.model.name
    limit = getattr(cfg, "max_position_embeddings", None)
    if limit is not None and f.ctx > limit:
        raise SilentzoneError(
            f"{params.source}: `fidelity.ctx` = {f.ctx} but model {name!r} has {limit} positions "
            f"(max_position_embeddings); choose ctx <= {limit}"
        )
    vocab = getattr(cfg, "vocab_size", None)
    if vocab is not None and f.topk > vocab:
        raise SilentzoneError(
            f"{params.source}: `fidelity.topk` = {f.topk} but model {name!r} has a vocabulary of {vocab} tokens; "
            f"choose topk <= {vocab}"
        )


def run(params, layout: Layout, model, tokenizer) -> list[str]:
    """Write the head and every corpus x ctx segment; returns one summary line per segment."""
    check_sizes(params, model)
    segments = plan(params, tokenizer, layout.prepared)
    weight, bias, meta = lm.head_arrays(model, tokenizer, params.model.name)
    refstore.write_head(layout.reference, weight, bias, {**meta, "provenance": provenance.made_by(params, "reference")})
    lines = []
    for corpus, ctx, windows, meta in segments:
        folder = refstore.fidelity_dir(layout.reference, corpus, ctx)
        # each segment stamped too: an interrupted run leaves segments of two runs, which fidelity must tell apart
        write_segment(model, windows, folder, {**meta, "provenance": provenance.made_by(params, "reference")})
        lines.append(
            f"{folder}: {len(windows)} windows x {ctx} tokens, positions {meta['score_first']}..{meta['score_stop'] - 1} scored"
        )
    return lines
