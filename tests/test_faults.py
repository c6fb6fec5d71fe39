"""Faults a long run meets: a second process computing the same output, a full disk, a read-only
folder, temp files left by a killed writer. Each is one line naming the file and the fix, never a
traceback, and nothing written before is lost (issue 24; the kills themselves:
tests/test_fault_injection.py)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from silentzone import cli, config, io, kernels, lock
from silentzone.errors import SilentzoneError

REPO = Path(__file__).resolve().parents[1]
SILENTZONE = str(Path(sys.executable).parent / "silentzone")
QUANT = "q8_0"
QUIET = {**os.environ, "TQDM_DISABLE": "1"}  # subprocesses: no progress bars on stderr, only what is under test


def _quiet(mp) -> None:
    import tqdm

    real = tqdm.tqdm.__init__
    mp.setattr(tqdm.tqdm, "__init__", lambda self, *a, **k: real(self, *a, **{**k, "disable": True}))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny run (one quant) with prepare and reference done, through the CLI."""
    root = tmp_path_factory.mktemp("faults-base")
    (root / "profiles").symlink_to(REPO / "profiles")
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        mp.chdir(root)
        _quiet(mp)
        assert cli.main(["profile", "tiny"]) == 0
        raw = config.read_yaml("params.yaml")
        raw["cohort"] = {QUANT: raw["cohort"][QUANT]}
        Path("params.yaml").write_text(config.dump(raw), encoding="utf-8")
        assert cli.main(["prepare"]) == 0
        assert cli.main(["reference"]) == 0
    return root


@pytest.fixture(scope="module")
def lone(base, tmp_path_factory):
    """`fidelity q8_0` alone, uninterrupted: the bytes every other run of it must end with."""
    root = tmp_path_factory.mktemp("faults-lone")
    shutil.copytree(base, root, dirs_exist_ok=True, symlinks=True)
    subprocess.run([SILENTZONE, "fidelity", QUANT], cwd=root, check=True, capture_output=True)
    return {p: (root / p).read_bytes() for p in _fidelity_outputs()}


def _fidelity_outputs() -> list[str]:
    return [f"data/fidelity/{QUANT}.parquet", f"data/fidelity/{QUANT}.report.json"]


@pytest.fixture
def run(base, tmp_path, monkeypatch):
    root = tmp_path / "run"
    shutil.copytree(base, root, symlinks=True)
    monkeypatch.chdir(root)
    _quiet(monkeypatch)
    return root


def _one_line(err: str, command: str, warnings_before: bool = False) -> str:
    """The one error line; `warnings_before`: lines a best-effort writer printed first are allowed."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines, err
    assert len(lines) == 1 or warnings_before, err
    lines = lines[-1:]
    assert lines[0].startswith(f"silentzone {command}: error: "), lines[0]
    return lines[0]


def _temps(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if io.TEMP_NAME.match(p.name) or p.name.endswith(".tmp"))


# ----------------------------------------------------------------------------- one lock per output


def test_a_second_process_computing_the_same_output_stops_with_one_line_naming_the_first(run, lone):
    first = subprocess.Popen(
        [SILENTZONE, "fidelity", QUANT], cwd=run, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=QUIET
    )
    owner = run / lock.LOCKS / "data__fidelity__q8_0.owner.json"
    deadline = time.monotonic() + 120
    while not owner.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert owner.exists(), first.communicate()
    os.kill(first.pid, signal.SIGSTOP)  # frozen while it holds the lock: the second surely meets it
    try:
        second = subprocess.run([SILENTZONE, "fidelity", QUANT], cwd=run, capture_output=True, text=True, timeout=120, env=QUIET)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    line = _one_line(second.stderr, "fidelity")
    assert second.returncode == 2
    assert f"data/fidelity/{QUANT}: being computed now by another process: pid {first.pid} (`silentzone fidelity {QUANT}`" in line
    assert "wait for it to finish (or stop it), then rerun" in line
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert {p: (run / p).read_bytes() for p in _fidelity_outputs()} == lone  # the survivor: a lone run's bytes
    assert not owner.exists() and not (run / f"data/fidelity/.parts/{QUANT}").exists()


COMMANDS = {
    "prepare": (["prepare"], "data/prepared"),
    "reference": (["reference"], "data/reference"),
    "fidelity": (["fidelity", QUANT], f"data/fidelity/{QUANT}"),
    "bench": (["bench", "reference"], "data/bench/reference"),
    "collect": (["collect"], "data/processed"),
    "analyze": (["analyze", "01-fidelity-vs-score"], "results/01-fidelity-vs-score"),
    "paper": (["paper", "inputs"], "paper"),
    "analyze-cohort": (["analyze-cohort", "x.csv", "--fidelity", "a", "--score", "b", "--silent-k", "4", "--out", "out"], "out"),
    "ingest": (["ingest", "cohort", "manifest.yaml"], "data/processed"),  # the same files as collect: the same lock
}


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_that_writes_holds_its_outputs_lock(run, capsys, name):
    argv, output = COMMANDS[name]
    with lock.hold(output):
        rc = cli.main(argv)
    line = _one_line(capsys.readouterr().err, argv[0])
    assert rc == 2 and line.endswith(
        f"{output}: being computed now by another process: pid {os.getpid()} (`{lock.owner_record()['command']}`, "
        f"since {line.split('since ')[1].split(')')[0]}); wait for it to finish (or stop it), then rerun"
    )
    assert cli.main(["profile", "--show"]) == 0  # reading commands take no lock


def test_a_lock_left_by_a_killed_holder_is_free(run):
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; from silentzone import lock\nwith lock.hold('data/processed'):\n    time.sleep(60)"],
        cwd=run,
    )
    owner = run / lock.LOCKS / "data__processed.owner.json"
    deadline = time.monotonic() + 60
    while not owner.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(SilentzoneError, match=f"pid {child.pid}"):
        with lock.hold("data/processed"):
            pass
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert owner.exists()  # its record stays behind; the kernel released its flock
    with lock.hold("data/processed"):
        assert json.loads(owner.read_text())["pid"] == os.getpid()


# ----------------------------------------------------------------------------- full disk, read-only folders


def _enospc_after(mp, module, name, nbytes: int = 10):
    """Patch module.name (a writer taking (data_or_table, path)) to write a few bytes, then fail as a full disk does."""

    def full(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"x" * nbytes)
        raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")

    mp.setattr(module, name, full)


def test_a_full_disk_while_writing_a_table_is_one_line_and_loses_nothing(run, lone, monkeypatch, capsys):
    import pyarrow.parquet as pq

    real = pq.write_table
    seen = []

    def full_at_the_table(table, path, *args, **kwargs):
        if Path(path).name.startswith(f".{QUANT}.") and "/.parts/" not in str(path):  # the final table, after every part
            seen.append(sorted(p.name for p in (run / f"data/fidelity/.parts/{QUANT}").iterdir()))
            Path(path).write_bytes(b"x" * 100)
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        return real(table, path, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", full_at_the_table)
    assert cli.main(["fidelity", QUANT]) == 2
    line = _one_line(capsys.readouterr().err, "fidelity")
    assert line.startswith(f"silentzone fidelity: error: disk full while writing data/fidelity/{QUANT}.parquet (it needs about ")
    assert " MB free); free at least " in line and line.endswith(
        "MB and rerun — nothing was lost (files written before are whole; the rerun resumes)"
    )
    assert _temps(run) == [] and not (run / f"data/fidelity/{QUANT}.parquet").exists()
    parts = sorted(p.name for p in (run / f"data/fidelity/.parts/{QUANT}").iterdir())
    assert parts == seen[0] and len(parts) > 2  # every resume part kept: the rerun computes none again
    monkeypatch.setattr(pq, "write_table", real)
    computed = []
    from silentzone.stages import fidelity

    real_batch = fidelity.window_batch_metrics
    monkeypatch.setattr(fidelity, "window_batch_metrics", lambda *a: computed.append(1) or real_batch(*a))
    assert cli.main(["fidelity", QUANT]) == 0
    assert computed == []  # resumed from the kept parts
    assert {p: (run / p).read_bytes() for p in _fidelity_outputs()} == lone


def test_a_full_disk_for_text_and_arrays_names_the_file_and_the_space(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("out").mkdir()
    Path("out/old.json").write_text('{"kept": true}\n')
    real_replace = os.replace

    def full(src, dst):  # the data is written; the disk fills at the last step
        raise OSError(errno.ENOSPC, "No space left on device", str(src))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(SilentzoneError) as exc:
        io.write_json("out/old.json", {"kept": False, "pad": "y" * 3_000_000})
    msg = str(exc.value)
    assert msg.startswith("disk full while writing out/old.json (it needs about 2.9 MB, ") and "free at least " in msg
    monkeypatch.setattr(os, "replace", real_replace)
    assert Path("out/old.json").read_text() == '{"kept": true}\n' and sorted(os.listdir("out")) == ["old.json"]

    # numpy drops the errno ("N requested and M written"): a nearly full disk still names it
    from silentzone import refstore

    monkeypatch.setattr(io.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(100 << 20, 100 << 20, 4096))

    def short_write(f, array, allow_pickle=False):
        raise OSError(f"{array.size} requested and 12 written")

    monkeypatch.setattr(np, "save", short_write)
    with pytest.raises(SilentzoneError, match=r"^disk full while writing store/head \(it needs about 0\.1 MB, 0\.0 MB free\)"):
        refstore.write_head(Path("store"), np.zeros((256, 64), np.float32), None, {})
    assert not Path("store/head").exists() and [p for p in Path("store").iterdir()] == []


@pytest.mark.parametrize(
    "code, words", [(errno.EROFS, "is on a read-only file system"), (errno.EACCES, "is not writable (permission denied)")]
)
def test_a_read_only_folder_is_one_line(tmp_path, monkeypatch, code, words):
    monkeypatch.chdir(tmp_path)

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), "results/numbers")

    monkeypatch.setattr(io.tempfile, "mkstemp", refuse)
    with pytest.raises(SilentzoneError) as exc:
        io.write_csv("results/tables/x.csv", pd.DataFrame({"a": [1]}))
    assert str(exc.value) == (
        f"cannot write results/tables/x.csv: results/tables {words}; make it writable (or run in a writable copy) "
        "and rerun — nothing was lost (files written before are whole; the rerun resumes)"
    )


def test_other_os_errors_are_not_called_a_full_disk(tmp_path, monkeypatch, capsys):
    assert io.write_error("x", OSError(errno.EIO, "Input/output error")) is None
    assert io.write_error("x", OSError("unrelated")) is None

    def broken(args):
        raise OSError(errno.EIO, "Input/output error", "data/x")

    monkeypatch.setattr(cli, "cmd_profile", broken)
    assert cli.main(["profile", "--show"]) == 2
    assert "unexpected OSError: [Errno 5] Input/output error: 'data/x' (a bug or an unreadable input" in capsys.readouterr().err


def test_an_oserror_outside_the_writers_still_names_a_full_disk(tmp_path, monkeypatch, capsys):
    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "paper/figures/a.png")

    monkeypatch.setattr(cli, "cmd_profile", full)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["profile", "--show"]) == 2
    line = _one_line(capsys.readouterr().err, "profile")
    assert line.startswith("silentzone profile: error: disk full while writing paper/figures/a.png (")
    assert line.endswith(
        "MB free); free some space and rerun — nothing was lost (files written before are whole; the rerun resumes)"
    )


# ----------------------------------------------------------------------------- temps of killed writers


def test_a_temp_left_by_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has ended: nobody writes its temps any more
    out = tmp_path / "results"
    out.mkdir()
    stale = [out / f".numbers.{pid}.abc123_x.tmp.json", out / f".figs.{pid}.k2j4l5m6.tmp"]
    stale[0].write_text("half")
    stale[1].mkdir()
    (stale[1] / "a.png").write_bytes(b"half")
    alive = out / f".numbers.{os.getppid()}.zzzzzzzz.tmp.json"  # a live writer's: left alone
    alive.write_text("busy")
    other = out / f".numbers.report.{pid}.abcdefgh.tmp.json"  # another file's temp (numbers.report.json)
    other.write_text("x")
    io.write_json(out / "numbers.json", {"a": 1})
    with io.atomic_dir(out / "figs") as tmp:
        (tmp / "a.png").write_bytes(b"png")
    assert sorted(p.name for p in out.iterdir()) == sorted(["numbers.json", "figs", alive.name, other.name])
    assert io.public_path(f"data/reference/.head.{pid}.k2j4l5m6.tmp/weight.npy") == Path("data/reference/head/weight.npy")
    assert io.public_path(f"results/.numbers.{pid}.abc123_x.tmp.json") == Path("results/numbers.json")


def test_a_folder_sweep_removes_every_dead_writers_temp_and_nothing_else(tmp_path):
    """analyze sweeps its output folders after the notebook: a killed run's kernel dies a second after
    the stage, leaving a temp of a file the rerun may already have written."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    names = {
        f".kld_vs_volume_direction.{pid}.dql4m2j0.tmp.png": False,  # dead writer: removed
        f".flips.{pid}.abc_1234.tmp.csv": False,
        f".flips.{os.getppid()}.abc_1234.tmp.csv": True,  # a live writer's: kept
        "flips.csv": True,  # not a temp
        f"kld.{pid}.abc.tmp.csv": True,  # not hidden: not a temp atomic_path makes
    }
    for name in names:
        (tmp_path / name).write_text("x")
    removed = io.remove_dead_writers_temps(tmp_path)
    assert sorted(p.name for p in removed) == sorted(n for n, kept in names.items() if not kept)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(n for n, kept in names.items() if kept)
    assert io.remove_dead_writers_temps(tmp_path / "missing") == []


def _fake_kernel(cwd: Path, launcher: int, seconds: float) -> subprocess.Popen:
    """A process as papermill leaves a kernel: working in the run folder, its launcher's pid in JPY_PARENT_PID."""
    env = {**os.environ, "JPY_PARENT_PID": str(launcher)}
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"], cwd=cwd, env=env)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="kernels are found through /proc")
def test_a_rerun_waits_for_the_kernel_a_killed_run_left_and_only_for_it(tmp_path):
    """A kill of analyze leaves its kernel (own session) running for seconds, still writing; the rerun
    waits for it. A kernel whose launcher lives (another stage's, a JupyterLab's) is not waited for."""
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    (run := tmp_path / "run").mkdir()
    (elsewhere := tmp_path / "elsewhere").mkdir()
    orphan = _fake_kernel(run, dead, 1.5)
    owned = _fake_kernel(run, os.getpid(), 30)  # its launcher (this test) is alive
    stray = _fake_kernel(elsewhere, dead, 30)  # another run folder's
    try:
        time.sleep(0.3)  # the children have exec'd
        assert kernels.orphaned_kernels(run) == [orphan.pid]
        t0 = time.monotonic()
        assert kernels.wait_for_orphaned_kernels(run, timeout_s=20) == [orphan.pid]
        assert orphan.poll() is not None or time.monotonic() - t0 >= 1.0  # it waited for the exit
        assert kernels.orphaned_kernels(run) == []
        assert kernels.orphaned_kernels(elsewhere) == [stray.pid]
        with pytest.raises(SilentzoneError, match=rf"kernel\(s\) {stray.pid} of a killed earlier run .*kill -9 {stray.pid}") as e:
            kernels.wait_for_orphaned_kernels(elsewhere, grace_s=10, timeout_s=0.2)
        assert "\n" not in str(e.value)
        # past the grace, a kernel that does not end on its own is killed (nobody can reach it)
        assert kernels.wait_for_orphaned_kernels(elsewhere, grace_s=0.2, timeout_s=20) == [stray.pid]
        assert stray.wait(timeout=5) == -signal.SIGKILL
        assert owned.poll() is None  # a kernel whose launcher lives is left alone
    finally:
        for p in (orphan, owned, stray):
            p.kill()
            p.wait()


def test_an_executed_notebook_has_the_same_bytes_however_its_kernel_chunked_the_output(tmp_path):
    """The kernel flushes printed text on a timer: under load one cell's prints arrive as several
    stream outputs (the lesson's, in 1 of 5 runs beside busy loops), which changed the notebook's bytes."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    def notebook(*outputs):
        cells = [new_code_cell("print(1)", outputs=list(outputs), id="printing"), new_code_cell("x = 1", id="silent")]
        return new_notebook(cells=cells)

    whole = notebook(
        new_output("stream", name="stdout", text="a\nb\nc\n"),
        new_output("stream", name="stderr", text="warning\n"),
        new_output("display_data", data={"text/plain": "1"}),
        new_output("stream", name="stdout", text="d\n"),
    )
    chunked = notebook(
        new_output("stream", name="stdout", text="a\n"),
        new_output("stream", name="stdout", text="b\n"),
        new_output("stream", name="stdout", text="c\n"),
        new_output("stream", name="stderr", text="warning\n"),
        new_output("display_data", data={"text/plain": "1"}),
        new_output("stream", name="stdout", text="d\n"),
    )
    nbformat.write(whole, tmp_path / "whole.ipynb")
    nbformat.write(chunked, tmp_path / "chunked.ipynb")
    before = (tmp_path / "whole.ipynb").read_bytes()
    assert not kernels.coalesce_streams(tmp_path / "whole.ipynb")  # nothing to join: not rewritten
    assert (tmp_path / "whole.ipynb").read_bytes() == before
    assert kernels.coalesce_streams(tmp_path / "chunked.ipynb")
    assert (tmp_path / "chunked.ipynb").read_bytes() == before  # stderr and a display between keep their places


# ----------------------------------------------------------------------------- a real small disk


def _mount_tmpfs(path: Path, size_kb: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True)
    return proc.returncode == 0


def test_a_real_full_disk_and_a_read_only_mount(base, tmp_path, lone):
    """The run folder on a tmpfs too small for the fidelity stage, then remounted larger, then read-only."""
    disk = tmp_path / "disk"
    used = sum(p.stat().st_size for p in base.rglob("*") if p.is_file() and not p.is_symlink())
    if not _mount_tmpfs(disk, used // 1024 + 4096):
        pytest.skip("mounting a tmpfs is not permitted here (needs root in a privileged container)")
    try:
        shutil.copytree(base, disk / "run", symlinks=True)
        run = disk / "run"
        before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and not p.is_symlink()}
        cache_kb = 0
        while True:  # fill the disk until what is left is less than the quant cache and the outputs need
            filler = disk / f"fill{cache_kb}"
            try:
                filler.write_bytes(b"\0" * (64 << 10))
                cache_kb += 64
            except OSError:
                filler.unlink(missing_ok=True)
                break
        full = subprocess.run([SILENTZONE, "fidelity", QUANT], cwd=run, capture_output=True, text=True, env=QUIET)
        line = _one_line(full.stderr, "fidelity", warnings_before=True)  # "quant not cached (disk full …)" may come first
        assert full.returncode == 2 and "disk full while writing " in line
        assert line.endswith("and rerun — nothing was lost (files written before are whole; the rerun resumes)")
        assert _temps(run) == []
        assert all(p.read_bytes() == data for p, data in before.items())  # nothing already written was touched
        for filler in disk.glob("fill*"):
            filler.unlink()
        rerun = subprocess.run([SILENTZONE, "fidelity", QUANT], cwd=run, capture_output=True, text=True, env=QUIET)
        assert rerun.returncode == 0, rerun.stderr
        assert {p: (run / p).read_bytes() for p in _fidelity_outputs()} == lone
        assert subprocess.run(["mount", "-o", "remount,ro", str(disk)], capture_output=True).returncode == 0
        ro = subprocess.run([SILENTZONE, "collect"], cwd=run, capture_output=True, text=True, env=QUIET)
        line = _one_line(ro.stderr, "collect")
        assert ro.returncode == 2 and "is on a read-only file system; make it writable (or run in a writable copy)" in line
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
