"""What the llama.cpp engine's modules share: its settings from params, the note its outputs carry, the
vocabulary check (a module of its own, so items.py and windows.py import no package that imports them)."""

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


def check_vocab(name: str, head_manifest: dict, tokenizer) -> None:
    """A member must share the reference's tokenizer and logit count (the reference head's manifest); one line otherwise."""
    mine, theirs = tokenizer.fingerprint(), head_manifest["vocab_fingerprint"]
    if tokenizer.vocab_size != head_manifest["vocab_size"] or mine != theirs:
        raise SilentzoneError(
            f"quant {name!r}: its vocabulary ({tokenizer.vocab_size} tokens, {mine[:12]}) differs from the reference's "
            f"({head_manifest['vocab_size']}, {theirs[:12]}); a member must share the reference's tokenizer"
        )
