"""A cohort member as a Hugging Face model directory, for an inference server to load.

vLLM loads a model directory; a recipe member exists only as the reference with some weights
replaced (silentzone.quant). `export` writes the member's weights — each one the exact fp32 value
its format decodes to, as in-process — with the reference's config and tokenizer, so the server runs
the same numbers through its own kernels (serve it with `--dtype float32`). Written atomically; a
marker records the member, its recipe and the reference it came from.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import io
from ..errors import SilentzoneError

MARKER = "silentzone_member.json"


def export(params, name: str, out: Path) -> str:
    from ..quant.load import load_quant

    out = Path(out)
    if out.exists() and not (out / MARKER).exists():
        raise SilentzoneError(f"{out}: exists and is not an exported member (no {MARKER}); choose an empty or new folder")
    model, tokenizer, report = load_quant(params, name)
    model.hf_quantizer = None
    with io.atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta = {
            "member": name,
            "recipe": params.cohort.get(name),
            "model": params.model.name,
            "bpw": report["bpw"],
            "dtype": "float32",
        }
        (tmp / MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    return f"{out}: {name} ({report['bpw']:.3f} bpw) as a float32 Hugging Face directory; serve it with --dtype float32"
