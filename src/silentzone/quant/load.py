"""Build a quant: the reference model with a cohort member's weights (a recipe applied in memory)."""


from __future__ import annotations

from ..errors import SilentzoneError
from ..schema import REFERENCE
from .members import validate_cohort
from .recipes import apply_recipe


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
    members = validate_cohort(params.cohort, params.source, params.corpora)
    model, tokenizer = load_reference(params, cache_dir=cache_dir)
    if name == REFERENCE:
        report = apply_recipe(model, {"default": "F32", "classes": {}, "layers": {}}, f"{params.source}: reference")
        report["note"] = "unquantized reference: every weight kept at the reference's fp32 values"
    elif members[name].kind == "recipe":
        report = apply_recipe(model, members[name].recipe, f"{params.source}: cohort.{name}")
    else:
        model, report = _load_file_member(params, members[name], model, tokenizer, cache_dir)
    report["quant"] = name
    report["source"] = "reference" if name == REFERENCE else members[name].label
    report.setdefault("matrix_types", report.get("formats", {}))
    return model, tokenizer, report


def _load_file_member(params, member, model, tokenizer, cache_dir):
    """A GGUF member (given, or made by llama-quantize) loaded into a copy of the reference."""
    from pathlib import Path

    from ..layout import DEFAULT as LAYOUT
    from . import gguf_member
    from .members import llamacpp_file

    if member.kind == "gguf":
        path = Path(member.path)
        if not path.is_file():
            raise SilentzoneError(f"{params.source}: gguf member file {path} not found; fix its path in `cohort`")
    else:
        cache = Path(cache_dir or LAYOUT.models) / params.model.name / "llamacpp"
        path = llamacpp_file(params, member, cache, LAYOUT.prepared)
    member_model, report = gguf_member.load_member(model, tokenizer, path)
    report.pop("params", None)  # HF name -> GGUF name: bulky, and the same for every member of a model
    return member_model, report
