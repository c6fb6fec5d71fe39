"""fidelity QUANT: per-token fidelity of one quant against the reference store, and its variants.

Logits come out of the matmul in fp32 (as the models compute them); metrics in silentzone.metrics.
Rows are processed in chunks so a 262k vocabulary never materialises logits for more than a few
dozen positions at once.

Output: data/fidelity/<quant>.parquet (one row per scored token, sorted by corpus, ctx, window, pos)
and data/fidelity/<quant>.report.json (bpw from the quant's loader, token counts, the variants).
Work is saved per window batch under data/fidelity/.parts/<quant>/, so an interrupted run resumes;
the final table is the same bytes either way. A damaged part is discarded and recomputed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys

import numpy as np
import pandas as pd

from .. import io, metrics, provenance, refstore, variants
from ..errors import SilentzoneError
from ..layout import Layout
from ..model import head as lm
from ..schema import TOKEN_COLUMNS, TOKEN_KEYS


def window_batch_metrics(quant: str, model, head_R, segment: refstore.Segment, windows: list[int], params) -> pd.DataFrame:
    """Per-token table for some windows of one segment."""
    import torch

    meta = segment.manifest
    ctx, first = meta["ctx"], segment.first(0)
    cap_q = lm.softcap_of(model)
    tokens = segment.windows()
    frames = []
    with torch.inference_mode():
        ids = torch.from_numpy(tokens[windows]).to(model.device)
        hidden_q = lm.final_hidden(model, ids)[:, first : ctx - 1].float()
        for b, w in enumerate(windows):
            frames.append(
                window_metrics(
                    quant,
                    head_R,
                    segment,
                    w,
                    lambda start, stop, b=b: lm.lm_logits(model, hidden_q[b, start:stop], cap_q),
                    params,
                )
            )
    return pd.concat(frames, ignore_index=True)[TOKEN_COLUMNS]


def window_metrics(quant: str, head_R, segment: refstore.Segment, w: int, quant_logits, params) -> pd.DataFrame:
    """Per-token table of window `w` of a segment; `quant_logits(start, stop)` gives the quant's float32
    logits at scored rows start..stop (whatever engine made them), the reference's come from its store."""
    import torch

    f = params.fidelity
    meta = segment.manifest
    corpus, ctx, first = meta["corpus"], meta["ctx"], segment.first(0)
    step = metrics.rows_per_chunk(head_R.vocab_size)
    targets = segment.windows()[w, first + 1 :]
    hidden_R = torch.from_numpy(segment.hidden(w))
    parts = []
    with torch.inference_mode():
        for start in range(0, len(targets), step):
            stop = start + step
            logits_q = quant_logits(start, stop)
            logits_R = head_R(hidden_R[start:stop])
            metrics.check_finite(logits_R, "reference store", corpus, ctx, w, first + start)
            metrics.check_finite(logits_q, f"quant {quant!r}", corpus, ctx, w, first + start)
            parts.append(metrics.token_metrics(logits_R, logits_q, targets[start:stop], f.topk, f.topk_floor, f.work_dtype))
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


def parts_fingerprint(quant: str, segments: list[refstore.Segment], head_R, params) -> str:
    """Identifies everything a part depends on; parts from any other setting are discarded."""
    f = params.fidelity
    state = {
        "quant": quant,
        "cohort": params.cohort.get(quant),
        "head": head_R.manifest["files"],
        "stores": [s.manifest["files"] for s in segments],
        "topk": f.topk,
        "floor": f.topk_floor,
        "batch_windows": f.batch_windows,
        "work_dtype": f.work_dtype,
        "version": metrics.VERSION,
        "code": provenance.code_sha256("fidelity"),
    }  # parts of other code are stale too, not only of other metrics
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def _read_part(path):
    """A finished part, or None when it is damaged (then it is recomputed, and we say so). A part
    without its checksum was interrupted between the two writes: recomputed silently."""
    digest = path.with_suffix(".sha256")
    if not digest.exists():
        path.unlink()
        return None
    table = None
    if digest.read_text(encoding="utf-8", errors="replace").strip() == io.sha256_file(path):  # a readable but altered part too
        try:
            table = io.read_parquet(path, "fidelity resume part")
        except SilentzoneError:
            pass
    if table is None or list(table.columns) != TOKEN_COLUMNS:
        print(f"{path}: damaged resume part, discarded and recomputed", file=sys.stderr)
        path.unlink()
        digest.unlink()
        return None
    return table


def check_inputs(params, layout: Layout) -> None:
    """The reference store this quant will be compared with, checked before any quant is built
    (building one writes its cache: a stale reference must stop us first)."""
    head = refstore.head_dir(layout.reference)
    meta = refstore.read_manifest(head, "rerun `silentzone reference`")
    provenance.verify_made_by(meta, head / refstore.MANIFEST, params, "reference")
    for corpus, ctx in params.store_specs():
        seg = refstore.open_fidelity(layout.reference, corpus, ctx)
        provenance.verify_made_by(seg.manifest, seg.folder / refstore.MANIFEST, params, "reference")


def per_token_table(params, layout: Layout, quant: str, model, tokenizer) -> pd.DataFrame:
    """Per-token table of `quant` on every segment; resumable through parts."""
    from tqdm import tqdm

    head_R = refstore.read_head(layout.reference, str(model.device))
    provenance.verify_made_by(head_R.manifest, refstore.head_dir(layout.reference) / refstore.MANIFEST, params, "reference")
    head_R.check_vocab(quant, model, tokenizer)
    segments = [refstore.open_fidelity(layout.reference, corpus, ctx) for corpus, ctx in params.store_specs()]
    for seg in segments:  # the head and every segment from the same `silentzone reference` (an interrupted one mixes two)
        provenance.verify_made_by(seg.manifest, seg.folder / refstore.MANIFEST, params, "reference")
    parts_dir = layout.fidelity_parts(quant)
    fingerprint = parts_fingerprint(quant, segments, head_R, params)
    stamp = parts_dir / "fingerprint.txt"
    if parts_dir.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        shutil.rmtree(parts_dir)
    io.write_text(stamp, fingerprint)
    batch = params.fidelity.batch_windows
    jobs = [(seg, list(range(s, min(s + batch, len(seg))))) for seg in segments for s in range(0, len(seg), batch)]
    tables = []
    for seg, windows in tqdm(jobs, desc=f"fidelity {quant}", unit="batch"):
        path = parts_dir / f"{seg.folder.name}_w{windows[0]:05d}.parquet"
        table = _read_part(path) if path.exists() else None
        if table is None:
            io.write_parquet(path, window_batch_metrics(quant, model, head_R, seg, windows, params))
            io.write_text(path.with_suffix(".sha256"), io.sha256_file(path))
            table = io.read_parquet(path, "fidelity resume part")
        tables.append(table)
    table = pd.concat(tables, ignore_index=True).sort_values(TOKEN_KEYS, kind="stable").reset_index(drop=True)
    return table


def run(params, layout: Layout, quant: str, model, tokenizer, quant_report: dict) -> str:
    """Write <quant>.parquet and <quant>.report.json; returns a one-line summary."""
    table = per_token_table(params, layout, quant, model, tokenizer)
    summary = write_outputs(params, layout, quant, table, quant_report)
    shutil.rmtree(layout.fidelity_parts(quant))
    return summary


def write_outputs(params, layout: Layout, quant: str, table: pd.DataFrame, quant_report: dict, engine: dict | None = None) -> str:
    """<quant>.parquet and <quant>.report.json from a finished per-token table. A served member's
    report also names its server (`engine`) and the variants its top-k cannot give (`unavailable`)."""
    counts = table.groupby(["corpus", "ctx"]).size()
    missing = variants.unavailable(params, engine is not None)
    found = variants.compute(
        table, params, skip=missing
    )  # before the table is written: a failure leaves no table without its report
    io.write_parquet(layout.fidelity_table(quant), table)
    summary = {
        "quant": quant,
        "provenance": provenance.stamp(params, "fidelity", [layout.fidelity_table(quant)], quant),
        "bpw": float(quant_report["bpw"]),
        "quant_report": {k: v for k, v in quant_report.items() if isinstance(v, (str, int, float, bool, type(None), list, dict))},
        "n_tokens": {f"{c}_c{x}": int(n) for (c, x), n in counts.items()},
        "variants": found,
        **(engine or {}),
        **({"unavailable": missing} if engine is not None else {}),
    }
    io.write_json(layout.fidelity_report(quant), summary)
    v = summary["variants"]
    kld = f"mean KLD {v['kld_mean']:.6f}" if "kld_mean" in v else f"mean top-k KLD {v.get('kld_topk_mean', float('nan')):.6f}"
    return f"{layout.fidelity_table(quant)}: {len(table)} tokens; {kld}, top-1 disagreement {v.get('top1_disagree', float('nan')):.4f}"
