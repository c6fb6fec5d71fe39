"""The reference store and the fidelity stage through llama.cpp (see engines/llamacpp/__init__.py).

Windows run as sequences, n_batch // ctx of them per llama_decode (llama-perplexity's batching), in
one context per (corpus, ctx) of one model load; llama.cpp returns logits only at the scored
positions. Per-token metrics and the outputs are the fidelity stage's own (stages/fidelity.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm import tqdm

from ... import provenance, refstore
from ...schema import REFERENCE, TOKEN_KEYS
from . import files, runtime
from .common import check_vocab, provenance_note, settings


def head_arrays(path) -> tuple[np.ndarray, float | None]:
    """(output matrix as float32 [vocab, hidden], final logit softcap or None) of a GGUF: `output.weight`,
    or the tied `token_embd.weight`."""
    from gguf.quants import dequantize

    from ...quant.gguf_member import field, open_gguf

    reader = open_gguf(path)
    tensors = {t.name: t for t in reader.tensors}
    t = tensors.get("output.weight") or tensors["token_embd.weight"]
    weight = np.ascontiguousarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
    cap = field(reader, f"{field(reader, 'general.architecture')}.final_logit_softcapping")
    return weight, (float(cap) if cap else None)


def seqs_per_decode(params, ctx: int) -> int:
    """Windows per llama_decode: n_batch // ctx, at least one (llama-perplexity's n_parallel)."""
    return max(1, params.engine.llamacpp.n_batch // ctx)


def write_reference(params, layout) -> list[str]:
    """The reference store of the llama.cpp engine: head + one segment per (corpus, ctx)."""
    from ...stages import reference as stage

    path, report = files.member_file(params, REFERENCE)
    lines = []
    with runtime.Model(path, settings(params)) as model:
        segments = stage.plan(params, model.tokenizer, layout.prepared)
        weight, cap = head_arrays(path)
        note = provenance_note(params)
        made = provenance.made_by(params, "reference")
        meta = {"model": params.model.name, "softcap": cap, "vocab_fingerprint": model.tokenizer.fingerprint()}
        refstore.write_head(layout.reference, weight, None, {**meta, "engine": note, "gguf": report, "provenance": made})
        for corpus, ctx, windows, meta in segments:
            first, stop = meta["score_first"], meta["score_stop"]
            folder = refstore.fidelity_dir(layout.reference, corpus, ctx)
            writer = refstore.SegmentWriter(
                folder, {**meta, "hidden_size": model.n_embd, "engine": "llamacpp", "provenance": made}
            )
            n_seq = seqs_per_decode(params, ctx)
            with (
                model.context(n_seq, ctx, embeddings=True) as c,
                tqdm(total=len(windows), desc=f"reference {folder.name}") as bar,
            ):
                for g in range(0, len(windows), n_seq):
                    group = list(range(g, min(g + n_seq, len(windows))))
                    _, hidden = c.run([windows[w] for w in group], [np.arange(first, stop)] * len(group))
                    for w, h in zip(group, hidden):
                        writer.add(f"w{w:05d}", windows[w], first, h)
                    bar.update(len(group))
            writer.close()
            lines.append(f"{folder}: {len(windows)} windows x {ctx} tokens, positions {first}..{stop - 1} scored (llama.cpp)")
    return lines


def open_reference(params, layout):
    """(head, segments) of the reference store, made by the current params and code, intact (verified once)."""
    head_R = refstore.read_head(layout.reference)
    provenance.verify_made_by(head_R.manifest, refstore.head_dir(layout.reference) / refstore.MANIFEST, params, "reference")
    segments = [refstore.open_fidelity(layout.reference, corpus, ctx) for corpus, ctx in params.store_specs()]
    for seg in segments:  # the head and every segment from the same `silentzone reference` (an interrupted one mixes two)
        provenance.verify_made_by(seg.manifest, seg.folder / refstore.MANIFEST, params, "reference")
    return head_R, segments


def per_token_table(params, quant: str, path, head_R, segments) -> pd.DataFrame:
    """Per-token table of the GGUF `path` on every stored segment (one model load for all)."""
    import torch

    from ...stages import fidelity as stage

    frames = []
    with runtime.Model(path, settings(params)) as model:
        check_vocab(quant, head_R, model.tokenizer)
        for seg in segments:
            ctx, first = seg.manifest["ctx"], seg.first(0)
            windows = seg.windows()
            n_seq = seqs_per_decode(params, ctx)
            with model.context(n_seq, ctx) as c, tqdm(total=len(windows), desc=f"fidelity {quant} {seg.folder.name}") as bar:
                for g in range(0, len(windows), n_seq):
                    group = list(range(g, min(g + n_seq, len(windows))))
                    logits, _ = c.run([windows[w] for w in group], [np.arange(first, ctx - 1)] * len(group))
                    for w, z in zip(group, logits):
                        z = torch.from_numpy(z)
                        frames.append(stage.window_metrics(quant, head_R, seg, w, lambda a, b, z=z: z[a:b], params))
                    bar.update(len(group))
    return pd.concat(frames, ignore_index=True).sort_values(TOKEN_KEYS, kind="stable").reset_index(drop=True)


def run(params, layout, quant: str) -> str:
    from ...quant.load import check_name
    from ...stages import fidelity as stage

    check_name(params, quant)
    head_R, segments = open_reference(params, layout)  # a stale reference store stops us before any file is built
    path, report = files.member_file(params, quant)
    table = per_token_table(params, quant, path, head_R, segments)
    report = {**report, "engine": provenance_note(params)}
    return stage.write_outputs(params, layout, quant, table, report)
