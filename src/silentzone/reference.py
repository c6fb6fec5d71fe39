"""`silentzone reference`: run the reference once over the corpora and store what fidelity needs.

Windows: each corpus is tokenized once, without special tokens (SmolLM2's tokenizer has
add_bos_token = false, as in llama.cpp's runs; for a tokenizer with add_bos_token = true the first
token of every window is replaced by BOS, which is what llama-perplexity does per chunk). The token
stream is cut into `fidelity.n_windows` non-overlapping windows of `fidelity.ctx` tokens; the primary
corpus is also cut at `fidelity.ctx_alt` over the same tokens (n_windows*ctx/ctx_alt windows).

Scored positions: i = score_from*ctx … ctx-2, each predicting token i+1 — llama.cpp's
n_ctx/2 … n_ctx-2, i.e. 255 per 512-token window. The store keeps the reference's final hidden
state at those positions (see store.py).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import config, corpora, models, store
from .errors import SilentzoneError


def score_range(ctx: int, score_from: float) -> tuple[int, int]:
    """[first, stop) of the scored positions of a window (each predicts the next token)."""
    first = int(score_from * ctx)
    if not 0 <= first <= ctx - 2:
        raise SilentzoneError(f"params.yaml: `fidelity.score_from` = {score_from} leaves no scored position in a {ctx}-token window; use a value in [0, 1)")
    return first, ctx - 1


def store_specs(params: dict) -> list[tuple[str, int]]:
    """(corpus, ctx) of every store: each corpus at ctx, and the primary corpus at ctx_alt."""
    names = config.get(params, "fidelity.corpora", list)
    primary = config.get(params, "fidelity.primary_corpus", str)
    if primary not in names:
        raise SilentzoneError(f"params.yaml: `fidelity.primary_corpus` {primary!r} is not in `fidelity.corpora` {names}")
    ctx = config.get(params, "fidelity.ctx", int)
    ctx_alt = config.get(params, "fidelity.ctx_alt", int)
    if ctx_alt < 2 or ctx % ctx_alt:
        raise SilentzoneError(f"params.yaml: `fidelity.ctx_alt` = {ctx_alt} must divide `fidelity.ctx` = {ctx} so both cover the same tokens")
    specs = [(name, ctx) for name in names]
    return specs if ctx_alt == ctx else specs + [(primary, ctx_alt)]


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


def vocab_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's (token, id) pairs: quants must share the reference's vocabulary."""
    pairs = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode("utf-8")).hexdigest()


def softcap_of(model) -> float | None:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    return float(cap) if cap else None


def final_hidden(model, windows):
    """Final hidden states (after the final norm: the input of lm_head) for a batch of windows."""
    return model.get_decoder()(input_ids=windows).last_hidden_state


def write_head(model, tokenizer, folder: Path, name: str) -> None:
    head = model.get_output_embeddings()
    bias = head.bias.detach().float().numpy() if getattr(head, "bias", None) is not None else None
    meta = {"model": name, "softcap": softcap_of(model), "vocab_fingerprint": vocab_fingerprint(tokenizer)}
    store.write_head(folder, head.weight.detach().float().cpu().numpy(), bias, meta)


def write_store(model, windows: np.ndarray, folder: Path, meta: dict, first: int, stop: int) -> None:
    import torch

    writer = store.StoreWriter(folder, windows, meta)
    try:
        with torch.inference_mode():
            for w in tqdm(range(len(windows)), desc=f"reference {folder.name}", unit="window"):
                ids = torch.from_numpy(windows[w : w + 1]).to(model.device)
                hidden = final_hidden(model, ids)[0, first:stop]
                writer.add_window(hidden.float().cpu().numpy())
    except BaseException:
        writer.abort()
        raise
    writer.close()


def build(params: dict, model, tokenizer, root: str | Path | None = None, prepared_dir: str | Path | None = None) -> list[Path]:
    """Write the head and every corpus x ctx store; returns the store folders."""
    name = config.get(params, "model.name", str)
    n_windows = config.get(params, "fidelity.n_windows", int)
    ctx = config.get(params, "fidelity.ctx", int)
    score_from = config.get(params, "fidelity.score_from", float)
    add_bos = bool(getattr(tokenizer, "add_bos_token", False)) and tokenizer.bos_token_id is not None
    bos_id = tokenizer.bos_token_id if add_bos else None
    write_head(model, tokenizer, store.head_dir(root), name)
    folders, token_cache = [], {}
    for corpus, window_ctx in store_specs(params):
        if corpus not in token_cache:
            text, entry = corpora.load_text(corpus, prepared_dir)
            token_cache[corpus] = (tokenize(tokenizer, text), entry["sha256"])
        ids, corpus_sha = token_cache[corpus]
        windows = cut_windows(ids, window_ctx, n_windows, ctx, corpus, bos_id)
        first, stop = score_range(window_ctx, score_from)
        meta = {
            "model": name,
            "corpus": corpus,
            "corpus_sha256": corpus_sha,
            "corpus_tokens": len(ids),
            "add_bos": add_bos,
            "score_from": score_from,
            "score_first": first,
            "score_stop": stop,
            "hidden_size": int(model.config.get_text_config().hidden_size),
        }
        folder = store.store_dir(corpus, window_ctx, root)
        write_store(model, windows, folder, meta, first, stop)
        folders.append(folder)
    return folders


def add_arguments(p):
    p.add_argument("--out", default=config.PATHS["reference"], help="output root (default: data/reference)")


def run(args):
    import torch

    params = config.load(args.params)
    torch.set_num_threads(config.get(params, "threads", int))
    model, tokenizer = models.load_reference(params)
    for folder in build(params, model, tokenizer, args.out):
        meta = store.read_manifest(folder, verify=False)
        print(f"{folder}: {meta['n_windows']} windows x {meta['ctx']} tokens, positions {meta['score_first']}..{meta['score_stop'] - 1} scored")
    return 0
