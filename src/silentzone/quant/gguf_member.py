"""Load any GGUF of the reference's model (a llama.cpp-made cohort member) into the reference's HF model.

    model, report = load_member(reference_model, reference_tokenizer, "q4_k_m.gguf")

A member made by `llama-quantize` is a file, not a recipe: its weights are read with gguf-py's
GGUFReader, dequantized with `gguf.quants.dequantize` (every ggml type gguf-py knows, K and IQ
types included), renamed to the reference's Hugging Face parameter names and copied into a deep
copy of the reference model. Everything that is not a weight (config, tokenizer, the runtime) stays
the reference's, so a member differs from the reference in its weights only, exactly as a recipe
quant does.

Checks before any tensor is dequantized, each failing with one SilentzoneError line naming the file:
the file parses as GGUF and holds every byte its tensor table promises (truncated/garbage files),
same architecture, same layer/head counts, same vocabulary (the GGUF's `tokenizer.ggml.tokens` vs
the reference tokenizer's tokens), every GGUF tensor maps to a reference parameter of the same shape
and every reference parameter is covered.

Layout differences handled (the same ones transformers' GGUF loader undoes, see
transformers.modeling_gguf_pytorch_utils): llama.cpp's converter permutes the rows of llama's Q and K
projections (rotary pairs interleaved per head); Gemma's converter stores RMSNorm weights as 1 + w.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np

from ..errors import SilentzoneError

# HF model_type -> GGUF general.architecture
ARCHITECTURES = {"llama": "llama", "gemma3": "gemma3", "gemma3_text": "gemma3"}
# GGUF tensors that carry no weight of the HF model (recomputed by transformers from the config).
IGNORED_TENSORS = ("rope_freqs.weight",)


def open_gguf(path):
    """A GGUFReader for `path` whose tensor data is all present, else one SilentzoneError line."""
    from gguf import GGUFReader
    from gguf.constants import GGML_QUANT_SIZES

    path = Path(path)
    if not path.is_file():
        raise SilentzoneError(f"{path}: GGUF file not found")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise SilentzoneError(f"{path}: not a GGUF file (it does not start with the GGUF magic); give a .gguf model file")
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # gguf-py raises ValueError, IndexError, struct errors... on a cut-off or damaged file
        raise SilentzoneError(
            f"{path}: not a readable GGUF file, truncated or damaged ({type(exc).__name__}: {_first_line(exc)}); re-create or re-download it"
        ) from None
    size = os.path.getsize(path)
    for tensor in reader.tensors:
        block, type_size = GGML_QUANT_SIZES[tensor.tensor_type]
        n_elements = int(np.prod([int(d) for d in tensor.shape]))
        expected = n_elements // block * type_size
        # np.memmap slicing silently stops at the end of the file, so a truncated file still parses.
        if tensor.data_offset + expected > size or tensor.data.nbytes != expected:
            raise SilentzoneError(
                f"{path}: truncated or damaged GGUF: tensor {tensor.name} needs {expected} bytes at offset "
                f"{tensor.data_offset}, the file has {size} bytes; re-create or re-download it"
            )
    return reader


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def tensor_types(reader_or_path) -> dict:
    """What a GGUF holds, per tensor and in sum.

    {"types": {ggml type: tensor count} over all tensors, "matrix_types": the same over 2-D tensors,
     "bpw": storage bits per weight over the 2-D weight matrices (block scales included; a tied
     token_embd is stored, and counted, once), "n_weights", "tensors": {gguf name: type name}}.
    """
    reader = reader_or_path if hasattr(reader_or_path, "tensors") else open_gguf(reader_or_path)
    types, matrix_types, per_tensor = {}, {}, {}
    bits, weights = 0, 0
    for tensor in reader.tensors:
        name = tensor.tensor_type.name
        per_tensor[tensor.name] = name
        types[name] = types.get(name, 0) + 1
        if len(tensor.shape) == 2 and min(int(d) for d in tensor.shape) > 1:
            matrix_types[name] = matrix_types.get(name, 0) + 1
            bits += 8 * int(tensor.n_bytes)
            weights += int(tensor.n_elements)
    return {
        "types": dict(sorted(types.items())),
        "matrix_types": dict(sorted(matrix_types.items())),
        "bpw": bits / weights if weights else float("nan"),
        "n_weights": weights,
        "tensors": per_tensor,
    }


def reference_tokens(tokenizer) -> list[str]:
    """The reference tokenizer's token strings by id (the form GGUF stores them in)."""
    return tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))


SENTENCEPIECE_SPACE = "\u2581"  # "▁", SentencePiece's mark for a space


def first_vocabulary_difference(gguf_tokens: list[str], ref_tokens: list[str]) -> int | None:
    """The first id where a GGUF's token differs from the reference tokenizer's, or None. A
    SentencePiece vocabulary (Gemma) stores its runs of spaces as plain spaces in the GGUF ("  ")
    while the tokenizer transformers builds from that same GGUF spells them "▁▁": the same token."""
    for i, (a, b) in enumerate(zip(gguf_tokens, ref_tokens)):
        if a != b and a.replace(" ", SENTENCEPIECE_SPACE) != b:
            return i
    return None if len(gguf_tokens) == len(ref_tokens) else min(len(gguf_tokens), len(ref_tokens))


def check_member(reader, path, model, tokenizer) -> dict:
    """{gguf tensor name: HF parameter name} after every same-model check; raises one line on the first mismatch."""
    import gguf

    path = Path(path)
    cfg = model.config.get_text_config()
    want_arch = ARCHITECTURES.get(cfg.model_type)
    if want_arch is None:
        raise SilentzoneError(
            f"{path}: the reference's model type {cfg.model_type!r} is not supported for GGUF members; supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    arch = field(reader, "general.architecture")
    if arch != want_arch:
        raise SilentzoneError(
            f"{path}: general.architecture is {arch!r}, the reference is {want_arch!r}; a member must be a GGUF of the reference model"
        )
    for key, want in (
        (f"{arch}.block_count", cfg.num_hidden_layers),
        (f"{arch}.embedding_length", cfg.hidden_size),
        (f"{arch}.attention.head_count", cfg.num_attention_heads),
        (f"{arch}.attention.head_count_kv", cfg.num_key_value_heads),
    ):
        got = field(reader, key)
        if got is None or int(got) != int(want):
            raise SilentzoneError(
                f"{path}: {key} is {got}, the reference has {want}; a member must be a GGUF of the reference model"
            )
    tokens = field(reader, "tokenizer.ggml.tokens")
    ref_tokens = reference_tokens(tokenizer)
    if tokens is None:
        raise SilentzoneError(
            f"{path}: no tokenizer.ggml.tokens in the metadata, so its vocabulary cannot be checked against the reference's"
        )
    diff = first_vocabulary_difference(list(tokens), ref_tokens)
    if diff is not None:
        raise SilentzoneError(
            f"{path}: tokenizer.ggml.tokens differs from the reference's vocabulary ({len(tokens)} vs {len(ref_tokens)} tokens, "
            f"first difference at id {diff}); a member must be a GGUF of the reference model"
        )

    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    name_map = gguf.get_tensor_name_map(arch_enum, cfg.num_hidden_layers)
    params = dict(model.named_parameters(remove_duplicate=False))
    gguf_to_hf = {}
    for hf_name in params:
        stem, _, suffix = hf_name.rpartition(".")
        gguf_stem = name_map.get_name(stem)
        if gguf_stem is not None:
            gguf_to_hf.setdefault(f"{gguf_stem}.{suffix}", []).append(hf_name)
    out, covered = {}, set()
    for tensor in reader.tensors:
        if tensor.name in IGNORED_TENSORS:
            continue
        hf_names = gguf_to_hf.get(tensor.name)
        if not hf_names:
            raise SilentzoneError(
                f"{path}: tensor {tensor.name} has no counterpart in the reference model; a member must be a GGUF of the reference model"
            )
        # A tied model maps `output.weight` and `token_embd.weight` onto the one shared matrix; the
        # GGUF of a tied model stores only token_embd.
        hf_name = hf_names[0]
        tied_to = [n for n in covered if params[n] is params[hf_name]]
        if tied_to:
            raise SilentzoneError(
                f"{path}: tensor {tensor.name} would overwrite {tied_to[0]}, which the reference ties to {hf_name}; "
                "the file stores separate weights for a matrix the reference shares, so it is not of the reference model"
            )
        shape = tuple(int(d) for d in reversed(list(tensor.shape)))  # GGUF lists ne0 (the row length) first
        want = tuple(params[hf_name].shape)
        if shape != want:
            raise SilentzoneError(
                f"{path}: tensor {tensor.name} has shape {list(shape)}, the reference's {hf_name} has {list(want)}; a member must be a GGUF of the reference model"
            )
        out[tensor.name] = hf_name
        covered.update(n for n in params if params[n] is params[hf_name])
    missing = [n for n in params if n not in covered]
    if missing:
        raise SilentzoneError(
            f"{path}: no tensor for the reference's {missing[0]} ({len(missing)} parameters uncovered); the file is incomplete or of another model"
        )
    return out


def _unpermute(weights: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp's convert_hf_to_gguf reorders each head's rows from HF's (half, half) rotary layout
    # to interleaved pairs; this is transformers' inverse (LlamaTensorProcessor._reverse_permute_weights).
    dim = weights.shape[0] // n_head // 2
    return weights.reshape(n_head, dim, 2, *weights.shape[1:]).swapaxes(2, 1).reshape(weights.shape)


def dequantized(reader, name_map: dict, model) -> dict:
    """{HF parameter name: fp32 numpy array in the reference's layout} for every mapped GGUF tensor."""
    from gguf.quants import dequantize

    cfg = model.config.get_text_config()
    arch = field(reader, "general.architecture")
    out = {}
    for tensor in reader.tensors:
        if tensor.name not in name_map:
            continue
        w = np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float32)
        if arch == "llama" and ".attn_q." in tensor.name:
            w = _unpermute(w, cfg.num_attention_heads)
        elif arch == "llama" and ".attn_k." in tensor.name:
            w = _unpermute(w, cfg.num_key_value_heads)
        elif arch == "gemma3" and tensor.name.endswith("norm.weight"):
            w = w - np.float32(1.0)
        out[name_map[tensor.name]] = w
    return out


def load_member(reference_model, reference_tokenizer, path):
    """(model, report): a deep copy of the reference model carrying the weights of GGUF `path`.

    report: {"file", "architecture", "file_type", plus tensor_types(path), and "params": {HF name:
    gguf name}}. The reference model is not modified.
    """
    import torch

    path = Path(path)
    reader = open_gguf(path)
    name_map = check_member(reader, path, reference_model, reference_tokenizer)
    arrays = dequantized(reader, name_map, reference_model)
    model = copy.deepcopy(reference_model)
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for hf_name, w in arrays.items():
            param = params[hf_name]
            # F32 tensors come back as read-only views of the file's memmap; torch wants writable memory.
            w = w if w.flags.writeable else w.copy()
            param.copy_(torch.from_numpy(w).reshape(param.shape).to(param.dtype))
    report = {
        "file": str(path),
        "architecture": field(reader, "general.architecture"),
        "file_type": field(reader, "general.file_type"),
    }
    report.update(tensor_types(reader))
    report["params"] = {hf: g for g, hf in name_map.items()}
    return model.eval(), report
