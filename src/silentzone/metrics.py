"""Per-token fidelity metrics of a quant against the reference, from two logit matrices.

Per scored token (y = observed next token, g = reference argmax):
  kld          Σ_v p_R(v) (log p_R(v) − log p_q(v)), full vocabulary
  rkld         Σ_v p_q(v) (log p_q(v) − log p_R(v))
  kld_topk     "Eq. 5": Σ over the reference's top-k v of p_R(v) (log p_R(v) − log q̃(v)), where
               log q̃(v) = log p_q(v) if v is in the quant's own top-k, else the floor (ln 1e-12);
               p_R is not renormalised, so at k = vocabulary size it equals kld exactly
  top1         argmax p_R == argmax p_q
  nll_q, nll_R −log p(y);  nll_q_greedy = −log p_q(g);  dp = p_q(y) − p_R(y)

The per-prompt KLD of the benchmark stage is the mean of the same `kld` over a prompt's positions:
one implementation for both.
"""

from __future__ import annotations

import numpy as np

from .errors import SilentzoneError

# Logits per chunk (rows x vocab): 64 MiB per float32 matrix, so one SmolLM2 window's 255 scored rows
# are one chunk (64 rows of Gemma's 262k vocabulary). Each lm_head is then one matmul of 255 rows per
# window: 25 % faster than three of 85 rows, the same bits (each row's dot products do not depend on
# how many rows share the call).
CHUNK_ELEMENTS = 1 << 24
# token_metrics works through a chunk in row blocks of about BLOCK_ELEMENTS logits (4 MiB per float32
# matrix), so its dozen elementwise passes stay in the CPU's cache: 2.4x faster on SmolLM2's 85-row
# chunks. Blocks keep at least MIN_BLOCK_ROWS rows: torch's row reductions sum each row in the same
# order for 8 rows or more, so the values are the same bits as one pass over the chunk (tested).
BLOCK_ELEMENTS = 1 << 20
MIN_BLOCK_ROWS = 8
VERSION = 1  # bump when a metric's arithmetic changes, so stale resume parts are discarded


def token_metrics(logits_R, logits_q, targets, topk: int, floor: float, work_dtype: str = "float32") -> dict[str, np.ndarray]:
    """Per-row fidelity metrics from two (rows x vocab) logit matrices and the observed next tokens.

    Written on the logits, with the per-row log-normaliser lse = max + log Σ exp(z − max) kept in
    float64: log p(v) = z(v) − lse, so kld = Σ p_R (z_R − z_q) − (lse_R − lse_q). Elementwise work
    (exp, products) runs in `work_dtype`; row sums accumulate in it with torch's cascade summation
    and are combined in float64. float32 work is ~2x faster than float64 and agrees with it to
    ≤ 3e-7 per token, less the closer the models (tests hold 1e-6); float64 matches scipy to 1e-12.
    """
    import torch

    zR, zq = torch.as_tensor(logits_R), torch.as_tensor(logits_q)
    y = torch.as_tensor(targets, dtype=torch.long, device=zR.device).reshape(-1, 1)
    rows = zR.shape[0]
    blocks = max(1, min(rows // MIN_BLOCK_ROWS, -(-rows * zR.shape[-1] // BLOCK_ELEMENTS)))
    if blocks > 1:  # cache-sized row blocks: every pass below then reads the cache, not memory
        bounds = [rows * i // blocks for i in range(blocks + 1)]
        parts = [_token_metrics(zR[a:b], zq[a:b], y[a:b], topk, floor, work_dtype) for a, b in zip(bounds, bounds[1:])]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    return _token_metrics(zR, zq, y, topk, floor, work_dtype)


def _token_metrics(zR, zq, y, topk: int, floor: float, work_dtype: str) -> dict[str, np.ndarray]:
    import torch

    dtype = getattr(torch, work_dtype)
    zR, zq = zR.to(dtype), zq.to(dtype)
    k = min(max(int(topk), 1), zR.shape[-1])
    top_zR, top_idx = zR.topk(k, dim=-1)  # column 0 is the max and the argmax
    top_zq, own_q = zq.topk(k, dim=-1)
    mR, mq, greedy_R = top_zR[:, :1], top_zq[:, :1], top_idx[:, :1]
    picked_R = torch.cat([zR.gather(-1, y), top_zR], -1).double()
    picked_q = torch.cat([zq.gather(-1, y), zq.gather(-1, greedy_R), zq.gather(-1, top_idx)], -1).double()
    d = zq - zR
    eR, eq = torch.exp(zR - mR), torch.exp(zq - mq)
    sR, sq = eR.sum(-1).double(), eq.sum(-1).double()
    lseR = mR.squeeze(-1).double() + torch.log(sR)
    dlse = lseR - mq.squeeze(-1).double() - torch.log(sq)
    # lse_q − lse_R = log Σ p_R exp(d) = log1p(Σ p_R expm1(d)): its rounding error shrinks with the
    # distance between the models, where the direct difference of two lse keeps a ~1e-7 floor.
    u = rowdot(eR, torch.expm1(d)) / sR
    close = torch.isfinite(u) & (u.abs() < 0.5)
    dlse = torch.where(close, -torch.log1p(torch.where(close, u, 0.0)), dlse)
    lseq = lseR - dlse
    kld = -rowdot(eR, d) / sR - dlse
    rkld = dlse + rowdot(eq, d) / sq
    lR_y, lq_y, lq_greedy = picked_R[:, 0] - lseR, picked_q[:, 0] - lseq, picked_q[:, 1] - lseq
    lR_top = picked_R[:, 1:] - lseR[:, None]
    in_own = (top_idx.unsqueeze(-1) == own_q.unsqueeze(-2)).any(-1)
    lq_top = torch.where(in_own, picked_q[:, 2:] - lseq[:, None], torch.full_like(lR_top, float(floor)))
    out = {
        "kld": kld,
        "rkld": rkld,
        "kld_topk": (lR_top.exp() * (lR_top - lq_top)).sum(-1),
        "top1": greedy_R.squeeze(-1) == own_q[:, 0],
        "nll_q": -lq_y,
        "nll_R": -lR_y,
        "nll_q_greedy": -lq_greedy,
        "dp": lq_y.exp() - lR_y.exp(),
    }
    return {name: value.cpu().numpy() for name, value in out.items()}


def topk_metrics(logits_R, q_top_ids, q_top_logprobs, q_logprob_y, targets, topk: int, floor: float, work_dtype: str = "float32"):
    """Per-row metrics of a quant known by its top-k only (ids and log-probabilities in rank order,
    plus the log-probability of the observed next token), against the reference's full logits.

    `kld_topk` is Eq. 5 exactly as `token_metrics` computes it — support the reference's top-k,
    log q̃(v) the quant's log-probability where v is in its own top-k, else the floor — so given the
    quant's true top-k the two agree to rounding (tested). `top1`, `nll_q`, `nll_R`, `dp` are exact;
    `nll_q_greedy` where the reference's argmax lies in the quant's top-k or is the observed token,
    else NaN; `kld` and `rkld` are NaN (silentzone.variants.TOPK_UNAVAILABLE says why)."""
    import torch

    dtype = getattr(torch, work_dtype)
    zR = torch.as_tensor(logits_R).to(dtype)
    on = {"device": zR.device}  # the lists join the reference's logits wherever they are (a GPU at scale)
    q_ids = torch.as_tensor(np.asarray(q_top_ids), dtype=torch.long, **on)
    q_lp = torch.as_tensor(np.asarray(q_top_logprobs), dtype=torch.float64, **on)
    lq_y = torch.as_tensor(np.asarray(q_logprob_y), dtype=torch.float64, **on)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.long, **on).reshape(-1, 1)
    k = min(max(int(topk), 1), zR.shape[-1])
    if q_ids.shape[1] < k:
        raise SilentzoneError(f"top-k metrics: the quant's lists hold {q_ids.shape[1]} tokens, fewer than k = {k}")
    q_ids, q_lp = q_ids[:, :k], q_lp[:, :k]
    top_zR, top_idx = zR.topk(k, dim=-1)
    mR, greedy_R = top_zR[:, :1], top_idx[:, :1]
    sR = torch.exp(zR - mR).sum(-1).double()
    lseR = mR.squeeze(-1).double() + torch.log(sR)
    lR_top = top_zR.double() - lseR[:, None]
    lR_y = zR.gather(-1, y).double().squeeze(-1) - lseR
    match = top_idx.unsqueeze(-1) == q_ids.unsqueeze(-2)  # [rows, k (reference's), k (quant's)]
    in_own = match.any(-1)
    lq_top = torch.where(in_own, (match.double() * q_lp.unsqueeze(-2)).sum(-1), torch.full_like(lR_top, float(floor)))
    g_match = greedy_R == q_ids
    lq_greedy = torch.where(
        g_match.any(-1), (g_match.double() * q_lp).sum(-1), torch.where(greedy_R.squeeze(-1) == y.squeeze(-1), lq_y, float("nan"))
    )
    nan = torch.full_like(lseR, float("nan"))
    out = {
        "kld": nan,
        "rkld": nan,
        "kld_topk": (lR_top.exp() * (lR_top - lq_top)).sum(-1),
        "top1": greedy_R.squeeze(-1) == q_ids[:, 0],
        "nll_q": -lq_y,
        "nll_R": -lR_y,
        "nll_q_greedy": -lq_greedy,
        "dp": lq_y.exp() - lR_y.exp(),
    }
    return {name: value.cpu().numpy() for name, value in out.items()}


def rowdot(a, b):
    """Σ_v a·b per row, in float64. torch's cascade summation, not a BLAS dot: a batched matmul
    is one pass faster but accumulates float32 sequentially (1e-5 errors on a 49k vocabulary)."""
    return (a * b).sum(-1).double()


def check_finite(logits, what: str, corpus: str, ctx: int, window: int, first_pos: int) -> None:
    import torch

    if torch.isfinite(logits.sum(-1)).all():  # one cheap pass: a NaN/inf logit makes its row sum non-finite
        return
    bad = ~torch.isfinite(logits).all(-1)
    if bad.any():
        row = int(bad.nonzero()[0, 0])
        kind = "nan" if torch.isnan(logits[row]).any() else "inf"
        raise SilentzoneError(
            f"{what}: non-finite logits ({kind}) on corpus {corpus!r}, ctx {ctx}, window {window}, position {first_pos + row}; "
            "its weights produce NaN/inf — check the quant's recipe (or rerun `silentzone reference` if this is the reference)"
        )


def rows_per_chunk(vocab_size: int) -> int:
    """Rows per chunk so a 262k vocabulary never materialises logits for more than a few dozen rows."""
    return max(1, CHUNK_ELEMENTS // vocab_size)


def prompt_kld(head_R, hidden_R: np.ndarray, logits_q, work_dtype: str = "float32") -> float:
    """Mean token KL(p_R || p_q) over a prompt's positions: reference logits from its stored hidden
    states (head_R), the quant's logits given; `kld` of token_metrics, chunked over rows."""
    import torch

    hidden = torch.from_numpy(np.ascontiguousarray(hidden_R))
    step = rows_per_chunk(head_R.vocab_size)
    parts = []
    for start in range(0, hidden.shape[0], step):
        logits_R = head_R(hidden[start : start + step])
        zq = logits_q[start : start + step].to(logits_R.device)
        check_finite(logits_R, "reference bench store", "bench", 0, 0, start)
        check_finite(zq, "quant", "bench", 0, 0, start)  # a NaN mean would pass as a per-prompt KLD
        parts.append(token_metrics(logits_R, zq, np.zeros(len(zq), np.int64), 1, -27.631021115928547, work_dtype)["kld"])
    return float(np.concatenate(parts).mean())


def prompt_klds(head_R, hidden_R: list[np.ndarray], hidden_q, quant_logits, work_dtype: str = "float32") -> list[float]:
    """prompt_kld of several prompts in one pass: hidden_R, the reference's stored hidden states per
    prompt; hidden_q, the quant's final hidden states of all their positions concatenated in the same
    order; quant_logits(hidden) → the quant's logits. Logits are made chunk by chunk over the joined
    positions (fewer, larger products than prompt by prompt); each prompt's mean over its own rows."""
    import torch

    hidden = torch.from_numpy(np.ascontiguousarray(np.concatenate(hidden_R)))
    if hidden.shape[0] != hidden_q.shape[0]:
        raise ValueError(f"prompt_klds: {hidden.shape[0]} reference positions but {hidden_q.shape[0]} quant positions")
    step = rows_per_chunk(head_R.vocab_size)
    parts = []
    for start in range(0, hidden.shape[0], step):
        logits_R = head_R(hidden[start : start + step])
        zq = quant_logits(hidden_q[start : start + step]).to(logits_R.device)
        check_finite(logits_R, "reference bench store", "bench", 0, 0, start)
        check_finite(zq, "quant", "bench", 0, 0, start)  # a NaN mean would pass as a per-prompt KLD
        parts.append(token_metrics(logits_R, zq, np.zeros(len(zq), np.int64), 1, -27.631021115928547, work_dtype)["kld"])
    kld = np.concatenate(parts)
    bounds = np.cumsum([0] + [len(h) for h in hidden_R])
    return [float(kld[a:b].mean()) for a, b in zip(bounds[:-1], bounds[1:])]
