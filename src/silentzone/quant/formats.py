"""Block quantization formats, bit-identical to ggml, applied as quantize -> dequantize round trips.

Every format goes through `gguf.quants` (the llama.cpp project's numpy port of ggml-quants.c), so the
bytes match what `llama-quantize` writes (tests check this against the reference GGUF's own tensors).
A weight tensor is quantized row by row along its last dimension, in blocks of `block_size` values,
each block storing its scale(s) beside the packed values; the model then runs on the dequantized fp32
values. Sizes come from gguf.constants.GGML_QUANT_SIZES, so bits per weight count the scale bytes
exactly as a GGUF file does (Q4_0: 2-byte fp16 scale + 16 bytes of nibbles per 32 weights = 4.5).

Formats:
  block formats (gguf quantizes them):  Q8_0 Q5_1 Q5_0 Q4_1 Q4_0 MXFP4
  keep formats (plain float casts):     F32 (unchanged) F16 BF16
  K/IQ formats (KQUANT_FORMATS) are named but need llama.cpp's quantizer, which gguf-py lacks; they
  raise one error pointing at the optional `kquants` extra (see docs/quant.md).

Fallback rule (`resolve`): a row whose length is not a multiple of a format's block size is never
truncated. The format is replaced by the next one in FALLBACK (llama.cpp's own choices: Q6_K->Q8_0,
Q5_K->Q5_1, Q4_K->Q5_0, Q3_K/Q2_K->Q4_0, every 32-block format -> F16) until one fits; F16 always fits.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from ..errors import SilentzoneError

BLOCK_FORMATS = ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "MXFP4")
KEEP_FORMATS = ("F32", "F16", "BF16")
FORMATS = BLOCK_FORMATS + KEEP_FORMATS
KQUANT_FORMATS = ("Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K", "IQ4_XS", "IQ4_NL")

FALLBACK = {
    "Q6_K": "Q8_0",
    "Q5_K": "Q5_1",
    "Q4_K": "Q5_0",
    "Q3_K": "Q4_0",
    "Q2_K": "Q4_0",
    "IQ4_XS": "IQ4_NL",
    **{fmt: "F16" for fmt in ("Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "MXFP4", "IQ4_NL")},
}


def _qtype(fmt: str):
    from gguf.constants import GGMLQuantizationType

    return GGMLQuantizationType[fmt]


def check_format(fmt: str, where: str = "format") -> str:
    """`fmt` if usable here, else one SilentzoneError listing the valid names."""
    if fmt in FORMATS:
        return fmt
    if fmt in KQUANT_FORMATS:
        if importlib.util.find_spec("llama_cpp") is None:
            raise SilentzoneError(
                f"{where}: format {fmt} needs llama.cpp's K/IQ quantizer; run `pip install -e '.[kquants]'` "
                f"(builds llama.cpp, ~6 min) or use one of {', '.join(FORMATS)}"
            )
        raise SilentzoneError(
            f"{where}: format {fmt}: the K/IQ quantization path is not implemented yet (see docs/quant.md); "
            f"use one of {', '.join(FORMATS)}"
        )
    raise SilentzoneError(f"{where}: unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")


def block_size(fmt: str) -> int:
    from gguf.constants import GGML_QUANT_SIZES

    return GGML_QUANT_SIZES[_qtype(fmt)][0]


def bits_per_weight(fmt: str) -> float:
    """Storage bits per weight, scale bytes included (GGML_QUANT_SIZES: bytes per block / block size)."""
    from gguf.constants import GGML_QUANT_SIZES

    size, type_size = GGML_QUANT_SIZES[_qtype(fmt)]
    return 8.0 * type_size / size


def resolve(fmt: str, row_length: int) -> list[str]:
    """The fallback chain from `fmt` to the first format whose block size divides `row_length`."""
    chain = [fmt]
    while row_length % block_size(chain[-1]):
        chain.append(FALLBACK[chain[-1]])
    return chain


def quantize_dequantize(tensor, fmt: str):
    """Round-trip `tensor` (fp32, last dim = rows) through `fmt`; same type back (torch or numpy).

    The last dimension must be a multiple of the block size: pick the format with `resolve` first.
    """
    check_format(fmt)
    is_torch = not isinstance(tensor, np.ndarray)
    array = tensor.detach().cpu().numpy() if is_torch else tensor
    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim == 0 or array.shape[-1] % block_size(fmt):
        raise SilentzoneError(
            f"quantize_dequantize: row length {array.shape[-1] if array.ndim else 0} is not a multiple of "
            f"{fmt}'s block size {block_size(fmt)}; choose the format with quant.formats.resolve"
        )
    out = _round_trip(array, fmt)
    if not is_torch:
        return out
    import torch

    return torch.from_numpy(out).to(device=tensor.device)


def _round_trip(array: np.ndarray, fmt: str) -> np.ndarray:
    if fmt == "F32":
        return array.copy()
    return decode(encode(array, fmt), fmt)


def encode(array: np.ndarray, fmt: str) -> np.ndarray:
    """What a tensor stored in `fmt` holds: float16 values for F16, else the GGUF block bytes (uint8,
    one row of blocks per input row). `decode(encode(x, fmt), fmt)` is the round trip of `fmt`."""
    array = np.ascontiguousarray(array, dtype=np.float32)
    if fmt == "F16":
        return array.astype(np.float16)
    from gguf import quants

    return quants.quantize(array, _qtype(fmt))


def decode(encoded: np.ndarray, fmt: str) -> np.ndarray:
    """The float32 values of an `encode`d tensor (gguf.quants.dequantize: ggml's arithmetic)."""
    if fmt == "F16":
        return encoded.astype(np.float32)
    if fmt in _TORCH_DECODERS:
        return _TORCH_DECODERS[fmt](np.ascontiguousarray(encoded))
    from gguf import quants

    return quants.dequantize(encoded, _qtype(fmt)).astype(np.float32, copy=False)


def quantize_bytes(array: np.ndarray, fmt: str) -> np.ndarray:
    """The raw GGUF bytes of `array` in `fmt` (uint8, one row of blocks per input row)."""
    from gguf import quants

    return quants.quantize(np.ascontiguousarray(array, dtype=np.float32), _qtype(check_format(fmt)))


def _decode_q8_0(encoded: np.ndarray) -> np.ndarray:
    """gguf.quants' Q8_0 dequantize_blocks (d·q in float32) in torch's threads: 2x faster, the same
    bits (an fp16 scale times an int8 is exact in float32; tests/test_quant_cache.py compares them).
    Torch versions of Q4_0, Q4_1 and MXFP4 were measured too and were no faster than gguf-py."""
    import torch

    blocks = torch.from_numpy(encoded.reshape(-1, 34))
    out = torch.empty(blocks.shape[0], 32)
    out.copy_(blocks[:, 2:].view(torch.int8))
    out.mul_(blocks[:, :2].contiguous().view(torch.float16).float())
    return out.numpy().reshape(*encoded.shape[:-1], encoded.shape[-1] // 34 * 32)


_TORCH_DECODERS = {"Q8_0": _decode_q8_0}
