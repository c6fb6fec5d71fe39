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

from ...errors import SilentzoneError


def settings(params):
    from .runtime import Settings

    e = params.engine.llamacpp
    return Settings(
        threads=params.threads,
        n_batch=e.n_batch,
        n_ubatch=e.n_ubatch,
        flash_attn=e.flash_attn,
        repack=e.repack,
        kv_type=e.kv_type,
        n_gpu_layers=e.n_gpu_layers,
    )


def provenance_note(params) -> dict:
    """What an output of this engine records beside its stamp: engine, settings, build, CPU."""
    from .runtime import build_info

    return {"engine": "llamacpp", "settings": params.engine.llamacpp.model_dump(), "threads": params.threads, **build_info()}


def reference(params, layout) -> list[str]:
    from . import windows

    return windows.write_reference(params, layout)


def fidelity(params, layout, quant: str) -> str:
    from . import windows

    return windows.run(params, layout, quant)


def bench(params, layout, name: str):
    from . import items

    return items.run(params, layout, name)


def check_vocab(name: str, head_manifest: dict, tokenizer) -> None:
    """A member must share the reference's tokenizer and logit count (the reference head's manifest); one line otherwise."""
    mine, theirs = tokenizer.fingerprint(), head_manifest["vocab_fingerprint"]
    if tokenizer.vocab_size != head_manifest["vocab_size"] or mine != theirs:
        raise SilentzoneError(
            f"quant {name!r}: its vocabulary ({tokenizer.vocab_size} tokens, {mine[:12]}) differs from the reference's "
            f"({head_manifest['vocab_size']}, {theirs[:12]}); a member must share the reference's tokenizer"
        )
