"""The GGUF file of every model the llama.cpp engine runs: the reference, recipe members, the rest as today.

  reference            the reference's weights as an F32 (or BF16) GGUF: every tensor of the source
                       GGUF (model.source) dequantized by gguf-py, the same values the torch engine
                       runs (model/load.py), metadata copied, general.file_type set
  recipe member        the F32 reference's tensors, each 2-D weight written in its recipe format
                       (recipes.format_for on GGUF tensor names, the same fallbacks and tied-matrix rule
                       as quant/recipes.apply_recipe, block bytes from gguf-py = ggml's), the rest F32
  llama-quantize       the file quant/load.llamacpp_file makes (as for the torch engine)
  gguf:<file>          the user's file

Files are written once under data/models/<model>/llamacpp/ (atomically), each beside a JSON record
of what made it (the source GGUF's sha256, the recipe, gguf-py's version); a record that no longer
matches means the file is rebuilt. Tensor rows keep GGUF's layout (llama's Q/K rows are permuted by
the converter, see quant/gguf_member.py); every format quantizes along rows, so a recipe gives the
same quantized values as the torch engine's.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from ... import io
from ...errors import SilentzoneError
from ...quant import formats, recipes
from ...quant import llamacpp as tools
from ...quant.gguf_member import field, open_gguf, tensor_types
from ...schema import REFERENCE

FILE_TYPE = {"F32": 0, "BF16": 32}  # llama_ftype of an all-F32 / mostly-BF16 file
CLASS_OF = {
    "attn_q": "attn_q",
    "attn_k": "attn_k",
    "attn_v": "attn_v",
    "attn_output": "attn_o",
    "ffn_gate": "ffn_gate",
    "ffn_up": "ffn_up",
    "ffn_down": "ffn_down",
}
_BLOCK = re.compile(r"^blk\.(\d+)\.(\w+)\.weight$")


def gguf_class(name: str) -> tuple[str | None, int | None]:
    """(recipe tensor class, layer) of a GGUF tensor name; (None, None) for what no recipe governs."""
    if name == "token_embd.weight":
        return "embedding", None
    if name == "output.weight":
        return "output", None
    match = _BLOCK.match(name)
    if match and match.group(2) in CLASS_OF:
        return CLASS_OF[match.group(2)], int(match.group(1))
    return None, None


def _gguf_version() -> str:
    from importlib import metadata

    return metadata.version("gguf")


def _record_ok(path: Path, record: dict) -> bool:
    meta = path.with_name(path.name + ".json")
    try:
        return path.exists() and json.loads(meta.read_text(encoding="utf-8")) == record
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False


def _copy_metadata(reader, writer, file_type: int) -> None:
    import gguf

    for f in reader.fields.values():
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF.") or f.name == gguf.Keys.General.FILE_TYPE:
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(f.name, f.contents(), vtype, sub_type=sub)
    writer.add_file_type(file_type)


def write_gguf(source: Path, out: Path, tensor_format) -> None:
    """A GGUF of `source`'s tensors, each written in `tensor_format(name, shape) -> format name`
    (F32 keeps the dequantized values), metadata copied; one tensor in memory at a time."""
    import gguf
    from gguf.quants import dequantize

    reader = open_gguf(source)
    plan = []
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(list(t.shape)))  # (rows, row length), as numpy holds it
        plan.append((t, shape, tensor_format(t.name, shape)))
    matrix_formats = {fmt for _, shape, fmt in plan if len(shape) == 2}
    file_type = FILE_TYPE["BF16"] if matrix_formats == {"BF16"} else FILE_TYPE["F32"] if matrix_formats <= {"F32"} else 7
    with io.atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(tmp, field(reader, "general.architecture"))
        _copy_metadata(reader, writer, file_type)
        for t, shape, fmt in plan:
            stored, dtype = _stored_shape(shape, fmt)
            raw = None if fmt in ("F32", "F16") else gguf.GGMLQuantizationType[fmt]
            writer.add_tensor_info(t.name, stored, dtype, int(np.prod(stored)) * np.dtype(dtype).itemsize, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t, shape, fmt in plan:
            values = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
            writer.write_tensor_data(values if fmt == "F32" else formats.encode(values, fmt))
        writer.close()
        open_gguf(tmp)  # every tensor's bytes are there, before the file takes its name
        tools.default_mode(tmp)


def _stored_shape(shape: tuple, fmt: str) -> tuple[tuple, type]:
    """The numpy shape and dtype formats.encode gives a tensor of `shape` in `fmt`."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    if fmt == "F32":
        return shape, np.float32
    if fmt == "F16":
        return shape, np.float16
    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[fmt]]
    return (*shape[:-1], shape[-1] // block * type_size), np.uint8


def sha256_of(path: Path, cache: Path) -> str:
    """sha256 of a (large) file, remembered in the cache folder by path, size and mtime (model/load.py's
    memo): a stage checks its files' records without hashing 540 MB each time."""
    from ...model.load import _file_sha256

    return _file_sha256(Path(path), Path(cache) / "sha256-memo.json")


def reference_file(params, cache: Path) -> Path:
    """The reference as an F32/BF16 GGUF (built once per source GGUF and type)."""
    from ...model.load import resolve_source

    kind, source = resolve_source(params.model.source)
    if kind != "gguf":
        raise SilentzoneError(
            f"{params.source}: engine llamacpp runs GGUF files, but model.source is {params.model.source!r}; "
            "give a package:… or gguf:… reference, or use engine torch"
        )
    rtype = params.engine.llamacpp.reference_type
    out = cache / f"reference-{rtype}.gguf"
    record = {"source_sha256": sha256_of(source, cache), "type": rtype, "gguf": _gguf_version()}
    if not _record_ok(out, record):
        start = time.perf_counter()
        write_gguf(source, out, lambda name, shape: rtype if len(shape) == 2 and rtype != "F32" else "F32")
        io.write_json(out.with_name(out.name + ".json"), record)
        print(f"reference {rtype} GGUF written in {time.perf_counter() - start:.1f} s ({out})")
    return out


def recipe_formats(recipe: dict, reader, where: str) -> dict[str, str]:
    """{GGUF tensor name: applied format} of a normal-form recipe on a GGUF's tensors."""
    n_layers = int(field(reader, f"{field(reader, 'general.architecture')}.block_count"))
    bad = [i for i in recipe["layers"] if not -n_layers <= i < n_layers]
    if bad:
        raise SilentzoneError(f"{where}.layers: index {bad[0]} is out of range for a model with {n_layers} layers")
    names = {t.name for t in reader.tensors}
    tied = "output.weight" not in names
    out = {}
    for t in reader.tensors:
        cls, layer = gguf_class(t.name)
        if cls is None or len(t.shape) != 2:
            continue
        requested = recipes.format_for(recipe, cls, layer, n_layers)
        if cls == "embedding" and tied:  # one matrix for both uses: the more precise request (as apply_recipe)
            requested = max((requested, recipes.format_for(recipe, "output", None, n_layers)), key=formats.bits_per_weight)
        out[t.name] = formats.resolve(requested, int(t.shape[0]))[-1]
    return out


def recipe_file(params, name: str, recipe: dict, reference: Path, cache: Path) -> Path:
    """Recipe member `name` as a GGUF of the reference's tensors in their recipe formats (built once)."""
    import hashlib

    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    out = cache / f"recipe-{key}.gguf"
    record = {"recipe": recipe, "reference_sha256": sha256_of(reference, cache), "gguf": _gguf_version()}
    if not _record_ok(out, record):
        start = time.perf_counter()
        chosen = recipe_formats(recipe, open_gguf(reference), f"{params.source}: cohort.{name}")
        write_gguf(reference, out, lambda tensor, shape: chosen.get(tensor, "F32"))
        io.write_json(out.with_name(out.name + ".json"), record)
        print(f"quant {name}: GGUF written in {time.perf_counter() - start:.1f} s ({out})", file=sys.stdout)
    return out


def describe(path: Path) -> dict:
    """tensor_types of a GGUF and its sha256, remembered beside it (<file>.types.json) by size and
    mtime: gguf-py parses a 49k-token vocabulary in seconds, which a fidelity stage must not spend."""
    path = Path(path)
    stat = path.stat()
    memo = path.with_name(path.name + ".types.json")
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        found = json.loads(memo.read_text(encoding="utf-8"))
        if found.get("key") == key:
            return found["types"]
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    types = {k: v for k, v in tensor_types(path).items() if k != "tensors"}
    types["sha256"] = io.sha256_file(path)
    try:
        io.write_json(memo, {"key": key, "types": types})
    except OSError:  # a read-only folder (a user's gguf: member): parse again next time
        pass
    return types


def member_file(params, name: str, cache_dir: Path | None = None) -> tuple[Path, dict]:
    """(GGUF path, report) of the reference or a cohort member, built when needed; the report is
    what quant/load reports for the torch engine (bpw, matrix types, source)."""
    from ...layout import DEFAULT as LAYOUT
    from ...quant.load import check_name, llamacpp_file
    from ...quant.members import validate_cohort

    check_name(params, name)
    cache = Path(cache_dir or LAYOUT.models) / params.model.name / "llamacpp"
    reference = reference_file(params, cache)
    if name == REFERENCE:
        path, label = reference, REFERENCE
    else:
        member = validate_cohort(params.cohort, params.source, params.corpora)[name]
        label = member.label
        if member.kind == "recipe":
            path = recipe_file(params, name, member.recipe, reference, cache)
        elif member.kind == "gguf":
            path = Path(member.path)
            if not path.is_file():
                raise SilentzoneError(f"{params.source}: gguf member file {path} not found; fix its path in `cohort`")
        else:
            path = llamacpp_file(params, member, cache, LAYOUT.prepared)
    types = describe(path)
    report = {
        "quant": name,
        "source": label,
        "file": str(path),
        "file_sha256": types["sha256"],
        "bpw": 32.0 if name == REFERENCE and params.engine.llamacpp.reference_type == "F32" else types["bpw"],
        "matrix_types": types["matrix_types"],
        "types": types["types"],
    }
    return path, report
