"""Build a quant: the reference model with a cohort member's weights (a recipe applied in memory)."""


from __future__ import annotations

from ..errors import SilentzoneError
from ..schema import REFERENCE
from .recipes import apply_recipe, validate_cohort


def check_name(params, name: str) -> None:
    """One line when `name` is neither the reference nor a cohort member (before any model loads)."""
    cohort = params.cohort
    if name != REFERENCE and name not in cohort:
        valid = ", ".join([REFERENCE, *cohort]) if len(cohort) < 40 else f"{REFERENCE} or one of the {len(cohort)} cohort names"
        raise SilentzoneError(f"{params.source}: quant {name!r} is not in `cohort`; choose {valid}")


def load_quant(params, name: str, cache_dir=None):
    """(model, tokenizer, report) of quant `name`, or of the unquantized reference for "reference".

    The cohort is validated before the model is loaded. The reference's report has bpw 32.0: its
    weights are the fp32 tensors of model.load_reference (themselves a dequantized GGUF, see model/load.py).
    """
    from ..model import load_reference

    check_name(params, name)
    cohort = validate_cohort(params.cohort, params.source)
    model, tokenizer = load_reference(params, cache_dir=cache_dir)
    recipe = {"default": "F32", "classes": {}, "layers": {}} if name == REFERENCE else cohort[name]
    report = apply_recipe(model, recipe, f"{params.source}: cohort.{name}")
    report["quant"] = name
    if name == REFERENCE:
        report["note"] = "unquantized reference: every weight kept at the reference's fp32 values"
    return model, tokenizer, report
