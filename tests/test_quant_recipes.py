"""Recipes: tensor classes, validation errors, in-place application, tied embeddings, bpw, profiles."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from silentzone import config
from silentzone.errors import SilentzoneError
from silentzone.model import build_tiny
from silentzone.quant import formats, members, recipes
from silentzone.quant.load import check_name, load_quant
from silentzone.quant.recipes import apply_recipe, tensor_class, validate_cohort, validate_recipe

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "name,cls",
    [
        ("model.embed_tokens.weight", "embedding"),
        ("model.layers.0.self_attn.q_proj.weight", "attn_q"),
        ("model.layers.12.self_attn.k_proj.weight", "attn_k"),
        ("model.layers.3.self_attn.v_proj.weight", "attn_v"),
        ("model.layers.29.self_attn.o_proj.weight", "attn_o"),
        ("model.layers.7.mlp.gate_proj.weight", "ffn_gate"),
        ("model.layers.7.mlp.up_proj.weight", "ffn_up"),
        ("model.layers.7.mlp.down_proj.weight", "ffn_down"),
        ("lm_head.weight", "output"),
        ("model.language_model.layers.4.self_attn.k_proj.weight", "attn_k"),  # gemma3 multimodal prefix
        ("model.language_model.embed_tokens.weight", "embedding"),
        ("model.layers.0.input_layernorm.weight", None),
        ("model.layers.0.self_attn.q_norm.weight", None),  # gemma3 per-head norm
        ("model.norm.weight", None),
        ("model.layers.0.self_attn.q_proj.bias", None),
    ],
)
def test_tensor_class(name, cls):
    assert tensor_class(name) == cls


def _one_line_error(recipe, *needles):
    with pytest.raises(SilentzoneError) as info:
        validate_recipe(recipe, "params.yaml: cohort.x")
    message = str(info.value)
    assert "\n" not in message and message.startswith("params.yaml: cohort.x")
    for needle in needles:
        assert needle in message, message
    return message


def test_unknown_class_lists_valid_classes():
    _one_line_error({"default": "Q4_0", "ffn_downn": "Q8_0"}, "unknown tensor class 'ffn_downn'", *recipes.TENSOR_CLASSES)


def test_unknown_format_lists_valid_formats():
    _one_line_error({"attn_v": "Q4_2"}, "cohort.x.attn_v", "unknown format 'Q4_2'", *formats.FORMATS)


def test_layer_override_errors():
    _one_line_error({"layers": {"first": "Q8_0"}}, "layer key 'first' is not an integer")
    _one_line_error({"layers": {0: {"embedding": "Q8_0"}}}, "unknown layer tensor class 'embedding'", "ffn_down")
    _one_line_error({"layers": {0: "Q9_0"}}, "unknown format 'Q9_0'")


def test_normal_form_and_precedence():
    recipe = validate_recipe({"default": "Q4_0", "ffn_down": "Q5_0", "layers": {"0": "Q8_0", -1: {"ffn_down": "F16"}}}, "r")
    assert validate_recipe("Q8_0", "r") == {"default": "Q8_0", "classes": {}, "layers": {}}
    pick = recipes.format_for
    assert pick(recipe, "attn_q", 5, 30) == "Q4_0"  # default
    assert pick(recipe, "ffn_down", 5, 30) == "Q5_0"  # class
    assert pick(recipe, "ffn_down", 0, 30) == "Q8_0"  # a layer's bare format beats the class
    assert pick(recipe, "ffn_down", 29, 30) == "F16"  # -1 = last layer
    assert pick(recipe, "attn_q", 29, 30) == "Q4_0"  # a layer mapping changes only what it names
    assert validate_recipe({"ffn_up": "Q4_0"}, "r")["default"] == "F32"  # unnamed classes keep the reference


def test_cohort_names_checked():
    with pytest.raises(SilentzoneError, match=r"^p.yaml: cohort name 'q8_0.ffn' must be .*no dots"):
        validate_cohort({"q8_0.ffn": "Q8_0"}, "p.yaml")
    with pytest.raises(SilentzoneError, match=r"^p.yaml: cohort name 'reference' is reserved"):
        validate_cohort({"reference": "Q8_0"}, "p.yaml")
    # every capture command runs the same check (and every recipe's) on params.yaml, naming the file
    for key, value, error in [
        ("q8_0.ffn", "Q8_0", r"^params.yaml: cohort name 'q8_0.ffn' must be .*no dots"),
        ("bad", {"attn_v": "Q4_2"}, r"^params.yaml: cohort.bad.attn_v: unknown format 'Q4_2'"),
    ]:
        raw = config.build_profile("tiny", REPO / "profiles")
        raw["cohort"][key] = value
        params = config.validate(raw, "params.yaml")  # configuration alone does not know the recipe language
        with pytest.raises(SilentzoneError, match=error):
            members.validate_cohort(params.cohort, params.source, params.corpora)


@pytest.fixture
def tiny_model(tiny_params):
    model, _ = build_tiny(tiny_params)
    return model


def _snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_apply_changes_exactly_the_named_tensors(tiny_model):
    before = _snapshot(tiny_model)
    report = apply_recipe(tiny_model, {"ffn_down": "Q4_0", "layers": {"-1": {"attn_v": "Q8_0"}}})
    after = tiny_model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {
        "model.layers.0.mlp.down_proj.weight",
        "model.layers.1.mlp.down_proj.weight",
        "model.layers.1.self_attn.v_proj.weight",
    }
    for name in changed:
        fmt = report["tensors"][name]["format"]
        assert torch.equal(after[name], formats.quantize_dequantize(before[name], fmt))
    assert report["formats"] == {"F32": 12, "Q4_0": 2, "Q8_0": 1}
    assert report["tensors"]["model.layers.1.self_attn.v_proj.weight"]["format"] == "Q8_0"


def test_bpw_by_hand(tiny_model):
    # tiny: embedding 384x64 (tied, Q8_0 at 8.5 bits); per layer q 64x64, k 32x64, v 32x64, o 64x64,
    # gate/up 128x64, down 64x128 = 36864 weights at Q4_0 (4.5 bits), two layers.
    report = apply_recipe(tiny_model, {"default": "Q4_0", "embedding": "Q8_0"})
    assert report["n_weights"] == 384 * 64 + 2 * 36864
    assert report["bpw"] == (384 * 64 * 8.5 + 2 * 36864 * 4.5) / (384 * 64 + 2 * 36864) == 5.5


def test_tied_embedding_takes_the_more_precise_request(tiny_model):
    assert tiny_model.lm_head.weight is tiny_model.model.embed_tokens.weight
    report = apply_recipe(tiny_model, {"default": "Q4_0", "embedding": "Q4_0", "output": "Q8_0"})
    entry = report["tensors"]["model.embed_tokens.weight"]
    assert entry["tied"] and entry["requested_embedding"] == "Q4_0" and entry["requested_output"] == "Q8_0"
    assert entry["format"] == "Q8_0"
    assert "lm_head.weight" not in report["tensors"]  # one matrix, counted once
    assert tiny_model.lm_head.weight is tiny_model.model.embed_tokens.weight


def test_fallback_recorded_on_rows_not_divisible_by_32():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    before = _snapshot(model)
    report = apply_recipe(model, {"default": "Q4_0"})
    # Every matrix with 48 columns falls back to F16; down_proj (96 columns) stays Q4_0.
    assert report["tensors"]["model.layers.0.mlp.down_proj.weight"]["format"] == "Q4_0"
    assert set(report["fallbacks"]) == set(report["tensors"]) - {"model.layers.0.mlp.down_proj.weight"}
    assert all(chain == ["Q4_0", "F16"] for chain in report["fallbacks"].values())
    assert report["tensors"]["lm_head.weight"]["class"] == "output"
    w = model.model.layers[0].self_attn.q_proj.weight
    assert w.shape[1] == 48 and torch.equal(w, before["model.layers.0.self_attn.q_proj.weight"].half().float())
    n48 = report["n_weights"] - 48 * 96
    assert report["bpw"] == pytest.approx((n48 * 16 + 48 * 96 * 4.5) / report["n_weights"])


def test_layer_index_out_of_range(tiny_model):
    with pytest.raises(SilentzoneError, match="index 5 is out of range for a model with 2 layers"):
        apply_recipe(tiny_model, {"layers": {5: "Q8_0"}})


def _digest(model):
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.numpy().tobytes())
    return h.hexdigest()


def test_load_quant_is_deterministic(tiny_params):
    name = tiny_params.quant_names()[0]
    first, _, report1 = load_quant(tiny_params, name)
    second, _, report2 = load_quant(tiny_params, name)
    assert _digest(first) == _digest(second) and report1 == report2
    reference, _, ref_report = load_quant(tiny_params, "reference")
    assert _digest(reference) != _digest(first)
    assert ref_report["bpw"] == 32.0 and ref_report["formats"] == {"F32": 15} and "unquantized" in ref_report["note"]


def test_load_quant_unknown_name_lists_cohort(tiny_params):
    with pytest.raises(SilentzoneError) as info:
        load_quant(tiny_params, "q3_k_xl")
    message = str(info.value)
    assert message.startswith("params.yaml: quant 'q3_k_xl' is not in `cohort`")
    assert "reference" in message and all(n in message for n in tiny_params.cohort)
    with pytest.raises(SilentzoneError, match=r"quant 'q3_k_xl' is not in `cohort`"):
        check_name(tiny_params, "q3_k_xl")
    check_name(tiny_params, "reference")  # the reference and every cohort member are accepted
    for name in tiny_params.quant_names():
        check_name(tiny_params, name)


@pytest.mark.parametrize("profile", config.profile_names(REPO / "profiles"))
def test_every_profile_cohort_validates(profile):
    from silentzone.quant import members

    params = config.validate(config.build_profile(profile, REPO / "profiles"), "params.yaml")
    cohort = members.validate_cohort(params.cohort, params.source, params.corpora)
    assert list(cohort) == params.quant_names()
    if profile in ("default", "gemma", "qwen"):  # the floor: real llama.cpp mixes, with and without an imatrix
        made = [m for m in cohort.values() if m.kind == "llama-quantize"]
        assert (
            len(made) >= {"default": 10, "gemma": 5, "qwen": 16}[profile]
            and any(m.imatrix for m in made)
            and any(not m.imatrix for m in made)
        )
    minimum = {"default": 30, "quick": 8, "tiny": 4, "gemma": 20, "qwen": 16}[profile]
    assert len(cohort) >= minimum


# Row lengths (input features) of each model's weight classes, from their configs.
ROWS = {
    "tiny": {
        "embedding": 64,
        "attn_q": 64,
        "attn_k": 64,
        "attn_v": 64,
        "attn_o": 64,
        "ffn_gate": 64,
        "ffn_up": 64,
        "ffn_down": 128,
    },
    "default": {
        "embedding": 576,
        "attn_q": 576,
        "attn_k": 576,
        "attn_v": 576,
        "attn_o": 576,
        "ffn_gate": 576,
        "ffn_up": 576,
        "ffn_down": 1536,
    },
    # gemma-3-270m: hidden 640, intermediate 2048, 4 heads x head_dim 256 = 1024 into o_proj
    "gemma": {
        "embedding": 640,
        "attn_q": 640,
        "attn_k": 640,
        "attn_v": 640,
        "attn_o": 1024,
        "ffn_gate": 640,
        "ffn_up": 640,
        "ffn_down": 2048,
    },
}


@pytest.mark.parametrize("profile", ["tiny", "default", "gemma"])
def test_cohort_formats_fit_the_model_rows_without_fallback(profile):
    raw = config.build_profile(profile, REPO / "profiles")["cohort"]
    recipes_only = {name: value for name, value in raw.items() if not (isinstance(value, dict) and "llama-quantize" in value)}
    cohort = validate_cohort(recipes_only, f"{profile}.yaml")  # llama.cpp mixes fall back as llama.cpp decides (docs/quant.md)
    for name, recipe in cohort.items():
        requested = {recipe["default"], *recipe["classes"].values()}
        requested |= {f for layer in recipe["layers"].values() for f in layer.values()}
        for fmt in requested:
            for row in ROWS[profile].values():
                assert formats.resolve(fmt, row) == [fmt], (name, fmt, row)


@pytest.mark.model
def test_q4_1_requantization_is_lossless_on_the_q4_1_reference(smollm2_cache_dir):
    """The reference is a dequantized Q4_1 (+ Q8_0 embedding) GGUF, so the `q4_1` recipe gives back its
    weights bit for bit (docs/quant.md: what this does to rankings), while Q8_0 on a Q4_1 layer does not."""
    params = config.validate(config.build_profile("default", REPO / "profiles"), "params.yaml")
    model, _, report = load_quant(params, "reference", cache_dir=smollm2_cache_dir)
    before = _snapshot(model)
    report = apply_recipe(model, {"default": "Q4_1", "embedding": "Q8_0"})  # left out of the cohort for this reason
    assert report["bpw"] == pytest.approx(5.0 + 3.5 * 49152 * 576 / report["n_weights"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    apply_recipe(model, {"layers": {"0": {"ffn_down": "Q8_0"}}})
    assert not torch.equal(before["model.layers.0.mlp.down_proj.weight"], model.model.layers[0].mlp.down_proj.weight)
