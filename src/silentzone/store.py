"""The reference store: what the fidelity stage needs from the reference, checksummed and atomic.

Full reference log-probs are too big to keep (255 scored positions x 49,152 vocabulary x 4 bytes =
50 MB per 512-token window for SmolLM2, 268 MB for Gemma's 262k vocabulary). Instead we keep the
reference's final hidden states (after the final norm: the input of lm_head) at the scored
positions, plus the lm_head itself once; fidelity recomputes reference logits = h @ W^T (+ bias,
then the model's final logit softcapping, if any) for just those positions — the same arithmetic
the reference performs, so exact to float rounding.

Layout under data/reference/fidelity/:
  head/              weight.npy (vocab x hidden, fp32), bias.npy when lm_head has one, manifest.json
  <corpus>_c<ctx>/   tokens.npy (n_windows x ctx, int32: the exact token ids every quant sees),
                     hidden/<window>.npy (n_scored x hidden, fp32), manifest.json
Every manifest.json lists the sha256 of every file beside it. A folder is written under a temporary
name and renamed into place only when complete.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import config, io
from .errors import SilentzoneError

MANIFEST = "manifest.json"
RERUN = "rerun `silentzone reference`"


def root_dir(root: str | Path | None = None) -> Path:
    return Path(root or config.PATHS["reference"]) / "fidelity"


def store_dir(corpus: str, ctx: int, root: str | Path | None = None) -> Path:
    return root_dir(root) / f"{corpus}_c{ctx}"


def head_dir(root: str | Path | None = None) -> Path:
    return root_dir(root) / "head"


def _save(folder: Path, name: str, array: np.ndarray) -> None:
    target = folder / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _seal(folder: Path, meta: dict) -> None:
    """Write manifest.json with the sha256 of every file in `folder`."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    meta = {**meta, "files": {name: io.sha256_file(folder / name) for name in files}}
    io.write_json(folder / MANIFEST, meta)


def read_manifest(folder: str | Path, verify: bool = True) -> dict:
    """manifest.json of a store folder, every listed file checked against its sha256."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise SilentzoneError(f"{path}: reference store missing; {RERUN}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SilentzoneError(f"{path}: reference store manifest is damaged; {RERUN}") from None
    for name, digest in meta.get("files", {}).items() if verify else ():
        file = folder / name
        if not file.exists():
            raise SilentzoneError(f"{file}: reference store file missing; {RERUN}")
        if io.sha256_file(file) != digest:
            raise SilentzoneError(f"{file}: reference store file corrupted (sha256 differs from {path}); {RERUN}")
    return meta


def write_head(folder: str | Path, weight: np.ndarray, bias: np.ndarray | None, meta: dict) -> None:
    with io.atomic_dir(folder) as tmp:
        _save(tmp, "weight.npy", np.ascontiguousarray(weight, dtype=np.float32))
        if bias is not None:
            _save(tmp, "bias.npy", np.ascontiguousarray(bias, dtype=np.float32))
        _seal(tmp, {**meta, "vocab_size": int(weight.shape[0]), "hidden_size": int(weight.shape[1])})


def read_head(folder: str | Path) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(weight, bias or None, manifest) of the reference's lm_head, checksum-verified."""
    folder = Path(folder)
    meta = read_manifest(folder)
    bias = np.load(folder / "bias.npy") if "bias.npy" in meta["files"] else None
    return np.load(folder / "weight.npy"), bias, meta


class StoreWriter:
    """Streams one corpus x ctx store window by window into a temporary folder; `close()` seals it."""

    def __init__(self, folder: str | Path, tokens: np.ndarray, meta: dict):
        self._ctx = io.atomic_dir(folder)
        self.tmp = self._ctx.__enter__()
        self.tokens = np.ascontiguousarray(tokens, dtype=np.int32)
        self.meta = meta
        self.n_written = 0

    def add_window(self, hidden: np.ndarray) -> None:
        _save(self.tmp, f"hidden/{self.n_written:05d}.npy", np.ascontiguousarray(hidden, dtype=np.float32))
        self.n_written += 1

    def close(self) -> None:
        if self.n_written != len(self.tokens):
            raise RuntimeError(f"store has {self.n_written} hidden shards for {len(self.tokens)} windows")
        _save(self.tmp, "tokens.npy", self.tokens)
        _seal(self.tmp, {**self.meta, "n_windows": int(self.tokens.shape[0]), "ctx": int(self.tokens.shape[1])})
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


class ReferenceStore:
    """A verified store: `tokens` (n_windows x ctx) and `hidden(window)` (n_scored x hidden)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        self.tokens = np.load(self.folder / "tokens.npy").astype(np.int64)

    @property
    def first(self) -> int:
        return int(self.manifest["score_first"])

    def hidden(self, window: int) -> np.ndarray:
        return np.load(self.folder / f"hidden/{window:05d}.npy")
