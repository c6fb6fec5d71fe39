"""Atomic, deterministic writers. Every output goes through a temp file + rename, so an
interrupted stage never leaves a half-written file behind.

A write that fails for lack of space or permission (a full disk, a quota, a read-only or
unwritable folder) is one SilentzoneError line naming the file, the space it needs where that is
known, and what the atomic write guarantees: the temp file is removed and every file written
before is whole, so nothing was lost and a rerun resumes (`write_error`).

Temp names carry the writer's pid (`.<name>.<pid>.<random>.tmp<suffix>`): a temp left by a
process that was killed (SIGKILL skips every cleanup) is removed by the next write of the same
file, so it never lingers inside an output folder that DVC hashes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from .errors import SilentzoneError, WriteError

NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
NO_WRITE = {
    errno.EROFS: "is on a read-only file system",
    errno.EACCES: "is not writable (permission denied)",
    errno.EPERM: "is not writable (operation not permitted)",
}
NOTHING_LOST = "nothing was lost (files written before are whole; the rerun resumes)"
MB = 1 << 20


def _existing(path) -> Path:
    """`path` or its nearest existing ancestor (what disk_usage can measure), as given (relative stays relative)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _free(path: Path) -> int | None:
    try:
        return shutil.disk_usage(_existing(path)).free
    except OSError:
        return None


def _mb(n: int) -> str:
    return f"{max(n, 0) / MB:.1f} MB" if n < 100 * MB else f"{n / MB:,.0f} MB"


# Libraries that are not Python's own I/O report the errno in their message only, or not at all:
# pyarrow "[errno 28] No space left on device", safetensors (Rust) "I/O error: … (os error 28)",
# numpy's np.save "N requested and M written" (no errno).
_ERRNO_IN_TEXT = re.compile(r"(?:os error|errno)\s*\[?\s*(\d+)", re.IGNORECASE)
_TEXT_ERRNO = {"No space left on device": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT, "Read-only file system": errno.EROFS}


def errno_of(exc: BaseException) -> int | None:
    """The errno of a failed write, wherever the library put it."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno
    text = str(exc)
    if m := _ERRNO_IN_TEXT.search(text):
        return int(m.group(1))
    return next((code for words, code in _TEXT_ERRNO.items() if words in text), None)


def _no_space(exc: BaseException, path: Path) -> bool:
    """ENOSPC/EDQUOT, also a short write with no errno when the disk is (nearly) full."""
    code = errno_of(exc)
    if code in NO_SPACE:
        return True
    free = _free(path)
    return code is None and "requested and" in str(exc) and free is not None and free < MB


def write_error(path, exc: BaseException, needed: int | None = None, pending: int = 0) -> WriteError | None:
    """The one line for a write of `path` that failed for lack of space or permission; None for any
    other error (a bug or a damaged input: the caller re-raises it). `needed`: the bytes the file
    needs, where known; `pending`: bytes that the failed write's cleanup is about to free. `path`
    None: the failing library named no file (the message says so, and measures the run folder)."""
    path = public_path(path) if path is not None else None
    what = str(path) if path is not None else "an output (the failing library named no file)"
    path = path if path is not None else Path(".")
    if _no_space(exc, path):
        free = _free(path)
        if free is None:
            return WriteError(f"disk full while writing {what}; free some space and rerun — {NOTHING_LOST}")
        free += pending
        if needed is None:
            return WriteError(f"disk full while writing {what} ({_mb(free)} free); free some space and rerun — {NOTHING_LOST}")
        short = max(needed - free, 0) + MB  # the shortfall, and a margin for the file system's own blocks
        return WriteError(
            f"disk full while writing {what} (it needs about {_mb(needed)}, {_mb(free)} free); free at least {_mb(short)} "
            f"and rerun — {NOTHING_LOST}"
        )
    if (code := errno_of(exc)) in NO_WRITE:
        folder = _existing(path.parent if path != Path(".") else path)
        return WriteError(
            f"cannot write {what}: {folder} {NO_WRITE[code]}; make it writable "
            f"(or run in a writable copy) and rerun — {NOTHING_LOST}"
        )
    return None


@contextlib.contextmanager
def writing(path, needed: int | None = None):
    """Turn a full disk or an unwritable folder met while writing `path` into one SilentzoneError."""
    try:
        yield
    except SilentzoneError:
        raise
    except Exception as exc:  # noqa: BLE001 — only a full disk or an unwritable folder is turned into a line
        error = write_error(path, exc, needed)
        if error is None:
            raise
        raise error from exc


def make_dirs(folder) -> None:
    with writing(folder):
        Path(folder).mkdir(parents=True, exist_ok=True)


TEMP_NAME = re.compile(r"^\.(.+)\.\d+\.[A-Za-z0-9_]+\.tmp(\.[^.]+)?$")


def public_path(path) -> Path:
    """`path` with every temp component named as the file or folder it becomes."""
    parts = [(m.group(1) + (m.group(2) or "")) if (m := TEMP_NAME.match(p)) else p for p in Path(path).parts]
    return Path(*parts) if parts else Path(path)


def _temp_pattern(name: str, suffix: str) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(name)}\.(\d+)\.[A-Za-z0-9_]+\.tmp{re.escape(suffix)}$")


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists (someone else's counts: kill(0) is refused only for a live process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: Path, name: str, suffix: str) -> list[Path]:
    """Temps of `path` (named by `_temp_pattern`) whose writer is gone; removed, and returned."""
    pattern, removed = _temp_pattern(name, suffix), []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                shutil.rmtree(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


_ANY_TEMP = re.compile(r"^\..+\.(\d+)\.[A-Za-z0-9_]+\.tmp(\.[A-Za-z0-9]+)?$")


def remove_dead_writers_temps(folder: Path) -> list[Path]:
    """Every temp file directly in `folder` (any name `atomic_path` makes) whose writer is gone;
    removed, and returned. For folders another process wrote: a notebook kernel runs in its own
    session, so a kill of the stage leaves it to die on its own a second later, often after the
    rerun's own writes had already swept that file's temps."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = _ANY_TEMP.match(entry.name)
        if m and entry.is_file(follow_symlinks=False) and not pid_alive(int(m.group(1))):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, needed: int | None = None):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.
    `needed`: the bytes the file will take, where known (for the disk-full message)."""
    path = Path(path)
    with writing(path, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path, path.stem, path.suffix)
        # The temp name keeps the real suffix: some writers (papermill, savefig) dispatch on it.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.{os.getpid()}.", suffix=f".tmp{path.suffix}", dir=path.parent)
        os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except SilentzoneError:
        raise
    except Exception as exc:  # noqa: BLE001 — see writing()
        error = write_error(path, exc, needed, pending=_size(tmp))
        if error is None:
            raise
        raise error from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _size(path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, needed: int | None = None):
    """Yield a temporary folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    with writing(path, needed):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path, path.name, "")
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            # out of the way first, so the folder is missing for two renames, not a whole rmtree
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
            os.replace(path, old / path.name)
            tmp.rename(path)
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    except SilentzoneError:
        raise
    except Exception as exc:  # noqa: BLE001 — see writing()
        error = write_error(path, exc, needed, pending=_tree_size(tmp))
        if error is None:
            raise
        raise error from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _tree_size(folder: Path) -> int:
    return sum(_size(p) for p in folder.rglob("*")) if folder.exists() else 0


def copy_file(src, dst) -> None:
    """`src` copied to `dst` (with its times) atomically: a copy killed halfway leaves no half file."""
    with atomic_path(dst, needed=_size(src)) as tmp:
        shutil.copy2(src, tmp)


def write_text(path, text: str) -> None:
    data = text.encode("utf-8")
    with atomic_path(path, needed=len(data)) as tmp:
        tmp.write_bytes(data)


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
    with atomic_path(path, needed=table.nbytes) as tmp:  # the in-memory size: at most what zstd writes, give or take
        pq.write_table(table, tmp, compression="zstd", write_statistics=False)


def write_csv(path, df, **kwargs) -> None:
    with atomic_path(path, needed=int(df.memory_usage(deep=True).sum())) as tmp:
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
