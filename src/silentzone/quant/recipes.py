"""Mixed-precision recipes: a format per tensor class, with per-layer overrides.

A recipe (one entry of params `cohort`) is a mapping, or a bare format name meaning {default: NAME}:

    default: Q4_0            # every class not named below (omitted: F32, the reference weights)
    embedding: Q8_0          # any of TENSOR_CLASSES
    layers:                  # per-layer overrides; negative indices count from the last layer
      0: Q8_0                #   a format: every class of that layer
      -1: {ffn_down: Q8_0}   #   a mapping: some classes of that layer

Precedence, most specific first: layers[i][class] > layers[i] (a bare format) > recipe[class] > default.

Tied embeddings (SmolLM2, Gemma 3 and the tiny model share one matrix between `embed_tokens` and
`lm_head`): the shared matrix is quantized once, with the more precise (higher bits per weight) of the
`embedding` and `output` formats, so neither use gets less precision than its recipe asks for; the
report records both requests. Untied models quantize `lm_head` with `output`.

Bits per weight of a quant = storage bits over every 2-D weight matrix of the classes above (norms and
other 1-D tensors are excluded; a tied matrix counts once), with block scales counted as GGUF does.
"""

from __future__ import annotations

import difflib
import re

from ..errors import SilentzoneError
from ..schema import REFERENCE
from . import formats

TENSOR_CLASSES = ("embedding", "attn_q", "attn_k", "attn_v", "attn_o", "ffn_gate", "ffn_up", "ffn_down", "output")
LAYER_CLASSES = TENSOR_CLASSES[1:-1]
RECIPE_KEYS = ("default", *TENSOR_CLASSES, "layers")
# No dots: a quant name is a DVC params path segment (`cohort.<name>`) and a file name.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+\-]*$")

_LAYER_SUFFIXES = {
    "self_attn.q_proj.weight": "attn_q",
    "self_attn.k_proj.weight": "attn_k",
    "self_attn.v_proj.weight": "attn_v",
    "self_attn.o_proj.weight": "attn_o",
    "mlp.gate_proj.weight": "ffn_gate",
    "mlp.up_proj.weight": "ffn_up",
    "mlp.down_proj.weight": "ffn_down",
}
_LAYER_PARAM = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")


def tensor_class(param_name: str) -> str | None:
    """The class of an HF llama/gemma3 parameter name (any prefix, e.g. model.language_model.), else None."""
    if param_name.endswith("embed_tokens.weight"):
        return "embedding"
    if param_name == "lm_head.weight" or param_name.endswith(".lm_head.weight"):
        return "output"
    match = _LAYER_PARAM.search(param_name)
    return _LAYER_SUFFIXES.get(match.group(2)) if match else None


def layer_index(param_name: str) -> int | None:
    match = _LAYER_PARAM.search(param_name)
    return int(match.group(1)) if match else None


# ---- validation (cheap, before any model is loaded) ----


def validate_recipe(recipe, where: str) -> dict:
    """The recipe in normal form {default, classes: {class: fmt}, layers: {int: {class: fmt}}}."""
    if isinstance(recipe, str):
        recipe = {"default": recipe}
    if not isinstance(recipe, dict) or not recipe:
        raise SilentzoneError(f"{where}: a recipe is a format name or a mapping of tensor classes to formats, got {recipe!r}")
    unknown = [k for k in recipe if k not in RECIPE_KEYS]
    if unknown:
        raise SilentzoneError(
            f"{where}: unknown tensor class {unknown[0]!r}{_closest(unknown[0], RECIPE_KEYS)}; valid: {', '.join(RECIPE_KEYS)}"
        )
    default = formats.check_format(_as_str(recipe.get("default", "F32"), f"{where}.default"), f"{where}.default")
    classes = {c: formats.check_format(_as_str(recipe[c], f"{where}.{c}"), f"{where}.{c}") for c in TENSOR_CLASSES if c in recipe}
    layers = {}
    raw_layers = recipe.get("layers", {}) or {}
    if not isinstance(raw_layers, dict):
        raise SilentzoneError(f"{where}.layers: expected a mapping of layer index to a format or {{class: format}}")
    for key, value in raw_layers.items():
        index = _layer_key(key, f"{where}.layers")
        at = f"{where}.layers.{key}"
        if isinstance(value, str):
            layers[index] = {c: formats.check_format(value, at) for c in LAYER_CLASSES}
            continue
        if not isinstance(value, dict) or not value:
            raise SilentzoneError(f"{at}: expected a format or a mapping of layer classes to formats, got {value!r}")
        bad = [c for c in value if c not in LAYER_CLASSES]
        if bad:
            raise SilentzoneError(
                f"{at}: unknown layer tensor class {bad[0]!r}{_closest(bad[0], LAYER_CLASSES)}; valid: {', '.join(LAYER_CLASSES)}"
            )
        layers.setdefault(index, {})
        layers[index].update({c: formats.check_format(_as_str(f, f"{at}.{c}"), f"{at}.{c}") for c, f in value.items()})
    return {"default": default, "classes": classes, "layers": layers}


def _closest(word, candidates) -> str:
    near = difflib.get_close_matches(str(word), candidates, n=1, cutoff=0.6)
    return f" (did you mean `{near[0]}`?)" if near else ""


def _as_str(value, where: str) -> str:
    if not isinstance(value, str):
        raise SilentzoneError(
            f"{where}: expected a format name such as Q8_0, got {value!r}; valid formats: {', '.join(formats.FORMATS)}"
        )
    return value


def _layer_key(key, where: str) -> int:
    try:
        return int(key)
    except (TypeError, ValueError):
        raise SilentzoneError(f"{where}: layer key {key!r} is not an integer (negative counts from the last layer)") from None


def check_name(name, source: str) -> None:
    """A cohort name is a DVC params path segment and a file name; `reference` is taken."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise SilentzoneError(
            f"{source}: cohort name {name!r} must be letters, digits, _ + - only (no dots: it is a DVC params key and a file name), e.g. q8_0+ffn_down-q4_0"
        )
    if name == REFERENCE:
        raise SilentzoneError(f"{source}: cohort name {REFERENCE!r} is reserved for the unquantized reference; rename it")


def validate_cohort(cohort: dict, source: str) -> dict:
    """{quant name: normal-form recipe} for a cohort of recipes only (silentzone.quant.members
    validates every kind of member); raises one SilentzoneError on the first problem."""
    out = {}
    for name, recipe in cohort.items():
        check_name(name, source)
        out[name] = validate_recipe(recipe, f"{source}: cohort.{name}")
    return out


# ---- application ----


def format_for(recipe: dict, cls: str, layer: int | None, n_layers: int) -> str:
    """The requested format of one tensor under a normal-form recipe."""
    if layer is not None:
        for index in (layer, layer - n_layers):
            if cls in recipe["layers"].get(index, {}):
                return recipe["layers"][index][cls]
    return recipe["classes"].get(cls, recipe["default"])


def _weights(model) -> list[tuple[str, object, str, int | None]]:
    """(name, parameter, class, layer) of every 2-D weight a recipe governs; a tied matrix appears once."""
    out = []
    for name, param in model.named_parameters():
        cls = tensor_class(name)
        if cls is not None and param.ndim == 2:
            out.append((name, param, cls, layer_index(name)))
    return out


def _is_tied(model) -> bool:
    inp, outp = model.get_input_embeddings(), model.get_output_embeddings()
    return outp is not None and inp is not None and outp.weight is inp.weight


def apply_recipe(model, recipe, where: str = "recipe", store: dict | None = None) -> dict:
    """Quantize `model`'s weights in place (round trip through each tensor's format); return the report.

    `recipe` is a raw recipe (as in params) or the normal form from validate_recipe; `where` names it in errors.
    `store` (optional, {parameter name: (format, encoded array)}, see formats.encode) holds tensors
    already quantized: an entry of the right format and size is decoded instead of quantized again;
    every other quantized tensor is encoded and put in it (silentzone.quant.load caches it on disk).
    """
    import torch

    if not (isinstance(recipe, dict) and set(recipe) == {"default", "classes", "layers"}):
        recipe = validate_recipe(recipe, where)
    n_layers = int(model.config.get_text_config().num_hidden_layers)
    bad = [i for i in recipe["layers"] if not -n_layers <= i < n_layers]
    if bad:
        raise SilentzoneError(
            f"{where}.layers: index {bad[0]} is out of range for a model with {n_layers} layers ({-n_layers}..{n_layers - 1})"
        )
    tied = _is_tied(model)
    tensors, total_bits, total_weights = {}, 0.0, 0
    for name, param, cls, layer in _weights(model):
        requested = format_for(recipe, cls, layer, n_layers)
        entry = {"class": cls, "layer": layer, "shape": list(param.shape), "requested": requested}
        if cls == "embedding" and tied:
            # One matrix serves both uses: keep the more precise request (a tie keeps `embedding`'s).
            output_fmt = format_for(recipe, "output", None, n_layers)
            entry.update(tied=True, requested_embedding=requested, requested_output=output_fmt)
            requested = entry["requested"] = max((requested, output_fmt), key=formats.bits_per_weight)
        chain = formats.resolve(requested, param.shape[-1])
        applied = chain[-1]
        entry.update(format=applied, fallback=chain if len(chain) > 1 else None, bpw=formats.bits_per_weight(applied))
        if applied != "F32":
            values = None
            if store is not None and store.get(name, (None,))[0] == applied:
                values = formats.decode(store[name][1], applied)
                if values.size != param.numel():  # not this tensor's: quantized again below
                    values = None
            if values is None:
                encoded = formats.encode(param.data.detach().cpu().numpy(), applied)
                values = formats.decode(encoded, applied)
                if store is not None:
                    store[name] = (applied, encoded)
            # New storage rather than copy_: the reference's weights may be a memory map of the fp32
            # cache (transformers loads safetensors lazily), and writing into it faults every page in.
            param.data = torch.from_numpy(values.reshape(param.shape)).to(param.device)
        tensors[name] = entry
        total_bits += entry["bpw"] * param.numel()
        total_weights += param.numel()
    counts: dict[str, int] = {}
    for entry in tensors.values():
        counts[entry["format"]] = counts.get(entry["format"], 0) + 1
    return {
        "bpw": total_bits / total_weights if total_weights else float("nan"),
        "n_weights": total_weights,
        "tied_embeddings": tied,
        "formats": dict(sorted(counts.items())),
        "fallbacks": {name: e["fallback"] for name, e in tensors.items() if e["fallback"]},
        "tensors": tensors,
    }
