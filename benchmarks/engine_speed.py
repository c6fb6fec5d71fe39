"""The llama.cpp engine's speed, side by side with llama-perplexity and with the torch engine, in one run.

    .venv/bin/python benchmarks/engine_speed.py [--rounds 5] [--windows 8] [--items 200] [--threads 2]

Fidelity: `silentzone fidelity q8_0 --engine llamacpp` (start to parquet and report: interpreter start,
model load, scoring, 14 variants, writing) against `llama-perplexity -m <the same GGUF>
--kl-divergence-base ref.kld --kl-divergence` with the same settings (threads, -b/-ub = engine.llamacpp's
n_batch/n_ubatch, flash attention off, repacking as engine.llamacpp.repack), the same windows (the first
`--windows` x 512 tokens of the wiki corpus, the second half of each scored) and the same base model
(ref.kld from the reference F32 GGUF the engine's reference store was made from). The run folder's
fidelity scores wiki at ctx 512 only, so the 14 variants are the 11 single-corpus ones of
profiles/default.yaml plus rkld_mean, rkld_p99 and kld_topk_p99 in place of the three on other
corpora/ctx (llama-perplexity scores one corpus at one ctx).

Bench: `silentzone bench q8_0 --engine llamacpp` against `silentzone bench q8_0` (the torch engine) on
the same `--items` LAMBADA items, each from start to its item table (parts deleted before every round),
items/s = items / wall.

Runs alternate (A B A B ...) so a change in load hits both; OMP_WAIT_POLICY=PASSIVE for every process;
peak RSS per process from wait4. The last line printed is one JSON object: fidelity_ratio_median
(llama-perplexity wall / ours), bench_speedup_median (llama.cpp engine items/s / torch engine items/s),
ours_rss_gib, llamacpp_rss_gib, load_avg (1-minute, at start and end), with min/max and raw walls.
Set-up files live under --workdir (default benchmarks/out/engine_speed, git-ignored) and are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from silentzone.quant import llamacpp  # noqa: E402

CTX = 512
QUANT = "q8_0"
EXTRA_VARIANTS = {
    "rkld_mean": {"metric": "rkld", "agg": "mean"},
    "rkld_p99": {"metric": "rkld", "agg": "p99"},
    "kld_topk_p99": {"metric": "kld_topk", "agg": "p99"},
}


SRC = REPO / "src"  # set by main to the copy beside the run folder: edits to the checkout cannot make its stores stale


def env(threads: int) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [e.get("PYTHONPATH")])])
    e[llamacpp.ENV_BIN] = str(llamacpp.find_tool("llama-quantize").parent)  # the checkout's tools and libraries, not the copy's
    e["OMP_WAIT_POLICY"] = "PASSIVE"
    e["OMP_NUM_THREADS"] = str(threads)
    e.setdefault("TOKENIZERS_PARALLELISM", "false")
    return e


def silentzone_cmd() -> list[str]:
    return [sys.executable, "-m", "silentzone"]


def timed(cmd: list, cwd: Path, threads: int, log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS GiB) of one process; its output goes to `log`; a failure stops the script."""
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env(threads), stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise SystemExit(f"{cmd[0]} failed, see {log}: {' | '.join(tail)}")
    return wall, usage.ru_maxrss / 2**20


def run_silentzone(run: Path, args: list, threads: int, log: Path) -> None:
    t0 = time.perf_counter()
    timed([*silentzone_cmd(), *args], run, threads, log)
    print(f"setup: silentzone {' '.join(args)} {time.perf_counter() - t0:.1f} s", flush=True)


def code_digest(src: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    for f in sorted(src.rglob("*.py")):
        h.update(str(f.relative_to(src)).encode() + f.read_bytes())
    return h.hexdigest()


def setup(run: Path, windows: int, items: int, threads: int) -> dict:
    """A run folder: wiki at ctx 512 only, `windows` windows, LAMBADA `items` items, cohort {q8_0},
    torch as the run's engine and llama.cpp as a further one; every reference stage done. The code
    runs from a copy of src/ beside it (remade, with the stores, when the checkout's code changed)."""
    global SRC
    wanted = {"windows": windows, "items": items, "threads": threads, "code": code_digest(REPO / "src")}
    SRC = run.parent / "src"
    marker = run / "setup.json"
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return wanted
    for folder in (run, SRC):
        if folder.exists():
            shutil.rmtree(folder)
    shutil.copytree(REPO / "src", SRC, ignore=shutil.ignore_patterns("__pycache__"))
    run.mkdir(parents=True)
    shutil.copytree(REPO / "profiles", run / "profiles")
    subprocess.run([*silentzone_cmd(), "profile", "default"], cwd=run, env=env(threads), check=True, capture_output=True)
    p = yaml.safe_load((run / "params.yaml").read_text())
    p["threads"] = threads
    p["corpora"] = {"wiki": p["corpora"]["wiki"]}
    p["fidelity"].update(corpora=["wiki"], primary_corpus="wiki", n_windows=windows, ctx=CTX, ctx_alt=CTX)
    p["variants"] = {k: v for k, v in p["variants"].items() if "corpus" not in v and "ctx" not in v} | EXTRA_VARIANTS
    assert len(p["variants"]) == 14, p["variants"]
    p["cohort"] = {QUANT: "Q8_0"}
    p["bench"]["tasks"] = {"lambada": items}
    p["engine"].update(name="torch", also=["llamacpp"])
    (run / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    for args in (["prepare"], ["reference"], ["reference", "--engine", "llamacpp"], ["bench", "reference"]):
        run_silentzone(run, args, threads, run / "setup.log")
    run_silentzone(run, ["bench", "reference", "--engine", "llamacpp"], threads, run / "setup.log")
    marker.write_text(json.dumps(wanted))
    return wanted


def gguf_of(run: Path) -> tuple[Path, Path]:
    """(reference F32 GGUF, q8_0's GGUF) the llama.cpp engine made in the run folder."""
    cache = next((run / "data" / "models").glob("*/llamacpp"))
    ref = cache / "reference-F32.gguf"
    q8 = next(
        p
        for p in cache.glob("recipe-*.gguf")
        if json.loads(p.with_name(p.name + ".json").read_text())["recipe"]["default"] == "Q8_0"
    )
    return ref, q8


def llamacpp_flags(run: Path, threads: int) -> list:
    e = yaml.safe_load((run / "params.yaml").read_text())["engine"]["llamacpp"]
    flags = ["-t", threads, "-b", e["n_batch"], "-ub", e["n_ubatch"], "-fa", "on" if e["flash_attn"] else "off"]
    return flags + ([] if e["repack"] else ["--no-repack"])


def base_kld(work: Path, run: Path, ref: Path, windows: int, threads: int) -> Path:
    base = work / f"ref-c{CTX}-w{windows}.kld"
    if not base.exists():
        corpus = run / "data" / "prepared" / "corpora" / "wiki.txt"
        tmp = base.with_suffix(".tmp.kld")
        cmd = [llamacpp.find_tool("llama-perplexity"), "-m", ref, "-f", corpus, "-c", CTX, "--chunks", windows]
        timed([*cmd, "--kl-divergence-base", tmp, *llamacpp_flags(run, threads)], work, threads, work / "base.log")
        tmp.rename(base)
    return base


def spread(xs: list[float]) -> str:
    return f"{min(xs):8.2f} {statistics.median(xs):8.2f} {max(xs):8.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--items", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=str(REPO / "benchmarks" / "out" / "engine_speed"))
    args = ap.parse_args(argv)
    work = Path(args.workdir).resolve()
    run = work / "run"
    work.mkdir(parents=True, exist_ok=True)
    setup(run, args.windows, args.items, args.threads)
    engine_dir = run / "data" / "engines" / "llamacpp"
    ours = [*silentzone_cmd(), "fidelity", QUANT, "--engine", "llamacpp"]
    timed(ours, run, args.threads, work / "ours-warmup.log")  # builds the q8_0 GGUF once, as a pipeline's first stage does
    ref, q8 = gguf_of(run)
    base = base_kld(work, run, ref, args.windows, args.threads)
    lc = [
        llamacpp.find_tool("llama-perplexity"),
        "-m",
        q8,
        "--kl-divergence-base",
        base,
        "--kl-divergence",
        *llamacpp_flags(run, args.threads),
    ]
    bench = {
        "torch": [*silentzone_cmd(), "bench", QUANT],
        "llamacpp": [*silentzone_cmd(), "bench", QUANT, "--engine", "llamacpp"],
    }
    parts = {"torch": run / "data" / "bench" / ".parts" / QUANT, "llamacpp": engine_dir / "bench" / ".parts" / QUANT}

    load_start = os.getloadavg()
    walls = {k: [] for k in ("ours", "llama-perplexity", "bench-torch", "bench-llamacpp")}
    rss = {k: [] for k in walls}
    for r in range(args.rounds):
        jobs = [("ours", ours), ("llama-perplexity", lc)] + [(f"bench-{e}", bench[e]) for e in ("torch", "llamacpp")]
        for name, cmd in jobs:
            if name.startswith("bench-"):
                shutil.rmtree(parts[name.removeprefix("bench-")], ignore_errors=True)
            wall, peak = timed(cmd, work if name == "llama-perplexity" else run, args.threads, work / f"{name}.log")
            walls[name].append(wall)
            rss[name].append(peak)
            print(f"round {r + 1} {name:17s} {wall:7.2f} s  peak RSS {peak:.3f} GiB  load {os.getloadavg()[0]:.2f}", flush=True)
    load_end = os.getloadavg()
    ratios = [a / b for a, b in zip(walls["llama-perplexity"], walls["ours"])]
    speedups = [t / lc_ for t, lc_ in zip(walls["bench-torch"], walls["bench-llamacpp"])]  # items equal: wall ratio
    print(f"\n{args.windows} windows x {CTX} tokens, {args.items} LAMBADA items, {args.threads} threads, {args.rounds} rounds")
    print(f"{'':18s} {'min':>8s} {'median':>8s} {'max':>8s}   (wall s)   peak RSS GiB")
    for name in walls:
        print(f"{name:18s} {spread(walls[name])}              {max(rss[name]):.3f}")
    print(f"{'fidelity ratio':18s} {spread(ratios)}   (llama-perplexity wall / ours; >= 0.9 is the target)")
    print(f"{'bench speedup':18s} {spread(speedups)}   (llama.cpp engine items/s / torch engine items/s; >= 1.5 is the target)")
    print(f"load average (1, 5, 15 min): {[round(x, 2) for x in load_start]} at start, {[round(x, 2) for x in load_end]} at end")
    result = {
        "fidelity_ratio_median": round(statistics.median(ratios), 4),
        "fidelity_ratio_min": round(min(ratios), 4),
        "fidelity_ratio_max": round(max(ratios), 4),
        "bench_speedup_median": round(statistics.median(speedups), 4),
        "bench_speedup_min": round(min(speedups), 4),
        "bench_speedup_max": round(max(speedups), 4),
        "ours_rss_gib": round(max(rss["ours"]), 3),
        "llamacpp_rss_gib": round(max(rss["llama-perplexity"]), 3),
        "load_avg": [round(load_start[0], 2), round(load_end[0], 2)],
        "walls_s": {k: [round(x, 3) for x in v] for k, v in walls.items()},
        "items": args.items,
        "windows": args.windows,
        "threads": args.threads,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
