"""The llama.cpp engine: the reference and every member as GGUF files through llama.cpp's kernels, in-process.

What a quant is here: its GGUF file (files.py) run as llama.cpp runs it — quantized weights in their
own kernels, activations rounded to 8-bit blocks in the quantized matmuls, an F16 KV cache — so the
numbers are those of the deployed model. The reference is the F32 (or BF16) GGUF of the reference's
weights, run the same way.

  reference  llama.cpp tokenizes the corpora (its own tokenizer: the same ids as transformers' for
             SmolLM2, tests/test_engine_llamacpp.py), the windows are cut as the torch engine cuts them
             (stages/reference.plan), and the reference's final hidden states at the scored positions
             are stored with its output matrix (refstore: the one store format). Reference logits =
             h @ W^T in float32 — llama.cpp's own F32 output matmul, to rounding.
  fidelity   the member's logits at the scored positions only, windows batched as sequences
             (n_batch // ctx per llama_decode, as llama-perplexity does), the same metrics and
             variants (silentzone.metrics, silentzone.variants), the same table and report.
  bench      items as sequences, several per decode, logits only at the positions scored (and, for
             a quant, along the reference's path for the per-prompt KLD); code tasks generate
             greedily through llama.cpp. The same item table, `choice_logprobs` included.

Settings that change numbers (threads, n_batch, n_ubatch, flash attention, repacking, the KV type,
the reference type) are params `threads` and `engine.llamacpp`, and every output records them with
the llama.cpp build and the CPU's features (runtime.build_info).
"""

from __future__ import annotations

from .common import check_vocab, provenance_note, settings  # noqa: F401 (the engine's helpers, re-exported)


def reference(params, layout) -> list[str]:
    from . import windows

    return windows.write_reference(params, layout)


def fidelity(params, layout, quant: str) -> str:
    from . import windows

    return windows.run(params, layout, quant)


def bench(params, layout, name: str):
    from . import items

    return items.run(params, layout, name)
