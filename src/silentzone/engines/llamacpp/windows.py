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


def open_reference(params, layout) -> tuple[dict, list]:
    """(head manifest, segments) of the reference store, made by the current params and code, intact
    (verified once; the head's weights are loaded later, see per_token_table)."""
    folder = refstore.head_dir(layout.reference)
    manifest = refstore.read_manifest(folder, "rerun `silentzone reference`")
    provenance.verify_made_by(manifest, folder / refstore.MANIFEST, params, "reference")
    segments = [refstore.open_fidelity(layout.reference, corpus, ctx) for corpus, ctx in params.store_specs()]
    for seg in segments:  # the head and every segment from the same `silentzone reference` (an interrupted one mixes two)
        provenance.verify_made_by(seg.manifest, seg.folder / refstore.MANIFEST, params, "reference")
    return manifest, segments


class _Decoder:
    """Decodes one job (a group of windows of one segment) at a time, keeping one context per segment."""

    def __init__(self, model, params):
        self.model, self.params = model, params
        self.segment, self.context = None, None

    def __call__(self, job) -> list:
        seg, group = job
        ctx, first = seg.manifest["ctx"], seg.first(0)
        if seg is not self.segment:
            self.close()
            self.segment, self.context = seg, self.model.context(seqs_per_decode(self.params, ctx), ctx)
        windows = seg.windows()
        logits, _ = self.context.run([windows[w] for w in group], [np.arange(first, ctx - 1)] * len(group))
        return logits

    def close(self) -> None:
        if self.context is not None:
            self.context.close()
            self.context = None


def per_token_table(params, layout, quant: str, path, head_manifest: dict, segments) -> pd.DataFrame:
    """Per-token table of the GGUF `path` on every stored segment, one model load for all. llama.cpp
    decodes the next group of windows in a worker thread (ctypes releases the GIL) while this thread
    scores the last one, so the metrics, and loading torch and the reference head at the start, run
    beside llama.cpp instead of after it; the jobs and their order are fixed, so the table is the same
    bytes either way."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [
        (seg, list(range(g, min(g + seqs_per_decode(params, seg.manifest["ctx"]), len(seg)))))
        for seg in segments
        for g in range(0, len(seg), seqs_per_decode(params, seg.manifest["ctx"]))
    ]
    frames = []
    with runtime.Model(path, settings(params)) as model, ThreadPoolExecutor(1) as pool:
        check_vocab(quant, head_manifest, model.tokenizer)
        decoder = _Decoder(model, params)
        try:
            pending = pool.submit(decoder, jobs[0])
            import torch

            from ...stages import fidelity as stage

            head_R = refstore.read_head(layout.reference, verify=False)  # verified by open_reference
            with tqdm(total=sum(len(g) for _, g in jobs), desc=f"fidelity {quant}", unit="window") as bar:
                for k, (seg, group) in enumerate(jobs):
                    logits = pending.result()
                    if k + 1 < len(jobs):
                        pending = pool.submit(decoder, jobs[k + 1])
                    for w, z in zip(group, logits):
                        z = torch.from_numpy(z)
                        frames.append(stage.window_metrics(quant, head_R, seg, w, lambda a, b, z=z: z[a:b], params))
                    bar.update(len(group))
        finally:
            pending.cancel()
            pool.shutdown(wait=True)
            decoder.close()
    return pd.concat(frames, ignore_index=True).sort_values(TOKEN_KEYS, kind="stable").reset_index(drop=True)


def run(params, layout, quant: str) -> str:
    from ...quant.load import check_name
    from ...stages import fidelity as stage

    check_name(params, quant)
    head_manifest, segments = open_reference(params, layout)  # a stale reference store stops us before any file is built
    path, report = files.member_file(params, quant)
    table = per_token_table(params, layout, quant, path, head_manifest, segments)
    report = {**report, "engine": provenance_note(params)}
    return stage.write_outputs(params, layout, quant, table, report)
