"""The reference store: what every quant is compared with, written once by the reference, checksummed.

Full reference log-probs are too big to keep (255 scored positions x 49,152 vocabulary x 4 bytes =
50 MB per 512-token window for SmolLM2, 268 MB for Gemma's 262k vocabulary). Instead we keep the
reference's final hidden states at the positions a quant is scored on, plus the lm_head once;
reference logits are recomputed from them (silentzone.model.head.ReferenceHead) — the same
arithmetic the reference performs, so exact to float rounding.

One format for both uses. A *segment* holds token sequences and, for each, the hidden states of its
positions first … len-2 (each predicting the next token):

  data/reference/head/            weight.npy (vocab x hidden, fp32), bias.npy when lm_head has one, manifest.json
  data/reference/fidelity/<corpus>_c<ctx>/   corpus windows (fixed length, the scored second half)
  data/reference/bench/<task>/               benchmark sequences (prompt + the reference's answer, all positions)

  segment files: tokens.npy (int32, all sequences concatenated), offsets.npy (int64, n + 1),
                 firsts.npy (int64, n), hidden.npy (float32, Σ (len - 1 - first) rows x hidden),
                 manifest.json (ids, the writer's metadata, the sha256 of every file)

A folder is written under a temporary name and renamed into place only when complete; every read
verifies the sha256 of every file against its manifest, and opening a segment checks that its arrays
fit together and hold no NaN/inf, before any stage computes from them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import io
from .errors import SilentzoneError

MANIFEST = "manifest.json"


def head_dir(root: Path) -> Path:
    return Path(root) / "head"


def fidelity_dir(root: Path, corpus: str, ctx: int) -> Path:
    return Path(root) / "fidelity" / f"{corpus}_c{ctx}"


def bench_dir(root: Path, task: str) -> Path:
    return Path(root) / "bench" / task


def _save(folder: Path, name: str, array: np.ndarray) -> None:
    with open(folder / name, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def _seal(folder: Path, meta: dict) -> None:
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    io.write_json(folder / MANIFEST, {**meta, "files": {name: io.sha256_file(folder / name) for name in files}})


def read_manifest(folder: str | Path, rerun: str, verify: bool = True) -> dict:
    """manifest.json of a store folder, every listed file checked against its sha256."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.exists():
        raise SilentzoneError(f"{path}: reference store missing; {rerun}")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        files = dict(meta["files"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        raise SilentzoneError(f"{path}: reference store manifest is damaged; {rerun}") from None
    for name, digest in files.items() if verify else ():
        file = folder / name
        if not file.exists():
            raise SilentzoneError(f"{file}: reference store file missing; {rerun}")
        if io.sha256_file(file) != digest:
            raise SilentzoneError(f"{file}: reference store file corrupted (sha256 differs from {path}); {rerun}")
    return meta


# ------------------------------------------------------------------------------------------- head


def write_head(root: Path, weight: np.ndarray, bias: np.ndarray | None, meta: dict) -> Path:
    folder = head_dir(root)
    with io.atomic_dir(folder) as tmp:
        _save(tmp, "weight.npy", weight.astype(np.float32, copy=False))
        if bias is not None:
            _save(tmp, "bias.npy", bias.astype(np.float32, copy=False))
        _seal(tmp, {**meta, "vocab_size": int(weight.shape[0]), "hidden_size": int(weight.shape[1])})
    return folder


def read_head(root: Path, device: str = "cpu", verify: bool = True):
    """The reference lm_head (silentzone.model.head.ReferenceHead), checksum-verified (verify=False:
    the caller verified this folder's manifest already)."""
    from .model.head import ReferenceHead

    folder = head_dir(root)
    meta = read_manifest(folder, "rerun `silentzone reference`", verify=verify)
    bias = np.load(folder / "bias.npy") if "bias.npy" in meta["files"] else None
    weight = _finite(np.load(folder / "weight.npy"), folder / "weight.npy", "rerun `silentzone reference`")
    return ReferenceHead(weight, bias, meta, device)


def _finite(array: np.ndarray, path: Path, rerun: str) -> np.ndarray:
    if not np.isfinite(array).all():
        raise SilentzoneError(f"{path}: holds NaN or inf values; {rerun}")
    return array


# --------------------------------------------------------------------------------------- segments


class SegmentWriter:
    """Collects sequences and their hidden states, then writes one sealed segment folder."""

    def __init__(self, folder: str | Path, meta: dict):
        self.folder, self.meta = Path(folder), meta
        self.ids: list[str] = []
        self.tokens: list[np.ndarray] = []
        self.firsts: list[int] = []
        self.hidden: list[np.ndarray] = []

    def add(self, seq_id: str, tokens, first: int, hidden: np.ndarray) -> None:
        tokens = np.asarray(tokens, dtype=np.int32)
        if hidden.shape[0] != len(tokens) - 1 - first:
            raise ValueError(
                f"segment {self.folder.name}: {seq_id} has {hidden.shape[0]} hidden rows for {len(tokens)} tokens from {first}"
            )
        self.ids.append(seq_id)
        self.tokens.append(tokens)
        self.firsts.append(int(first))
        self.hidden.append(np.asarray(hidden, dtype=np.float32))

    def close(self) -> Path:
        lengths = [len(t) for t in self.tokens]
        with io.atomic_dir(self.folder) as tmp:
            _save(tmp, "tokens.npy", np.concatenate(self.tokens))
            _save(tmp, "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
            _save(tmp, "firsts.npy", np.asarray(self.firsts, dtype=np.int64))
            _save(tmp, "hidden.npy", np.concatenate(self.hidden))
            _seal(tmp, {**self.meta, "ids": self.ids, "n": len(self.ids)})
        return self.folder


class Segment:
    """A verified segment: `tokens(i)`, `first(i)`, `hidden(i)` of sequence i, or by id via `index`."""

    def __init__(self, folder: str | Path, rerun: str):
        self.folder, self.rerun = Path(folder), rerun
        self.manifest = read_manifest(self.folder, rerun)
        try:
            self._tokens = np.load(self.folder / "tokens.npy", allow_pickle=False)
            self._offsets = np.load(self.folder / "offsets.npy", allow_pickle=False)
            self._firsts = np.load(self.folder / "firsts.npy", allow_pickle=False)
            self._hidden = np.load(self.folder / "hidden.npy", mmap_mode="r", allow_pickle=False)
            self.ids = list(self.manifest["ids"])
            rows = self._offsets[1:] - self._offsets[:-1] - 1 - self._firsts
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SilentzoneError(f"{self.folder}: reference store segment unreadable ({type(exc).__name__}); {rerun}") from None
        self._row_offsets = np.concatenate([[0], np.cumsum(rows)])
        # checksums only prove the files are the ones sealed: check they also fit together, and that no
        # NaN/inf was sealed in, before any stage computes (and writes) anything from them
        if (
            self._hidden.ndim != 2
            or len(self._offsets) != len(self.ids) + 1
            or len(self._firsts) != len(self.ids)
            or self._offsets[-1] != len(self._tokens)
            or (rows < 0).any()
            or self._row_offsets[-1] != len(self._hidden)
        ):
            raise SilentzoneError(
                f"{self.folder / 'hidden.npy'}: its rows do not match the segment's tokens and offsets (damaged); {rerun}"
            )
        _finite(self._hidden, self.folder / "hidden.npy", rerun)
        self.index = {seq_id: i for i, seq_id in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def tokens(self, i: int) -> np.ndarray:
        return self._tokens[self._offsets[i] : self._offsets[i + 1]].astype(np.int64)

    def first(self, i: int) -> int:
        return int(self._firsts[i])

    def hidden(self, i: int) -> np.ndarray:
        rows = np.array(self._hidden[self._row_offsets[i] : self._row_offsets[i + 1]])
        return _finite(rows, self.folder / "hidden.npy", self.rerun)

    def windows(self) -> np.ndarray:
        """All sequences as one (n, len) array; fidelity segments are fixed-length windows."""
        return self._tokens.astype(np.int64).reshape(len(self), -1)

    def lookup(self, seq_id: str) -> int:
        if seq_id not in self.index:
            raise SilentzoneError(f"{self.folder}: reference store has no sequence {seq_id!r}; {self.rerun}")
        return self.index[seq_id]


def open_fidelity(root: Path, corpus: str, ctx: int) -> Segment:
    return Segment(fidelity_dir(root, corpus, ctx), "rerun `silentzone reference`")


def open_bench(root: Path, task: str) -> Segment:
    return Segment(bench_dir(root, task), "rerun `silentzone bench reference`")


def bench_fingerprint(root: Path, task: str) -> str | None:
    """The fingerprint a bench segment was written with, or None when there is none (cheap: no hashing)."""
    path = bench_dir(root, task) / MANIFEST
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):  # damaged: reading the segment says so
        return None
