"""`silentzone fidelity QUANT`: per-token fidelity of one quant against the stored reference, and the
14 measurement variants computed from it.

Per scored token (definitions in shared DESIGN.md; y = observed next token, g = reference argmax):
  kld          Σ_v p_R(v) (log p_R(v) − log p_q(v)), full vocabulary
  rkld         Σ_v p_q(v) (log p_q(v) − log p_R(v))
  kld_topk     "Eq. 5": Σ over the reference's top-k v of p_R(v) (log p_R(v) − log q̃(v)), where
               log q̃(v) = log p_q(v) if v is in the quant's own top-k, else the floor (ln 1e-12);
               p_R is not renormalised, so at k = vocabulary size it equals kld exactly
  top1         argmax p_R == argmax p_q
  nll_q, nll_R −log p(y);  nll_q_greedy = −log p_q(g);  dp = p_q(y) − p_R(y)

Logits come out of the matmul in fp32 (as the models compute them); per-row log-normalisers and
every combination of sums are float64, elementwise work runs in `fidelity.work_dtype` (float32 by
default: ~1e-7 per token from float64, see token_metrics). Rows are processed in chunks so a 262k
vocabulary never materialises logits for more than a few dozen positions at once.

Output: data/fidelity/<quant>.parquet (one row per scored token, sorted by corpus, ctx, window, pos)
and data/fidelity/<quant>.report.json (bpw from the quant's loader, token counts, the variants).
Work is saved per window batch under data/fidelity/.parts/<quant>/, so an interrupted run resumes;
the final table is the same bytes either way.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from . import config, io, store
from .errors import SilentzoneError

COLUMNS = ["corpus", "ctx", "window", "pos", "token", "kld", "rkld", "kld_topk", "top1", "nll_q", "nll_R", "nll_q_greedy", "dp"]
SORT_KEYS = ["corpus", "ctx", "window", "pos"]
CHUNK_ELEMENTS = 1 << 22  # logits per chunk (rows x vocab): 16 MiB per float32 matrix
METRICS_VERSION = 1  # bump when a metric's arithmetic changes, so stale resume parts are discarded


# ---------------------------------------------------------------------------- per-token metrics


def token_metrics(logits_R, logits_q, targets, topk: int, floor: float, work_dtype: str = "float32") -> dict[str, np.ndarray]:
    """Per-row fidelity metrics from two (rows x vocab) logit matrices and the observed next tokens.

    Written on the logits, with the per-row log-normaliser lse = max + log Σ exp(z − max) kept in
    float64: log p(v) = z(v) − lse, so kld = Σ p_R (z_R − z_q) − (lse_R − lse_q). Elementwise work
    (exp, products) runs in `work_dtype`; row sums accumulate in it with torch's cascade summation
    and are combined in float64. float32 work is ~2x faster than float64 and agrees with it to
    ≤ 3e-7 per token, less the closer the models (tests hold 1e-6); float64 matches scipy to 1e-12.
    """
    import torch

    dtype = getattr(torch, work_dtype)
    zR, zq = torch.as_tensor(logits_R).to(dtype), torch.as_tensor(logits_q).to(dtype)
    y = torch.as_tensor(targets, dtype=torch.long, device=zR.device).reshape(-1, 1)
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


def rowdot(a, b):
    """Σ_v a·b per row, in float64. torch's cascade summation, not a BLAS dot: a batched matmul
    is one pass faster but accumulates float32 sequentially (1e-5 errors on a 49k vocabulary)."""
    return (a * b).sum(-1).double()


# ---------------------------------------------------------------------------- model plumbing


def softcap(logits, cap: float | None):
    import torch

    return logits if not cap else torch.tanh(logits / cap) * cap


def check_finite(logits, what: str, corpus: str, ctx: int, window: int, first_pos: int) -> None:
    import torch

    bad = ~torch.isfinite(logits).all(-1)
    if bad.any():
        row = int(bad.nonzero()[0, 0])
        kind = "nan" if torch.isnan(logits[row]).any() else "inf"
        raise SilentzoneError(
            f"{what}: non-finite logits ({kind}) on corpus {corpus!r}, ctx {ctx}, window {window}, position {first_pos + row}; "
            "its weights produce NaN/inf — check the quant's recipe (or rerun `silentzone reference` if this is the reference)"
        )


class ReferenceHead:
    """The reference lm_head (from the store) applied to stored hidden states."""

    def __init__(self, root: str | Path | None = None, device: str = "cpu"):
        import torch

        weight, bias, self.manifest = store.read_head(store.head_dir(root))
        self.weight = torch.from_numpy(weight).to(device)
        self.bias = None if bias is None else torch.from_numpy(bias).to(device)
        self.cap = self.manifest.get("softcap")

    def __call__(self, hidden):
        import torch

        return softcap(torch.nn.functional.linear(hidden, self.weight, self.bias), self.cap)


def check_vocab(quant: str, model, tokenizer, head: ReferenceHead) -> None:
    from .reference import vocab_fingerprint

    n_q = model.get_output_embeddings().weight.shape[0]
    n_R = head.manifest["vocab_size"]
    if n_q != n_R or vocab_fingerprint(tokenizer) != head.manifest["vocab_fingerprint"]:
        raise SilentzoneError(
            f"quant {quant!r}: its vocabulary ({n_q} logits, tokenizer {vocab_fingerprint(tokenizer)[:12]}) differs from the reference's "
            f"({n_R} logits, tokenizer {head.manifest['vocab_fingerprint'][:12]}); a quant must share the reference's tokenizer"
        )


def window_batch_metrics(quant: str, model, head: ReferenceHead, ref: store.ReferenceStore, windows: list[int], topk: int, floor: float,
                         work_dtype: str = "float32") -> pd.DataFrame:
    """Per-token table for some windows of one store."""
    import torch

    from .reference import final_hidden, softcap_of

    meta, first = ref.manifest, ref.first
    corpus, ctx = meta["corpus"], meta["ctx"]
    head_q, cap_q = model.get_output_embeddings(), softcap_of(model)
    rows_per_chunk = max(1, CHUNK_ELEMENTS // head.weight.shape[0])
    frames = []
    with torch.inference_mode():
        ids = torch.from_numpy(ref.tokens[windows]).to(model.device)
        hidden_q = final_hidden(model, ids)[:, first : ctx - 1].float()
        for b, w in enumerate(windows):
            hidden_R = torch.from_numpy(ref.hidden(w)).to(head.weight.device)
            targets = ref.tokens[w, first + 1 :]
            parts = []
            for start in range(0, len(targets), rows_per_chunk):
                stop = start + rows_per_chunk
                logits_q = softcap(head_q(hidden_q[b, start:stop].to(head_q.weight.dtype)).float(), cap_q)
                logits_R = head(hidden_R[start:stop])
                check_finite(logits_R, "reference store", corpus, ctx, w, first + start)
                check_finite(logits_q, f"quant {quant!r}", corpus, ctx, w, first + start)
                parts.append(token_metrics(logits_R, logits_q, targets[start:stop], topk, floor, work_dtype))
            cols = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
            n = len(targets)
            frames.append(pd.DataFrame({"corpus": corpus, "ctx": np.full(n, ctx, np.int64), "window": np.full(n, w, np.int64),
                                        "pos": np.arange(first, ctx - 1, dtype=np.int64), "token": targets.astype(np.int64), **cols}))
    return pd.concat(frames, ignore_index=True)[COLUMNS]


# ---------------------------------------------------------------------------- the stage


def parts_fingerprint(quant: str, stores: list[store.ReferenceStore], head: ReferenceHead, params: dict) -> str:
    """Identifies everything a part depends on; parts from any other setting are discarded."""
    state = {
        "quant": quant,
        "cohort": config.get(params, f"cohort.{quant}", default=None),
        "head": head.manifest["files"],
        "stores": [s.manifest["files"] for s in stores],
        "topk": config.get(params, "fidelity.topk", int),
        "floor": config.get(params, "fidelity.topk_floor", float),
        "batch_windows": config.get(params, "fidelity.batch_windows", int),
        "work_dtype": config.get(params, "fidelity.work_dtype", str),
        "version": METRICS_VERSION,
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def open_stores(params: dict, root: str | Path | None = None) -> list[store.ReferenceStore]:
    from .reference import store_specs

    return [store.ReferenceStore(store.store_dir(corpus, ctx, root)) for corpus, ctx in store_specs(params)]


def run_fidelity(params: dict, quant: str, model, tokenizer, reference_root: str | Path | None = None, out_dir: str | Path | None = None) -> pd.DataFrame:
    """Per-token table of `quant` on every store; writes <out_dir>/<quant>.parquet (resumable)."""
    from tqdm import tqdm

    out_dir = Path(out_dir or config.PATHS["fidelity"])
    head = ReferenceHead(reference_root, str(model.device))
    check_vocab(quant, model, tokenizer, head)
    stores = open_stores(params, reference_root)
    topk = config.get(params, "fidelity.topk", int)
    floor = config.get(params, "fidelity.topk_floor", float)
    batch = config.get(params, "fidelity.batch_windows", int)
    work_dtype = config.get(params, "fidelity.work_dtype", str)
    if work_dtype not in ("float32", "float64"):
        raise SilentzoneError(f"{params.get('_source', 'params.yaml')}: `fidelity.work_dtype` is {work_dtype!r}; choose float32 or float64")
    parts_dir = out_dir / ".parts" / quant
    fingerprint = parts_fingerprint(quant, stores, head, params)
    stamp = parts_dir / "fingerprint.txt"
    if parts_dir.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        shutil.rmtree(parts_dir)
    io.write_text(stamp, fingerprint)
    jobs = [(ref, list(range(s, min(s + batch, len(ref.tokens))))) for ref in stores for s in range(0, len(ref.tokens), batch)]
    paths = []
    for ref, windows in tqdm(jobs, desc=f"fidelity {quant}", unit="batch"):
        path = parts_dir / f"{ref.folder.name}_w{windows[0]:05d}.parquet"
        if not path.exists():
            io.write_parquet(path, window_batch_metrics(quant, model, head, ref, windows, topk, floor, work_dtype))
        paths.append(path)
    table = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    table = table.sort_values(SORT_KEYS, kind="stable").reset_index(drop=True)
    io.write_parquet(out_dir / f"{quant}.parquet", table)
    shutil.rmtree(parts_dir)
    return table


# ---------------------------------------------------------------------------- the 14 variants

AGGREGATIONS = {"mean": np.mean, "median": np.median, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}


def _aggregate(values: np.ndarray, agg: str, variant: str) -> float:
    if agg not in AGGREGATIONS:
        raise SilentzoneError(f"params.yaml: `variants.{variant}.agg` is {agg!r}; choose one of {', '.join(AGGREGATIONS)}")
    how = AGGREGATIONS[agg]
    # percentiles interpolate linearly between order statistics, as llama.cpp's perplexity tool does
    return float(how(values)) if callable(how) else float(np.percentile(values, how, method="linear"))


def _metric(rows: pd.DataFrame, metric: str, agg: str | None, variant: str) -> float:
    if metric in ("kld", "kld_topk", "rkld"):
        return _aggregate(rows[metric].to_numpy(np.float64), agg or "mean", variant)
    dln = rows["nll_q"].mean() - rows["nll_R"].mean()  # ln PPL(q) − ln PPL(R)
    value = {
        "ppl_ratio": lambda: math.exp(dln),
        "abs_dln_ppl": lambda: abs(dln),
        "ppl_greedy": lambda: math.exp(rows["nll_q_greedy"].mean()),
        "top1_disagree": lambda: 1.0 - rows["top1"].mean(),
        "rms_dp": lambda: math.sqrt((rows["dp"].to_numpy(np.float64) ** 2).mean()),
    }.get(metric)
    if value is None:
        raise SilentzoneError(f"params.yaml: `variants.{variant}.metric` is {metric!r}; choose one of kld, kld_topk, rkld, ppl_ratio, abs_dln_ppl, ppl_greedy, top1_disagree, rms_dp")
    return float(value())


def compute_variants(per_token: pd.DataFrame, params: dict) -> dict[str, float]:
    """The `variants:` registry of params evaluated on one quant's per-token table."""
    primary = config.get(params, "fidelity.primary_corpus", str)
    ctx = config.get(params, "fidelity.ctx", int)
    ctx_alt = config.get(params, "fidelity.ctx_alt", int)
    out = {}
    for name, spec in config.get(params, "variants", dict).items():
        corpus = spec.get("corpus", primary)
        want_ctx = ctx_alt if spec.get("ctx") == "alt" else int(spec.get("ctx", ctx))
        rows = per_token[(per_token["corpus"] == corpus) & (per_token["ctx"] == want_ctx)]
        if rows.empty:
            raise SilentzoneError(f"fidelity table: no tokens for variant {name!r} (corpus {corpus!r}, ctx {want_ctx}); rerun `silentzone reference` and `silentzone fidelity` with that corpus/ctx")
        out[name] = _metric(rows, spec.get("metric"), spec.get("agg"), name)
    return out


# ---------------------------------------------------------------------------- CLI


def add_arguments(p):
    p.add_argument("quant", help="quant name from params `cohort` (or `reference` for the self-check)")
    p.add_argument("--reference-dir", default=config.PATHS["reference"])
    p.add_argument("--out", default=config.PATHS["fidelity"])


def run(args):
    import torch

    from .quant import load_quant

    params = config.load(args.params)
    torch.set_num_threads(config.get(params, "threads", int))
    model, tokenizer, report = load_quant(params, args.quant)
    model.eval()
    table = run_fidelity(params, args.quant, model, tokenizer, args.reference_dir, args.out)
    counts = table.groupby(["corpus", "ctx"]).size()
    summary = {
        "quant": args.quant,
        "bpw": float(report["bpw"]),
        "quant_report": {k: v for k, v in report.items() if isinstance(v, (str, int, float, bool, type(None), list, dict))},
        "n_tokens": {f"{c}_c{x}": int(n) for (c, x), n in counts.items()},
        "variants": compute_variants(table, params),
    }
    io.write_json(Path(args.out) / f"{args.quant}.report.json", summary)
    v = summary["variants"]
    print(f"{args.out}/{args.quant}.parquet: {len(table)} tokens; mean KLD {v.get('kld_mean', float('nan')):.6f}, top-1 disagreement {v.get('top1_disagree', float('nan')):.4f}")
    return 0
