"""Fault injection: every stage killed with SIGKILL while it writes, rerun, and compared byte for byte
with an uninterrupted run of the same code.

    .venv/bin/python benchmarks/fault_injection.py [--kills 5] [--seed S] [--clean DIR] [--work DIR] [--stages …]
        [--retry N] [--no-calibration]

The stages: prepare, reference, fidelity (a seeded quant), bench (the reference or a seeded quant),
collect, analyze (a seeded notebook), paper inputs — the tiny profile, in scratch folders. First an
uninterrupted run of the whole pipeline (`--clean DIR` reuses a finished tiny run instead, e.g. the
tests' `dvc repro paper-inputs`). Then, per stage:

  calibration  the stage alone, uninterrupted, in a copy of the clean run with its outputs removed
               (what `dvc repro` does before it runs a stage), while its output folders are polled
               every millisecond: when it first writes (a temp file, a resume part, an output) and
               when it last changes anything. Its outputs must equal the clean run's.
  each kill    a fresh copy, outputs removed; the stage started in its own session; polled until it
               has made a seeded number of changes, 1 … (changes of the uninterrupted run − 1), so
               that at least one write is still to come; then SIGKILL to its whole process group
               (papermill's kernel too). The state left is
               classified: *mid-write* when a temp file, a resume part or a missing or different output
               is left (the kill landed while the stage was writing), *after* when every output is
               already the clean run's. Then the same command is rerun to completion and every output
               compared with the clean run's byte for byte (executed notebooks without papermill's
               timestamps); no temp file may remain anywhere under data/, results/ or paper/.

The polls aim the kills, the classification counts where they landed: a stage that writes all its
outputs within a few milliseconds may finish between the poll that saw a change and the kill (the
report says how often). --retry N draws a kill again, up to N times, when it landed after the stage
had written everything; --no-calibration skips the uninterrupted run per stage and kills at one of
the first three changes (tests/test_fault_injection.py: one kill per stage, --retry 3).
Prints one line per kill and a summary per stage; writes benchmarks/out/fault_injection.json. Exit
status 1 if any rerun failed or differed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ("prepare", "reference", "fidelity", "bench", "collect", "analyze", "paper-inputs")
NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb"))
# the temp names silentzone.io gives (`.<name>.<pid>.<random>.tmp<suffix>`), and any other `*.tmp*` a writer may leave
TEMP = re.compile(r"^\..+\.tmp(\.[^.]+)?$|\.tmp$")
SCANNED = ("data", "results", "paper")  # where no temp may remain after a rerun
POLL_S = 0.001
STAGE_NICE = 5  # the stage runs this much nicer than the script that polls and kills it
QUICK_CHANGES = 3  # --no-calibration: kill at the 1st, 2nd or 3rd change seen


@dataclass
class Job:
    """One stage command and what it writes (paths relative to the run folder)."""

    stage: str
    argv: list[str]
    outputs: list[str]  # compared with the clean run's, file by file
    watch: list[str]  # folders polled for its first write
    wipe: list[str] = field(default_factory=list)  # removed before it runs, besides the outputs (resume parts, caches)


def jobs_for(stage: str, rng: np.random.Generator, quants: list[str]) -> Job:
    """The stage's command; fidelity, bench and analyze take a seeded quant, model or notebook."""
    if stage == "prepare":
        return Job(stage, ["prepare"], ["data/prepared"], ["data/prepared"])
    if stage == "reference":
        return Job(stage, ["reference"], ["data/reference/head", "data/reference/fidelity"], ["data/reference"])
    if stage == "fidelity":
        q = str(rng.choice(quants))
        out = [f"data/fidelity/{q}.parquet", f"data/fidelity/{q}.report.json"]
        return Job(stage, ["fidelity", q], out, ["data/fidelity", "data/models"], [f"data/fidelity/.parts/{q}", "data/models"])
    if stage == "bench":
        m = str(rng.choice(["reference", *quants]))
        out = [f"data/bench/{m}.parquet", f"data/bench/{m}.stamp.json", f"data/bench/.parts/{m}"]
        if m == "reference":
            out.append("data/reference/bench")
        return Job(stage, ["bench", m], out, ["data/bench", "data/reference", "data/models"], ["data/models"])
    if stage == "collect":
        return Job(stage, ["collect"], ["data/processed"], ["data/processed"])
    if stage == "analyze":
        nb = str(rng.choice(NOTEBOOKS))
        out = [f"results/notebooks/{nb}.ipynb", f"results/figures/{nb}", f"results/tables/{nb}", f"results/numbers/{nb}.json"]
        return Job(stage, ["analyze", nb], out, ["results"])
    if stage == "paper-inputs":
        out = ["paper/_variables.yml", "paper/figures", "paper/tables", "paper/notebooks"]
        return Job(stage, ["paper", "inputs"], out, ["paper"])
    raise SystemExit(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")


# ------------------------------------------------------------------------------ the clean run


def setup_run(root: Path) -> None:
    """A run folder shaped like a clean checkout (as tests/conftest.py's tiny_pipeline), profile tiny."""
    skip = shutil.ignore_patterns("_output", "_variables.yml", "figures", "tables", "notebooks", "published", ".quarto")
    for name in ["notebooks", "paper", "data/external"]:
        shutil.copytree(REPO / name, root / name, ignore=skip if name == "paper" else None)
    for committed in sorted((REPO / "data" / "published").glob("*/_variables.yml")):
        dst = root / "data" / "published" / committed.parent.name / committed.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(committed, dst)
    (root / "profiles").symlink_to(REPO / "profiles")
    silentzone(root, ["profile", "tiny"])


def pipeline(quants: list[str]) -> list[list[str]]:
    return [
        ["prepare"],
        ["reference"],
        *(["fidelity", q] for q in quants),
        ["bench", "reference"],
        *(["bench", q] for q in quants),
        ["collect"],
        *(["analyze", nb] for nb in NOTEBOOKS),
        ["paper", "inputs"],
    ]


def silentzone(root: Path, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "silentzone"), *argv], cwd=root, env=_env(), capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        raise SystemExit(f"{root}: silentzone {' '.join(argv)} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def _env() -> dict:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}


def cohort_of(root: Path) -> list[str]:
    import yaml

    return list(yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))["cohort"])


# ------------------------------------------------------------------------------ state and comparison


def files_under(root: Path, rel: str) -> dict[str, Path]:
    """{path relative to root: path} of every file at or under `rel`."""
    path = root / rel
    if path.is_file():
        return {rel: path}
    if not path.is_dir():
        return {}
    return {str(p.relative_to(root)): p for p in sorted(path.rglob("*")) if p.is_file()}


def content(path: Path) -> bytes:
    """A file's bytes; an executed notebook without the timestamps papermill stamps on each run."""
    data = path.read_bytes()
    if path.suffix != ".ipynb":
        return data
    try:
        nb = json.loads(data)
    except ValueError:  # not a whole notebook (a copy cut short): its bytes, which differ
        return data
    nb.get("metadata", {}).pop("papermill", None)
    for cell in nb.get("cells", []):
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
        if "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            cell.pop("id", None)  # papermill gives the cell it injects a random id on every run
    return json.dumps(nb, sort_keys=True).encode()


def compare(job: Job, run: Path, clean: Path) -> list[str]:
    """How the run's outputs differ from the clean run's (empty: byte-identical)."""
    diffs = []
    for rel in job.outputs:
        got, want = files_under(run, rel), files_under(clean, rel)
        for name in sorted(want.keys() - got.keys()):
            diffs.append(f"missing {name}")
        for name in sorted(got.keys() - want.keys()):
            diffs.append(f"extra {name}")
        for name in sorted(got.keys() & want.keys()):
            if content(got[name]) != content(want[name]):
                diffs.append(f"differs {name}")
    return diffs


def temps(root: Path, folders=SCANNED) -> list[str]:
    found = []
    for folder in folders:
        base = root / folder
        if base.is_dir():
            found += [str(p.relative_to(root)) for p in base.rglob("*") if TEMP.search(p.name)]
    return sorted(found)


def state(root: Path, folders: list[str]) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every entry under the watched folders: a change is a write."""
    out = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(root / folder):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except FileNotFoundError:  # renamed or removed while we looked
                    continue
                out[path] = (st.st_mtime_ns, st.st_size)
    return out


def fresh_copy(clean: Path, dest: Path, job: Job) -> None:
    """The clean run with the job's outputs (and resume parts, caches) removed, as `dvc repro` leaves it."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(clean, dest, symlinks=True, ignore=shutil.ignore_patterns(".silentzone", ".dvc", "_output"))
    for rel in [*job.outputs, *job.wipe]:
        path = dest / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def start(run: Path, job: Job) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "silentzone"), *job.argv],
        cwd=run,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the kill reaches papermill's kernel too
        # below the poller's priority: on a busy machine the poll that sees a change runs, and kills, at once
        preexec_fn=lambda: os.nice(STAGE_NICE),
    )


def nth_write(proc: subprocess.Popen, run: Path, job: Job, before: dict, n: int) -> tuple[int, float | None]:
    """Poll until the job has changed its watched folders `n` times (a poll that sees any change counts
    once): (changes seen, seconds to the first). Returns early when it exits."""
    t0, seen, first, last = time.perf_counter(), 0, None, before
    while proc.poll() is None:
        now = state(run, job.watch)
        if now != last:
            seen, last = seen + 1, now
            first = time.perf_counter() - t0 if first is None else first
            if seen >= n:
                break
        time.sleep(POLL_S)
    return seen, first


# ------------------------------------------------------------------------------ calibration and kills


def calibrate(job: Job, clean: Path, scratch: Path) -> dict:
    """The job uninterrupted: its write window (first write to last change) and its outputs' identity."""
    run = scratch / f"calibrate-{job.stage}"
    fresh_copy(clean, run, job)
    before = state(run, job.watch)
    t0 = time.perf_counter()
    proc = start(run, job)
    first = last = None
    seen, changes = before, 0
    while proc.poll() is None:
        now = state(run, job.watch)
        if now != seen:
            t = time.perf_counter() - t0
            first = t if first is None else first
            last, seen, changes = t, now, changes + 1
        time.sleep(POLL_S)
    wall = time.perf_counter() - t0
    if state(run, job.watch) != seen:  # its last writes landed between the last poll and its exit
        first = wall if first is None else first
        last, changes = wall, changes + 1
    err = proc.stderr.read()
    if proc.returncode != 0:
        raise SystemExit(f"calibration of {' '.join(job.argv)} failed (rc {proc.returncode}):\n{err[-3000:]}")
    diffs = compare(job, run, clean)
    shutil.rmtree(run)
    return {
        "wall_s": wall,
        "first_write_s": first,
        "window_s": max((last or wall) - (first or 0.0), 0.001),
        "changes": changes,
        "diffs": diffs,
    }


@dataclass
class Kill:
    stage: str
    command: str
    at_change: int  # killed as soon as the polls had seen this many changes in its output folders
    changes_seen: int
    first_write_s: float | None
    landed: str  # mid-write | after | before-exit (the stage ended before its first write was seen)
    evidence: str
    rerun_rc: int
    rerun_s: float
    identical: bool
    diffs: list[str]


def kill_once(job: Job, clean: Path, run: Path, at_change: int) -> Kill:
    fresh_copy(clean, run, job)
    before = state(run, job.watch)
    proc = start(run, job)
    seen, first = nth_write(proc, run, job, before, at_change)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    proc.stderr.close()
    left_temps = temps(run)
    parts = [str(p.relative_to(run)) for p in run.glob("data/fidelity/.parts/*") if p.is_dir() and any(p.iterdir())]
    pending = compare(job, run, clean)
    if left_temps or pending or parts:
        landed = "mid-write"
        bits = [
            f"{len(left_temps)} temp(s)" if left_temps else "",
            f"{len(pending)} output file(s) missing or partial" if pending else "",
        ]
        bits.append(f"resume parts in {', '.join(parts)}" if parts else "")
        evidence = "; ".join(b for b in bits if b)
    elif first is None:
        landed, evidence = "after", "the stage ended before a poll saw a write"
    else:
        landed, evidence = "after", "every output already written"
    t0 = time.perf_counter()
    rerun = subprocess.run([str(BIN / "silentzone"), *job.argv], cwd=run, env=_env(), capture_output=True, text=True)
    rerun_s = time.perf_counter() - t0
    diffs = compare(job, run, clean) + [f"temp left {t}" for t in temps(run)]
    if rerun.returncode != 0:
        diffs.insert(0, f"rerun failed (rc {rerun.returncode}): {rerun.stderr.strip().splitlines()[-1:] or ''}")
    if "Traceback" in rerun.stderr:
        diffs.insert(0, "rerun printed a traceback")
    ok = not diffs and rerun.returncode == 0
    return Kill(job.stage, " ".join(job.argv), at_change, seen, first, landed, evidence, rerun.returncode, rerun_s, ok, diffs)


# ------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=5, help="kills per stage (default 5)")
    ap.add_argument("--seed", type=int, default=20260619, help="seeds the quants, notebooks and kill delays drawn")
    ap.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    ap.add_argument("--clean", type=Path, help="a finished tiny run to compare with (default: made in --work)")
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "fault-injection", help="scratch folder")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "fault_injection.json")
    ap.add_argument(
        "--no-calibration",
        action="store_true",
        help=f"skip the uninterrupted run per stage; kill at one of the first {QUICK_CHANGES} changes (the CI-sized test)",
    )
    ap.add_argument(
        "--retry",
        type=int,
        default=0,
        help="a kill that landed after the stage had written everything is drawn again, up to N times",
    )
    args = ap.parse_args(argv)

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    clean = args.clean.resolve() if args.clean else work / "clean"
    clean_s = None
    if args.clean is None:
        if clean.exists():
            shutil.rmtree(clean)
        clean.mkdir()
        setup_run(clean)
        t0 = time.perf_counter()
        for cmd in pipeline(cohort_of(clean)):
            silentzone(clean, cmd)
        clean_s = time.perf_counter() - t0
        print(f"clean run: {clean_s:.1f} s ({clean})", flush=True)
    quants = cohort_of(clean)

    report = {"seed": args.seed, "kills_per_stage": args.kills, "clean_run_s": clean_s, "loadavg": _loadavg(), "stages": {}}
    kills: list[Kill] = []
    for stage in args.stages:
        if args.no_calibration:
            calibration = {"changes": QUICK_CHANGES + 1, "diffs": [], "skipped": True}
        else:
            calibration = calibrate(jobs_for(stage, np.random.default_rng(args.seed), quants), clean, work)
            print(
                f"{stage}: calibration {calibration['wall_s']:.1f} s, first write at {calibration['first_write_s'] or 0:.3f} s, "
                f"write window {calibration['window_s']:.3f} s with {calibration['changes']} changes seen, "
                f"uninterrupted run identical: {not calibration['diffs']}",
                flush=True,
            )
        mine = []
        for i in range(args.kills):
            for attempt in range(args.retry + 1):
                job = jobs_for(stage, rng, quants)
                at = int(rng.integers(1, max(2, calibration["changes"])))  # 1 … changes−1: at least one write still to come
                k = kill_once(job, clean, work / f"kill-{stage}-{i}", at)
                shutil.rmtree(work / f"kill-{stage}-{i}")
                mine.append(k)
                print(
                    f"  kill {i + 1}{'' if not attempt else f' (again, {attempt})'}: {k.command:<30} at change {k.at_change:>3} "
                    f"of ~{calibration['changes']} -> {k.landed:<9} ({k.evidence}); rerun {k.rerun_s:.1f} s, "
                    f"{'byte-identical' if k.identical else 'DIFFERS: ' + '; '.join(k.diffs[:4])}",
                    flush=True,
                )
                if k.landed == "mid-write":
                    break
        kills += mine
        report["stages"][stage] = {
            "calibration": calibration,
            "kills": len(mine),
            "mid_write": sum(k.landed == "mid-write" for k in mine),
            "after": sum(k.landed == "after" for k in mine),
            "identical": sum(k.identical for k in mine),
        }
    report["kills"] = [asdict(k) for k in kills]
    print("\nstage          kills  mid-write  after  reruns byte-identical")
    for stage, s in report["stages"].items():
        print(f"{stage:<14} {s['kills']:>5}  {s['mid_write']:>9}  {s['after']:>5}  {s['identical']:>5} of {s['kills']}")
    total = len(kills)
    mid = sum(k.landed == "mid-write" for k in kills)
    same = sum(k.identical for k in kills)
    calib_ok = all(not s["calibration"]["diffs"] for s in report["stages"].values())
    print(f"total: {total} kills, {mid} mid-write, {same} reruns byte-identical; uninterrupted reruns identical: {calib_ok}")
    print(f"load average: {report['loadavg']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return 0 if same == total and calib_ok else 1


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


if __name__ == "__main__":
    sys.exit(main())
