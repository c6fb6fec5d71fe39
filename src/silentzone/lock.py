"""One lock per output: two processes never compute the same output at the same time.

Every command that writes an output holds an exclusive lock named after that output (`hold`): an
flock (the `filelock` package) on `.silentzone/locks/<output>.lock` under the run folder, which the
kernel releases when its holder ends in any way, SIGKILL included, so a lock never outlives its
process. A second process asking for a held lock does not wait: it stops at once with one line
naming the holder (pid, command, start time: `<output>.owner.json`, written once the lock is held).
Waiting would only make it recompute, afterwards, the output the first one is finishing, and
both would race on the same resume parts (which is how, before these locks, one of two
`silentzone fidelity q8_0` died with FileNotFoundError on the other's parts folder).

Outputs are named by their path relative to the run folder (`data/fidelity/q8_0`,
`data/processed`, `results/01-fidelity-vs-score`), so two commands writing the same files
(`collect` and `ingest cohort`) share one lock. An output outside the run folder (`analyze-cohort
--out /elsewhere`) is named by its absolute path: processes started from different run folders do
not see each other's locks there.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
from pathlib import Path

from . import io
from .errors import SilentzoneError

LOCKS = Path(".silentzone") / "locks"


def lock_name(output: str | os.PathLike, root: str | os.PathLike = ".") -> str:
    """A file name for `output`'s lock: its path relative to `root` (absolute when outside), `/` → `__`."""
    path, base = Path(os.path.abspath(output)), Path(os.path.abspath(root))
    try:
        rel = path.relative_to(base).as_posix()
    except ValueError:
        rel = path.as_posix().lstrip("/")
    return rel.replace("/", "__") or "_root"


def owner_record() -> dict:
    """Who holds a lock: what a second process prints about the first."""
    command = " ".join(["silentzone" if Path(sys.argv[0]).name in ("silentzone", "__main__.py") else sys.argv[0], *sys.argv[1:]])
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def describe_owner(path: Path) -> str:
    """The holder as one phrase, from its owner record; a record of a process that is gone (the
    holder has not yet written its own) names no one."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
        pid = int(owner["pid"])
        alive = owner.get("host") != socket.gethostname() or io.pid_alive(pid)
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
    if not alive:
        return "another process"
    return f"another process: pid {pid} (`{owner.get('command', '?')}`, since {owner.get('since', '?')})"


@contextlib.contextmanager
def hold(output: str | os.PathLike, root: str | os.PathLike = "."):
    """Hold the lock of `output` for the block, or stop with one line naming its holder."""
    from filelock import FileLock, Timeout

    from . import io

    folder = Path(root) / LOCKS
    name = lock_name(output, root)
    io.make_dirs(folder)
    lock = FileLock(str(folder / f"{name}.lock"), timeout=0)
    owner = folder / f"{name}.owner.json"
    with io.writing(folder / f"{name}.lock"):  # a read-only run folder: one line, here already
        try:
            lock.acquire()
        except Timeout:
            raise SilentzoneError(
                f"{output}: being computed now by {describe_owner(owner)}; wait for it to finish (or stop it), then rerun"
            ) from None
    try:
        io.write_json(owner, owner_record())
        yield
    finally:
        with contextlib.suppress(OSError):
            owner.unlink()
        lock.release()
