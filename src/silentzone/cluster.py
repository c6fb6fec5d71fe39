"""The pipeline fanned out over a Ray cluster: one task per cohort member, then collect on the head.

    silentzone fanout [--address auto] [--notebooks]

On the head, in order: `prepare`, then `reference` and `bench reference` for every engine of the run
(engine.name and engine.also: what every member is compared with). Then one Ray task per cohort member
runs `silentzone fidelity NAME` and `silentzone bench NAME` for every engine (`--engine E` for those of
engine.also) — the very commands the DVC stages run, in the same run folder on a filesystem every node
shares — so each output is the file a sequential run writes, byte for byte (the stages are
deterministic, and each task's threads are params `threads`, as in a sequential run). A task asks Ray
for `threads` CPUs (`--gpus` per task on a GPU cluster); a task whose worker dies is retried
(`max_retries`), and a stage that was interrupted resumes from its parts. Last, on the head: `collect` (per
engine) and (with --notebooks) every analysis notebook and the paper inputs. docs/cluster.md: a multi-node
cluster, the DVC-remote variant, Ray on Slurm.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .errors import SilentzoneError


def engine_flag(params, engine: str) -> list[str]:
    """`--engine E` for an engine of engine.also; nothing for the run's own (its outputs are data/…)."""
    return [] if engine == params.engine.name else ["--engine", engine]


def head_stages(params) -> list[list[str]]:
    """What every member is compared with, per engine of the run: its reference stores."""
    stages = [["prepare"]]
    for engine in params.engine.all():
        stages += [["reference", *engine_flag(params, engine)], ["bench", "reference", *engine_flag(params, engine)]]
    return stages


def silentzone_command() -> list[str]:
    found = shutil.which("silentzone")
    return [found] if found else [sys.executable, "-m", "silentzone"]


def run_command(args: list[str], root: str, params: str) -> float:
    """One `silentzone` command in the run folder; its seconds, or one error naming it and its last line."""
    start = time.perf_counter()
    proc = subprocess.run(
        [*silentzone_command(), "--params", params, *args], cwd=root, capture_output=True, text=True, preexec_fn=_die_with_parent
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SilentzoneError(f"`silentzone {' '.join(args)}` failed on {os.uname().nodename}: {last}")
    return time.perf_counter() - start


def _die_with_parent() -> None:
    """A stage dies with the worker that started it (Linux): when Ray kills a worker, its retry is
    then the only process writing that member's parts."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def member_task(root: str, params: str, name: str, flags: list[list[str]]) -> dict:
    """What one Ray task does: a member's fidelity and bench for every engine of the run (`flags`: each
    engine's `--engine E`, empty for the run's own), as their DVC stages would."""
    found = {"member": name, "node": os.uname().nodename, "pid": os.getpid(), "fidelity_s": 0.0, "bench_s": 0.0}
    for flag in flags:
        found["fidelity_s"] += run_command(["fidelity", name, *flag], root, params)
        found["bench_s"] += run_command(["bench", name, *flag], root, params)
    return found


def fanout(
    params, params_path: str, root: str = ".", address: str = "auto", gpus: float = 0.0, notebooks: bool = False, retries: int = 3
) -> list[str]:
    try:
        import ray
    except ImportError:
        raise SilentzoneError("silentzone fanout needs Ray: `pip install -e '.[cluster]'` (docs/cluster.md)") from None
    root, params_path = str(Path(root).resolve()), str(Path(params_path).resolve())
    lines = []
    for args in head_stages(params):
        lines.append(f"head: silentzone {' '.join(args)} ({run_command(args, root, params_path):.1f} s)")
    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    try:
        task = ray.remote(num_cpus=params.threads, num_gpus=gpus, max_retries=retries, retry_exceptions=False)(member_task)
        start = time.perf_counter()
        flags = [engine_flag(params, engine) for engine in params.engine.all()]
        done = ray.get([task.remote(root, params_path, name, flags) for name in params.quant_names()])
        nodes = sorted({d["node"] + ":" + str(d["pid"]) for d in done})
        lines += [f"{d['member']}: fidelity {d['fidelity_s']:.1f} s, bench {d['bench_s']:.1f} s on {d['node']}" for d in done]
        lines.append(f"fan-out: {len(done)} members in {time.perf_counter() - start:.1f} s over {len(nodes)} worker processes")
    except ray.exceptions.RayTaskError as exc:
        raise SilentzoneError(
            str(exc.cause) if isinstance(exc.cause, SilentzoneError) else f"a member task failed: {exc.cause!r}"
        ) from None
    except ray.exceptions.RayError as exc:  # a worker or node died and the task's retries are spent
        raise SilentzoneError(
            f"a member task was lost ({type(exc).__name__}: its worker or node died {retries + 1} time(s)); rerun "
            "`silentzone fanout`: each stage resumes or redoes its member, and the outputs are the same bytes"
        ) from None
    finally:
        ray.shutdown()
    for engine in params.engine.all():
        args = ["collect", *engine_flag(params, engine)]
        lines.append(f"head: silentzone {' '.join(args)} ({run_command(args, root, params_path):.1f} s)")
    if notebooks:
        for name in params.notebooks.names():
            lines.append(f"head: silentzone analyze {name} ({run_command(['analyze', name], root, params_path):.1f} s)")
        lines.append(f"head: silentzone paper inputs ({run_command(['paper', 'inputs'], root, params_path):.1f} s)")
    return lines
