"""Build a quant: the reference model with a cohort member's weights.

A recipe is built once per reference: its quantized tensors (the GGUF block bytes, formats.encode)
are cached under data/models/<model>/quants/<key>/, key = sha256 of the recipe's normal form, the
reference's sha256 and the gguf-py version, written atomically with a manifest of their sha256; a
later load verifies them and decodes instead of quantizing again (a damaged or mismatched artifact
is rebuilt, with one line). Decoding is ggml's arithmetic either way, so the weights are the same
bits. llama.cpp-made files and importance matrices are cached under
data/models/<model>/llamacpp/, each beside a JSON record of what made it (the reference GGUF's and
the imatrix's sha256, the type); a record that no longer matches means the file is rebuilt.
llama.cpp's tools come from `make llamacpp` (the pinned llama-cpp-python sdist's llama.cpp) or
PATH: see llamacpp.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import SilentzoneError
from ..schema import REFERENCE
from .members import Member, validate_cohort
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
        report = _recipe_member(params, name, members[name].recipe, model, cache_dir)
    else:
        model, report = _load_file_member(params, members[name], model, tokenizer, cache_dir)
    report["quant"] = name
    report["source"] = "reference" if name == REFERENCE else members[name].label
    report.setdefault("matrix_types", report.get("formats", {}))
    return model, tokenizer, report


QUANT_CACHE_VERSION = 1


def recipe_key(recipe: dict, reference_sha256: str) -> str:
    """The cache key of a normal-form recipe applied to a reference."""
    import hashlib

    import gguf

    state = {
        "recipe": recipe,
        "reference_sha256": reference_sha256,
        "version": QUANT_CACHE_VERSION,
        "gguf": getattr(gguf, "__version__", None) or _dist_version("gguf"),
    }
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _recipe_member(params, name: str, recipe: dict, model, cache_dir) -> dict:
    """apply_recipe with the quantized tensors cached on disk (built once per recipe and reference)."""
    import sys
    import time

    from ..layout import DEFAULT as LAYOUT
    from ..model.load import reference_sha256

    start = time.perf_counter()
    key = recipe_key(recipe, reference_sha256(params, model, cache_dir))
    folder = Path(cache_dir or LAYOUT.models) / params.model.name / "quants" / key
    store = read_quant_cache(folder, key)
    cached = dict(store)
    report = apply_recipe(model, recipe, f"{params.source}: cohort.{name}", store=store)
    rebuilt = store.keys() != cached.keys() or any(store[k][0] != cached[k][0] or store[k][1] is not cached[k][1] for k in store)
    if not store:  # nothing quantized (an all-F32 recipe): nothing to cache
        return report
    what = "built and cached" if rebuilt else "read from its cache"
    if rebuilt:
        try:
            write_quant_cache(folder, key, recipe, store)
        except OSError as exc:  # a read-only or full disk, or another process caching the same quant: keep going
            print(f"{folder}: quant not cached ({exc})", file=sys.stderr)
            what = "built (not cached)"
    print(f"quant {name}: {what} in {time.perf_counter() - start:.2f} s ({folder})")  # progress, not a warning: stdout
    return report


def read_quant_cache(folder: Path, key: str) -> dict:
    """{parameter name: (format, encoded array)} from a cached recipe, or {} when there is none. A
    damaged artifact (sha256, manifest or array mismatch) is reported in one line and rebuilt."""
    import sys

    from .. import io

    manifest = folder / "manifest.json"
    if not manifest.exists():
        return {}
    try:
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        if meta["key"] != key or io.sha256_file(folder / "tensors.safetensors") != meta["files"]["tensors.safetensors"]:
            raise ValueError("sha256 differs from its manifest")
        from safetensors.numpy import load_file

        arrays = load_file(folder / "tensors.safetensors")
        store = {name: (meta["tensors"][name]["format"], arrays[name]) for name in meta["tensors"]}
        if any(list(arrays[n].shape) != meta["tensors"][n]["shape"] for n in meta["tensors"]) or set(arrays) != set(
            meta["tensors"]
        ):
            raise ValueError("arrays differ from its manifest")
        return store
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(f"{folder}: damaged quant cache ({exc}), rebuilt", file=sys.stderr)
        return {}


def write_quant_cache(folder: Path, key: str, recipe: dict, store: dict) -> None:
    """Write a recipe's encoded tensors and their manifest atomically (the folder appears complete or not at all)."""
    from safetensors.numpy import save_file

    from .. import io

    with io.atomic_dir(folder) as tmp:
        save_file({name: np.ascontiguousarray(array) for name, (_, array) in sorted(store.items())}, tmp / "tensors.safetensors")
        meta = {
            "key": key,
            "recipe": recipe,
            "version": QUANT_CACHE_VERSION,
            "tensors": {name: {"format": fmt, "shape": list(array.shape)} for name, (fmt, array) in sorted(store.items())},
            "files": {"tensors.safetensors": io.sha256_file(tmp / "tensors.safetensors")},
        }
        io.write_json(tmp / "manifest.json", meta)


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
        llamacpp.compute_imatrix(
            reference_gguf,
            Path(prepared_dir) / entry["path"],
            out,
            ctx=params.fidelity.ctx,
            chunks=1 << 20,
            threads=params.threads,
        )
        _write_record(out, record)
    return out


def llamacpp_file(params, member: Member, cache: Path, prepared_dir: Path) -> Path:
    """The reference GGUF quantized by llama-quantize as `member` asks (built once, then cached)."""
    from .. import io
    from ..model.load import resolve_source
    from . import llamacpp

    kind, reference_gguf = resolve_source(params.model.source)
    if kind != "gguf":
        raise SilentzoneError(
            f"{params.source}: llama-quantize members need a GGUF reference (model.source package:… or gguf:…), "
            f"but model.source is {params.model.source!r}; use recipes or gguf: members instead"
        )
    imatrix = imatrix_file(params, reference_gguf, member.imatrix, cache, prepared_dir) if member.imatrix else None
    out = cache / (member.qtype + (f"+imatrix-{member.imatrix}" if member.imatrix else "") + ".gguf")
    record = {
        "reference_sha256": io.sha256_file(reference_gguf),
        "qtype": member.qtype,
        "imatrix_sha256": io.sha256_file(imatrix) if imatrix else None,
    }
    if not _record_matches(out, record):
        llamacpp.quantize(reference_gguf, out, member.qtype, imatrix=imatrix, threads=params.threads)
        _write_record(out, record)
    return out
