"""`dvc repro` in two checkouts that share one DVC cache, at the same time: both finish, their outputs
are byte-identical to a checkout with a cache of its own, and every object of the shared cache holds
what its name (its md5) says. Also: a second `dvc repro` in the *same* checkout is refused by DVC's
own repository lock, and the first finishes unharmed.

    .venv/bin/python benchmarks/dvc_shared_cache.py [--work DIR] [--target paper-inputs]

The checkouts are tiny-profile run folders shaped like tests/conftest.py's tiny_pipeline (code and
profiles linked, pipeline files copied). What this verifies is DVC's design: the cache is
content-addressed and DVC writes each object to a temp name and renames it into place, so two
writers of one object leave one whole object; each checkout's own lock (.dvc/tmp/lock) serialises
commands within it, and silentzone's locks (silentzone.lock) stop two commands computing one output.
Prints what it checked; writes benchmarks/out/dvc_shared_cache.json; exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OUTPUTS = ["data/prepared", "data/reference", "data/fidelity", "data/bench", "data/processed", "results", "paper/_variables.yml"]


def env() -> dict:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", "TQDM_DISABLE": "1"}


def dvc(*args: str, cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=env(), capture_output=True, text=True, **kwargs)


def checkout(root: Path, cache: Path | None) -> Path:
    """A tiny run folder with `dvc init`, and the shared cache when given."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    skip = shutil.ignore_patterns("_output", "_variables.yml", "figures", "tables", "notebooks", "published", ".quarto")
    for name in ["dvc.yaml", "notebooks", "paper", "data/external"]:
        src, dst = REPO / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=skip if name == "paper" else None)
        else:
            shutil.copy2(src, dst)
    for committed in sorted((REPO / "data" / "published").glob("*/_variables.yml")):
        dst = root / "data" / "published" / committed.parent.name / committed.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(committed, dst)
    (root / "profiles").symlink_to(REPO / "profiles")
    (root / "src").symlink_to(REPO / "src")
    subprocess.run([str(BIN / "silentzone"), "profile", "tiny"], cwd=root, check=True, capture_output=True)
    assert dvc("init", "--no-scm", "-q", cwd=root).returncode == 0
    if cache is not None:
        assert dvc("cache", "dir", str(cache), cwd=root).returncode == 0
    return root


def digests(root: Path) -> dict[str, str]:
    """sha256 of every output file (executed notebooks left out: papermill stamps them with times)."""
    out = {}
    for rel in OUTPUTS:
        path = root / rel
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in files:
            if p.suffix != ".ipynb" and "/.parts/" not in str(p):
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cache_objects_intact(cache: Path) -> tuple[int, list[str]]:
    """(objects checked, objects whose md5 is not their name): DVC 3 stores files/md5/<2>/<30>[.dir]."""
    bad, n = [], 0
    for p in sorted((cache / "files" / "md5").rglob("*")):
        if not p.is_file():
            continue
        n += 1
        name = p.parent.name + p.name.removesuffix(".dir")
        if hashlib.md5(p.read_bytes()).hexdigest() != name:
            bad.append(str(p.relative_to(cache)))
    return n, bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / "out" / "dvc-shared-cache")
    ap.add_argument("--target", default="paper-inputs", help="the dvc repro target (default: paper-inputs; paper needs Quarto)")
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "out" / "dvc_shared_cache.json")
    args = ap.parse_args(argv)
    work = args.work.resolve()
    shared = work / "shared-cache"
    if shared.exists():
        shutil.rmtree(shared)
    a, b = checkout(work / "a", shared), checkout(work / "b", shared)
    alone = checkout(work / "alone", None)
    report: dict = {"loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}

    t0 = time.perf_counter()
    procs = {
        name: subprocess.Popen(
            [str(BIN / "dvc"), "repro", args.target],
            cwd=root,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, root in (("a", a), ("b", b))
    }
    # meanwhile, a second `dvc repro` in checkout a: DVC's repository lock must refuse it
    time.sleep(5)
    second = dvc("repro", args.target, cwd=a)
    logs = {name: p.communicate()[0] for name, p in procs.items()}
    report["concurrent_repro_s"] = round(time.perf_counter() - t0, 1)
    report["rc"] = {name: p.returncode for name, p in procs.items()}
    said = [line for line in (second.stdout + second.stderr).strip().splitlines() if line.strip()]
    report["second_repro_in_a"] = {"rc": second.returncode, "says": [line for line in said if "ERROR" in line] or said[-1:]}
    print(f"two checkouts, one cache, `dvc repro {args.target}` at once: rc {report['rc']} in {report['concurrent_repro_s']} s")
    print(
        f"a second `dvc repro` in checkout a while its first ran: rc {second.returncode}: {report['second_repro_in_a']['says']}"
    )

    t0 = time.perf_counter()
    lone = dvc("repro", args.target, cwd=alone)
    report["alone_rc"], report["alone_s"] = lone.returncode, round(time.perf_counter() - t0, 1)
    da, db, dl = digests(a), digests(b), digests(alone)
    report["outputs"] = len(dl)
    report["a_equals_alone"] = da == dl
    report["b_equals_alone"] = db == dl
    n, bad = cache_objects_intact(shared)
    report["cache_objects"], report["cache_objects_bad"] = n, bad
    status = {name: dvc("status", args.target, cwd=root) for name, root in (("a", a), ("b", b))}
    report["status_clean"] = {name: s.returncode == 0 and "up to date" in s.stdout for name, s in status.items()}
    print(
        f"outputs byte-identical to a checkout with its own cache: a {report['a_equals_alone']}, b {report['b_equals_alone']} ({len(dl)} files)"
    )
    print(f"shared cache: {n} objects, {len(bad)} whose md5 is not their name; dvc status up to date: {report['status_clean']}")
    report["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average: start {report['loadavg_start']}, end {report['loadavg_end']}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if any(report["rc"].values()) or report["alone_rc"]:
        for name, log in logs.items():
            print(f"--- dvc repro in {name}:\n{log[-3000:]}")
    ok = (
        not any(report["rc"].values())
        and report["alone_rc"] == 0
        and second.returncode != 0
        and report["a_equals_alone"]
        and report["b_equals_alone"]
        and not bad
        and all(report["status_clean"].values())
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
