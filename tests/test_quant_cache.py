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


@pytest.mark.parametrize("fmt", ["Q8_0", "Q4_1", "MXFP4", "F16", "BF16"])
def test_decode_of_encode_is_the_round_trip(fmt):
    import numpy as np

    from gguf import quants
    from gguf.constants import GGMLQuantizationType

    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    qtype = GGMLQuantizationType[fmt]
    direct = quants.dequantize(quants.quantize(x, qtype), qtype).astype(np.float32)  # the round trip before the cache existed
    assert np.array_equal(formats.decode(formats.encode(x, fmt), fmt), direct)


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
