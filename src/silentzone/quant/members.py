"""What a cohort member can be, and how each kind is built.

An entry of params `cohort` is one of:

    q4_0: {default: Q4_0, embedding: Q8_0}          a recipe (recipes.py): legacy block formats applied
                                                     in memory through gguf-py, no file stored
    mine: gguf:/path/to/SmolLM2-Q4_K_M.gguf          any GGUF file of the reference model (K and IQ types
                                                     included; gguf-py dequantizes every ggml type)
    q4_k_m: {llama-quantize: Q4_K_M}                 llama.cpp's own quantizer run on the reference GGUF
    q4_k_m+imat: {llama-quantize: Q4_K_M, imatrix: calibration}
                                                     ... with an importance matrix from `llama-imatrix`
                                                     over the named corpus (params `corpora`)

llama.cpp-made files and importance matrices are cached under data/models/<model>/llamacpp/,
each beside a JSON record of what made it (the reference GGUF's and the imatrix's sha256, the
type); a record that no longer matches means the file is rebuilt. llama.cpp's tools come from
`make llamacpp` (the pinned llama-cpp-python sdist's vendored llama.cpp) or PATH: see llamacpp.py.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import SilentzoneError
from . import recipes

LLAMA_QUANTIZE = "llama-quantize"
TYPE_NAME = re.compile(r"^[A-Z0-9_]+$")


@dataclass(frozen=True)
class Member:
    kind: str  # recipe | gguf | llama-quantize
    recipe: dict | None = None  # normal form (recipes.validate_recipe)
    path: str | None = None  # gguf
    qtype: str | None = None  # llama-quantize type name
    imatrix: str | None = None  # corpus name

    @property
    def label(self) -> str:
        """Where the member comes from, for the cohort table."""
        if self.kind == "gguf":
            return f"gguf:{Path(self.path).name}"
        if self.kind == LLAMA_QUANTIZE:
            return f"llama-quantize:{self.qtype}" + (f"+imatrix:{self.imatrix}" if self.imatrix else "")
        return "recipe"


def parse(value, where: str) -> Member:
    """One cohort entry as a Member; one SilentzoneError line naming `where` otherwise."""
    if isinstance(value, str) and value.startswith("gguf:"):
        path = value.removeprefix("gguf:")
        if not path:
            raise SilentzoneError(f"{where}: `gguf:` needs a file path, e.g. gguf:models/my-Q4_K_M.gguf")
        return Member("gguf", path=path)
    if isinstance(value, dict) and LLAMA_QUANTIZE in value:
        unknown = sorted(set(value) - {LLAMA_QUANTIZE, "imatrix"})
        if unknown:
            raise SilentzoneError(f"{where}: unknown key {unknown[0]!r} in a llama-quantize member; it takes `{LLAMA_QUANTIZE}: TYPE` and optionally `imatrix: CORPUS`")
        qtype, imatrix = value[LLAMA_QUANTIZE], value.get("imatrix")
        if not isinstance(qtype, str) or not TYPE_NAME.match(qtype):
            raise SilentzoneError(f"{where}: `{LLAMA_QUANTIZE}` must be a llama-quantize type name such as Q4_K_M or IQ4_XS, got {qtype!r}")
        if imatrix is not None and not isinstance(imatrix, str):
            raise SilentzoneError(f"{where}: `imatrix` names a corpus of params `corpora` (e.g. calibration), got {imatrix!r}")
        return Member(LLAMA_QUANTIZE, qtype=qtype, imatrix=imatrix)
    return Member("recipe", recipe=recipes.validate_recipe(value, where))


def validate_cohort(cohort: dict, source: str, corpora: dict | None = None) -> dict[str, Member]:
    """{name: Member} for params `cohort`; the first problem is one SilentzoneError line."""
    out = {}
    for name, value in cohort.items():
        recipes.check_name(name, source)
        member = parse(value, f"{source}: cohort.{name}")
        if member.imatrix is not None and corpora is not None and member.imatrix not in corpora:
            raise SilentzoneError(f"{source}: cohort.{name}.imatrix names corpus {member.imatrix!r}, which `corpora` does not define "
                                  f"(it has {', '.join(corpora)})")
        out[name] = member
    return out


# ------------------------------------------------------------------------------- building


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
