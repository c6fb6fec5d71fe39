"""Per-token fidelity of a member served by an inference server, against the reference store.

Every window of every fidelity store goes to the server as one token-id prompt (vLLM's
`prompt_logprobs` = fidelity.topk); the reference's logits come from its store as in-process. The
table has the in-process columns and rows (silentzone.schema.TOKEN_COLUMNS); what the server's
top-k cannot give (`kld`, `rkld`; `nll_q_greedy` where the reference's argmax lies outside the
quant's top-k) is NaN, and the report names the variants that are therefore unavailable
(silentzone.variants.TOPK_UNAVAILABLE). `kld_topk` is Eq. 5 exactly (silentzone.metrics.topk_metrics).
Nothing is written here: every window's response is read and checked first (the stage writes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import metrics, provenance, refstore
from ..layout import Layout
from ..schema import TOKEN_COLUMNS, TOKEN_KEYS
from .client import Endpoint, prompt_logprobs
from .logprobs import PromptLogprobs, ServerError


def window_table(head_R, segment: refstore.Segment, w: int, lp: PromptLogprobs, params) -> pd.DataFrame:
    """Per-token rows of window `w` from the server's log-probabilities over the whole window."""
    import torch

    f = params.fidelity
    meta = segment.manifest
    corpus, ctx, first = meta["corpus"], meta["ctx"], segment.first(0)
    targets = segment.windows()[w, first + 1 :]
    hidden_R = torch.from_numpy(segment.hidden(w))
    step = metrics.rows_per_chunk(head_R.vocab_size)
    parts = []
    with torch.inference_mode():
        for start in range(0, len(targets), step):
            stop = min(start + step, len(targets))
            rows = slice(first + start, first + stop)  # server rows: row i predicts token i + 1
            logits_R = head_R(hidden_R[start:stop])
            metrics.check_finite(logits_R, "reference store", corpus, ctx, w, first + start)
            parts.append(
                metrics.topk_metrics(
                    logits_R,
                    lp.top_ids[rows],
                    lp.top_logprobs[rows],
                    lp.logprob[rows],
                    targets[start:stop],
                    f.topk,
                    f.topk_floor,
                    f.work_dtype,
                )
            )
    cols = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    n = len(targets)
    return pd.DataFrame(
        {
            "corpus": corpus,
            "ctx": np.full(n, ctx, np.int64),
            "window": np.full(n, w, np.int64),
            "pos": np.arange(first, ctx - 1, dtype=np.int64),
            "token": targets.astype(np.int64),
            **cols,
        }
    )[TOKEN_COLUMNS]


def per_token_table(params, layout: Layout, name: str, endpoint: Endpoint) -> pd.DataFrame:
    """The member's per-token table over every fidelity store, from its server."""
    from tqdm import tqdm

    head_R = refstore.read_head(layout.reference, params.model.device)  # Eq. 5 needs the reference logits: on the GPU at scale
    provenance.verify_made_by(head_R.manifest, refstore.head_dir(layout.reference) / refstore.MANIFEST, params, "reference")
    segments = [refstore.open_fidelity(layout.reference, corpus, ctx) for corpus, ctx in params.store_specs()]
    for seg in segments:
        provenance.verify_made_by(seg.manifest, seg.folder / refstore.MANIFEST, params, "reference")
    jobs = [(seg, w) for seg in segments for w in range(len(seg))]
    prompts = [seg.windows()[w].tolist() for seg, w in jobs]
    vocab = head_R.vocab_size
    with tqdm(total=len(jobs), desc=f"fidelity {name} (server {endpoint.model})", unit="window") as bar:
        answers = prompt_logprobs(endpoint, prompts, params.fidelity.topk, f"fidelity {name}", bar)
    frames = []
    for (seg, w), lp in zip(jobs, answers):
        if lp.top_ids.max() >= vocab or lp.top_ids.min() < 0:
            raise ServerError(
                f"{endpoint.base} ({endpoint.model}): token id {int(lp.top_ids.max())} on {seg.folder.name} window {w} "
                f"lies outside the reference's {vocab}-token vocabulary: the server runs another model or tokenizer"
            )
        frames.append(window_table(head_R, seg, w, lp, params))
    return pd.concat(frames, ignore_index=True).sort_values(TOKEN_KEYS, kind="stable").reset_index(drop=True)


def report_fields(params, endpoint: Endpoint) -> dict:
    """What the fidelity report records of a served member: where it was measured and at which k."""
    return {"engine": {"kind": "server", "url": endpoint.base, "model": endpoint.model, "topk": params.fidelity.topk}}
