"""Built recipe quants are cached once per recipe and reference, verified on read, rebuilt when damaged."""

from __future__ import annotations

import hashlib

import pytest

from silentzone.quant import formats
from silentzone.quant.load import load_quant


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # F16 of the 1e5 rows: inf, as in gguf
@pytest.mark.parametrize("fmt", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "MXFP4", "F16", "BF16"])
def test_decode_of_encode_is_the_round_trip(fmt):
    """decode(encode(x)) is gguf-py's own round trip, bit for bit (the torch decoders included)."""
    import numpy as np
    from gguf import quants
    from gguf.constants import GGMLQuantizationType

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((48, 256)) * np.exp(rng.uniform(-30, 12, (48, 1)))).astype(np.float32)  # row scales 1e-13 .. 1e5
    x[0] = 0.0  # all-zero blocks
    x[1, :32] = 1e-40  # subnormal values
    qtype = GGMLQuantizationType[fmt]
    direct = quants.dequantize(quants.quantize(x, qtype), qtype).astype(np.float32)  # the round trip before the cache existed
    mine = formats.decode(formats.encode(x, fmt), fmt)
    assert mine.dtype == np.float32 and mine.shape == x.shape
    assert np.array_equal(mine.view(np.uint32), direct.view(np.uint32))  # bits, so -0.0 and NaN count too


def test_cached_quant_has_the_same_bits_and_damage_is_rebuilt(tiny_params, tmp_path, capsys):
    name = "mxfp4+ends-q8_0"
    first = load_quant(tiny_params, name, cache_dir=tmp_path)
    assert "built and cached" in capsys.readouterr().out
    folders = list((tmp_path / tiny_params.model.name / "quants").iterdir())
    assert len(folders) == 1 and (folders[0] / "manifest.json").exists()
    second = load_quant(tiny_params, name, cache_dir=tmp_path)
    assert "read from its cache" in capsys.readouterr().out
    assert weights_digest(first[0]) == weights_digest(second[0])
    assert first[2] == second[2]  # the same report either way

    data = folders[0] / "tensors.safetensors"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF
    data.write_bytes(bytes(raw))
    third = load_quant(tiny_params, name, cache_dir=tmp_path)
    captured = capsys.readouterr()
    assert "damaged quant cache" in captured.err and "built and cached" in captured.out
    assert weights_digest(third[0]) == weights_digest(first[0])
    load_quant(tiny_params, name, cache_dir=tmp_path)
    assert "read from its cache" in capsys.readouterr().out


def test_cache_is_keyed_by_recipe_and_reference(tiny_params, tmp_path):
    from silentzone import config

    load_quant(tiny_params, "q8_0", cache_dir=tmp_path)
    load_quant(tiny_params, "q4_0", cache_dir=tmp_path)
    raw = tiny_params.model_dump(by_alias=True)
    raw["seed"] = raw["seed"] + 1  # another tiny reference: its own artifact
    other = config.validate(raw, "params.yaml")
    load_quant(other, "q8_0", cache_dir=tmp_path)
    assert len(list((tmp_path / tiny_params.model.name / "quants").iterdir())) == 3


def test_hf_reference_is_hashed_once_and_keys_the_cache(tiny_params, tmp_path, capsys):
    """An hf: reference is identified by the sha256 of its weight files, remembered by path, size
    and mtime (a big model is not hashed on every load); its quants are cached like any other."""
    import json
    import os

    from silentzone import config
    from silentzone.model.load import build_tiny

    model, tokenizer = build_tiny(tiny_params)
    folder = tmp_path / "hf"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    raw = tiny_params.model_dump(by_alias=True)
    raw["model"] = {**raw["model"], "source": f"hf:{folder}", "name": "tiny-hf"}
    params = config.validate(raw, "params.yaml")
    cache = tmp_path / "models"
    first = load_quant(params, "q8_0", cache_dir=cache)
    assert "built and cached" in capsys.readouterr().out
    memo = cache / "tiny-hf" / "reference_sha256.json"
    assert len(json.loads(memo.read_text())) == 1
    weights = next(folder.glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # touched, same bytes
    second = load_quant(params, "q8_0", cache_dir=cache)
    assert "read from its cache" in capsys.readouterr().out  # hashed again, same sha256, same key
    assert len(json.loads(memo.read_text())) == 1  # the old state is forgotten
    assert weights_digest(first[0]) == weights_digest(second[0])
