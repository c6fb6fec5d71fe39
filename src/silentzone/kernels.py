"""Executing a notebook with papermill so that a rerun gives the same bytes (`execute`), against two
things its kernel does:

- A kernel left running by a killed stage. Papermill starts each notebook's kernel in a session of
  its own, so a kill of the stage (SIGKILL to its process group) does not reach it: the kernel runs
  on until ipykernel's parent poller sees its launcher gone (a poll a second, seconds more on a busy
  machine) and may still be writing into the stage's output folders. A rerun waits for such kernels
  before it runs its notebook, so nothing the dead run wrote lands after the rerun's own files, and
  its temps can be swept as a dead writer's.
- Output split by timing. The kernel sends a cell's printed text in chunks, flushed on a timer, so
  one cell's `print`s become one stream output or several depending on the machine's load (seen:
  the lesson's three lines as two outputs in 1 of 5 runs beside busy loops). The executed notebook
  is written with each run of consecutive same-stream outputs joined, so its bytes do not depend on
  the load.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from . import io
from .errors import SilentzoneError

PROC = Path("/proc")
PARENT_VARIABLE = b"JPY_PARENT_PID="  # jupyter_client gives a kernel its launcher's pid in this variable


def _launcher(entry: Path) -> int | None:
    """The pid that launched process `entry` as a kernel, or None when it is not a kernel (or unreadable)."""
    try:
        variables = (entry / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    value = next((v[len(PARENT_VARIABLE) :] for v in variables if v.startswith(PARENT_VARIABLE)), b"")
    return int(value) if value.isdigit() else None


def orphaned_kernels(root: Path) -> list[int]:
    """Pids of kernels working in `root` whose launching process is gone (none where /proc is missing)."""
    root = Path(root).resolve()
    orphans = []
    try:
        entries = [e for e in PROC.iterdir() if e.name.isdigit() and int(e.name) != os.getpid()]
    except OSError:
        return orphans
    for entry in entries:
        try:
            if Path(os.readlink(entry / "cwd")) != root:
                continue
        except OSError:
            continue
        launcher = _launcher(entry)
        if launcher is not None and not io.pid_alive(launcher):
            orphans.append(int(entry.name))
    return sorted(orphans)


def wait_for_orphaned_kernels(root: Path, grace_s: float = 30.0, timeout_s: float = 60.0) -> list[int]:
    """Wait until no kernel of a killed run works in `root`; returns the pids waited for. A kernel
    still there after `grace_s` (its parent poller cannot see its launcher go, e.g. a launcher pid
    reused) is killed: nobody can reach it any more. One line if even that does not end it."""
    start, waited, killed = time.monotonic(), set(), set()
    while pids := orphaned_kernels(root):
        waited.update(pids)
        elapsed = time.monotonic() - start
        if elapsed > timeout_s:
            listed = " ".join(map(str, pids))
            raise SilentzoneError(
                f"{root}: notebook kernel(s) {listed} of a killed earlier run are still running there after "
                f"{timeout_s:g} s; stop them (kill -9 {listed}) and rerun"
            )
        if elapsed > grace_s:
            for pid in set(pids) - killed:
                print(f"{root}: killing notebook kernel {pid}, left running by a killed earlier run", file=sys.stderr)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.05)
    return sorted(waited)


def coalesce_streams(path: Path) -> bool:
    """Join each cell's consecutive stream outputs of one name (stdout, stderr) in the executed
    notebook at `path`; rewritten only when something was joined (returns whether it was)."""
    import nbformat  # with papermill (the pipeline extra)

    notebook = nbformat.read(path, as_version=4)
    joined = False
    for cell in notebook.cells:
        outputs = []
        for output in cell.get("outputs", []):
            last = outputs[-1] if outputs else None
            if output.output_type == "stream" and last is not None and last.output_type == "stream" and last.name == output.name:
                last.text += output.text
                joined = True
            else:
                outputs.append(output)
        if "outputs" in cell:
            cell.outputs = outputs
    if joined:
        nbformat.write(notebook, path)
    return joined


def execute(source: Path, out: Path, parameters: dict, kernel: str, cwd: Path) -> Path:
    """Run notebook `source` with papermill into `out` (atomically), its kernel working in `cwd`:
    after any kernel a killed earlier run left there, with its stream outputs joined. A failing cell
    is one line naming it (a SilentzoneError raised in the notebook: its own line)."""
    import papermill

    wait_for_orphaned_kernels(cwd)
    with io.atomic_path(Path(out)) as tmp:
        try:
            papermill.execute_notebook(
                str(source),
                str(tmp),
                parameters=parameters,
                kernel_name=kernel,
                progress_bar=False,
                cwd=str(cwd),
                request_save_on_cell_execute=False,
            )
        except papermill.PapermillExecutionError as exc:
            first = str(exc.evalue).splitlines()[0] if exc.evalue else ""
            if exc.ename == SilentzoneError.__name__:  # already one line naming the file and the fix (a full disk too)
                raise SilentzoneError(f"{source}: {first}") from None
            raise SilentzoneError(
                f"{source}: cell {exc.exec_count} failed: {exc.ename}: {first} (rerun it in JupyterLab to see the traceback)"
            ) from None
        coalesce_streams(tmp)
    return Path(out)
