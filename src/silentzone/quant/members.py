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

This module only parses and validates (config uses it); quant/load.py builds each kind.
"""

from __future__ import annotations

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
            raise SilentzoneError(
                f"{where}: unknown key {unknown[0]!r} in a llama-quantize member; it takes `{LLAMA_QUANTIZE}: TYPE` and optionally `imatrix: CORPUS`"
            )
        qtype, imatrix = value[LLAMA_QUANTIZE], value.get("imatrix")
        if not isinstance(qtype, str) or not TYPE_NAME.match(qtype):
            raise SilentzoneError(
                f"{where}: `{LLAMA_QUANTIZE}` must be a llama-quantize type name such as Q4_K_M or IQ4_XS, got {qtype!r}"
            )
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
            raise SilentzoneError(
                f"{source}: cohort.{name}.imatrix names corpus {member.imatrix!r}, which `corpora` does not define "
                f"(it has {', '.join(corpora)})"
            )
        out[name] = member
    return out
