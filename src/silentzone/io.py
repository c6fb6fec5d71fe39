"""Atomic, deterministic writers. Every output goes through a temp file + rename, so an
interrupted stage never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path

from .errors import SilentzoneError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp name keeps the real suffix: some writers (papermill, savefig) dispatch on it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, obj) -> None:
    """Sorted keys and a trailing newline: identical objects give identical bytes."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False, default=_jsonable) + "\n")


def write_numbers(path, numbers: dict) -> None:
    """A notebook's headline numbers: NaN and missing values become null ("n/a" in the paper)."""
    write_json(path, _nan_to_none(numbers))


def _nan_to_none(x):
    import math

    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    try:
        if x is not None and not isinstance(x, (str, bool)) and math.isnan(x):
            return None
    except TypeError:
        pass
    return x


def _jsonable(x):
    import numpy as np

    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.bool_):
        return bool(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def write_parquet(path, df) -> None:
    """Parquet without pandas' index or creation metadata that would vary between runs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata(None)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_statistics=False)


def write_csv(path, df, **kwargs) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, lineterminator="\n", **kwargs)


def read_text(path, what: str) -> str:
    """A user's file as UTF-8 text (a BOM is dropped); a folder, an unreadable, binary or non-UTF-8
    file is one line naming the file and line."""
    path = Path(path)
    if path.is_dir():
        raise SilentzoneError(f"{path}: is a folder, expected {what}; name the file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SilentzoneError(f"{path}: cannot read ({exc.strerror}); check the path and its permissions") from None
    if b"\x00" in data:
        line = data.count(b"\n", 0, data.index(b"\x00")) + 1
        raise SilentzoneError(f"{path}:{line}: NUL byte; a binary or damaged file, not {what}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise SilentzoneError(
            f"{path}:{line}: byte 0x{data[exc.start]:02x} is not UTF-8 text; a binary or damaged file, "
            f"not {what} (save it as UTF-8)"
        ) from None


def read_parquet(path, what: str = "table"):
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise SilentzoneError(f"{path}: {what} not found; run the stage that produces it first (dvc repro)")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise SilentzoneError(f"{path}: unreadable parquet ({type(exc).__name__}); delete it and rerun its stage") from None


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
