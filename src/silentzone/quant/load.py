"""Build a quant: the reference model with a cohort member's weights.

Recipes are applied in memory. llama.cpp-made files and importance matrices are cached under
data/models/<model>/llamacpp/, each beside a JSON record of what made it (the reference GGUF's and
the imatrix's sha256, the type); a record that no longer matches means the file is rebuilt.
llama.cpp's tools come from `make llamacpp` (the pinned llama-cpp-python sdist's llama.cpp) or
PATH: see llamacpp.py.
"""


from __future__ import annotations

import json
from pathlib import Path

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


def _record_matches(path: Path, record: dict) -> bool:
    meta = path.with_name(path.name + ".json")
    if not path.exists() or not meta.exists():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")) == record
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def _write_record(path: Path, record: dict) -> None:
    from .. import io

    io.write_json(path.with_name(path.name + ".json"), record)


def imatrix_file(params, reference_gguf: Path, corpus: str, cache: Path, prepared_dir: Path) -> Path:
    """The importance matrix of the reference over a prepared corpus (built once, then cached)."""
    from .. import io
    from ..data import corpora
    from . import llamacpp

    _, entry = corpora.load_text(corpus, prepared_dir)  # checked against corpora.json
    out = cache / f"imatrix-{corpus}.gguf"
    record = {"reference_sha256": io.sha256_file(reference_gguf), "corpus_sha256": entry["sha256"], "ctx": params.fidelity.ctx}
    if not _record_matches(out, record):
        llamacpp.compute_imatrix(reference_gguf, Path(prepared_dir) / entry["path"], out, ctx=params.fidelity.ctx, chunks=1 << 20,
                                 threads=params.threads)
        _write_record(out, record)
    return out


def llamacpp_file(params, member: Member, cache: Path, prepared_dir: Path) -> Path:
    """The reference GGUF quantized by llama-quantize as `member` asks (built once, then cached)."""
    from .. import io
    from ..model.load import resolve_source
    from . import llamacpp

    kind, reference_gguf = resolve_source(params.model.source)
    if kind != "gguf":
        raise SilentzoneError(f"{params.source}: llama-quantize members need a GGUF reference (model.source package:… or gguf:…), "
                              f"but model.source is {params.model.source!r}; use recipes or gguf: members instead")
    imatrix = imatrix_file(params, reference_gguf, member.imatrix, cache, prepared_dir) if member.imatrix else None
    out = cache / (member.qtype + (f"+imatrix-{member.imatrix}" if member.imatrix else "") + ".gguf")
    record = {"reference_sha256": io.sha256_file(reference_gguf), "qtype": member.qtype,
              "imatrix_sha256": io.sha256_file(imatrix) if imatrix else None}
    if not _record_matches(out, record):
        llamacpp.quantize(reference_gguf, out, member.qtype, imatrix=imatrix, threads=params.threads)
        _write_record(out, record)
    return out
