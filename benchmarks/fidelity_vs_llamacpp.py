"""Wall time of our fidelity path against `llama-perplexity --kl-divergence`, same model, tokens, threads.

    .venv/bin/python benchmarks/fidelity_vs_llamacpp.py [--rounds 5] [--windows 8] [--threads 2]

One quant, Q8_0, scored against a stored reference over the first `--windows` windows of 512 tokens
of the wiki corpus (the second half of each window, as llama.cpp scores):

  ours      `silentzone fidelity q8_0` in a run folder made with `silentzone profile default`,
            `silentzone prepare` and `silentzone reference` (params narrowed to the wiki corpus at
            ctx 512, `--windows` windows, `--threads` torch threads). Recipe q8_0 holds the same
            weights, bit for bit, as llama-quantize's Q8_0 (tests/test_llamacpp.py checks this).
  llama.cpp `llama-perplexity -m <Q8_0 GGUF> --kl-divergence-base ref.kld --kl-divergence -t THREADS`,
            where ref.kld comes from the reference GGUF over the same text
            (`-f wiki.txt -c 512 --chunks WINDOWS --kl-divergence-base ref.kld`) and the Q8_0 GGUF
            from `llama-quantize` (its time is `quant_build_s`).

Both are whole processes, started the same way and timed from start to exit: interpreter/binary
start, model load, scoring, writing results. Ours runs once untimed first (it builds the quant's
cache, as llama-quantize's run is outside llama.cpp's wall), so its rounds read the cached quant. The CLI is run as a subprocess so this script does not
depend on the package's internal module names. Runs alternate (A B A B ...) so a change in machine
load hits both; OMP_WAIT_POLICY=PASSIVE for both. Peak RSS per process from wait4.

The last line printed is one JSON object: ratio_median, ratio_min, ratio_max (ratio = llama.cpp wall /
ours wall, > 1 means ours is faster; min/max over rounds), ours_rss_gib, llamacpp_rss_gib, load_avg
(1-minute, at start and end), quant_build_s, plus the raw walls, the seconds of ours spent in the
window loop (the rest is start-up, model load and quantization) and each side's mean KLD. Set-up files are kept under
--workdir (default benchmarks/out/fidelity_vs_llamacpp, git-ignored) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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


def env(threads: int) -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [e.get("PYTHONPATH")])])
    e["OMP_WAIT_POLICY"] = "PASSIVE"
    e["OMP_NUM_THREADS"] = str(threads)
    e.setdefault("TOKENIZERS_PARALLELISM", "false")
    return e


def silentzone_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "silentzone"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "silentzone.cli"]


def timed(cmd: list, cwd: Path, threads: int, log: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS GiB) of one process; its output goes to `log`; a failure stops the script."""
    with open(log, "w") as out:
        start = time.perf_counter()
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env(threads), stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise SystemExit(f"{cmd[0]} failed (exit {proc.returncode}), see {log}: {' | '.join(tail)}")
    return wall, usage.ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def setup_ours(run: Path, windows: int, threads: int) -> None:
    """A run folder whose reference store covers `windows` x 512 tokens of wiki, and nothing else."""
    params_file = run / "params.yaml"
    if (run / "data" / "reference" / "fidelity").exists() and params_file.exists():
        p = yaml.safe_load(params_file.read_text())
        if p["fidelity"]["n_windows"] == windows and p["threads"] == threads:
            return
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    shutil.copytree(REPO / "profiles", run / "profiles")
    cmd = silentzone_cmd()
    for args in (["profile", "default"],):
        subprocess.run([*cmd, *args], cwd=run, env=env(threads), check=True, capture_output=True)
    p = yaml.safe_load(params_file.read_text())
    p["threads"] = threads
    p["corpora"] = {"wiki": p["corpora"]["wiki"]}
    # ctx_alt = ctx: a single store, the one llama-perplexity scores too.
    p["fidelity"].update(corpora=["wiki"], primary_corpus="wiki", n_windows=windows, ctx=CTX, ctx_alt=CTX)
    p["variants"] = {k: v for k, v in p["variants"].items() if "corpus" not in v and "ctx" not in v}
    p["cohort"] = {QUANT: "Q8_0"}
    params_file.write_text(yaml.safe_dump(p, sort_keys=False))
    for args in (["prepare"], ["reference"]):
        t0 = time.perf_counter()
        proc = subprocess.run([*cmd, *args], cwd=run, env=env(threads), capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"silentzone {args[0]} failed: {proc.stderr.strip().splitlines()[-1:]}")
        print(f"setup: silentzone {args[0]} {time.perf_counter() - t0:.1f} s", flush=True)


def warm_up(ours_cmd: list, run: Path, threads: int, work: Path) -> None:
    """One untimed run of ours (as llama.cpp's set-up ran its tools once): it builds the quant's cache,
    as the first stage of a pipeline run does, so the timed rounds measure the stage as every later
    stage and rerun meets it. A reference store made by other code (stale) is rebuilt first."""
    log = work / "ours-warmup.log"
    try:
        timed(ours_cmd, run, threads, log)
    except SystemExit:
        if "stale" not in log.read_text(errors="replace"):
            raise
        t0 = time.perf_counter()
        subprocess.run([*silentzone_cmd(), "reference"], cwd=run, env=env(threads), check=True, capture_output=True)
        print(f"setup: silentzone reference (store was stale) {time.perf_counter() - t0:.1f} s", flush=True)
        timed(ours_cmd, run, threads, log)


def reference_gguf(run: Path) -> Path:
    """The reference GGUF named by the run's model.source (package:<module>/<file> or gguf:<path>)."""
    import importlib.util

    source = yaml.safe_load((run / "params.yaml").read_text())["model"]["source"]
    kind, _, rest = source.partition(":")
    if kind == "gguf":
        return Path(rest)
    if kind == "package":
        module, _, filename = rest.partition("/")
        spec = importlib.util.find_spec(module)  # find_spec: the package's __init__ never runs
        if spec and spec.submodule_search_locations:
            return Path(list(spec.submodule_search_locations)[0]) / filename
    raise SystemExit(f"model.source {source}: not a GGUF this benchmark can find; llama-perplexity needs one")


def setup_llamacpp(work: Path, run: Path, windows: int, threads: int) -> tuple[Path, float]:
    """(Q8_0 GGUF, seconds llama-quantize took to make it); ref.kld over the same text is built once."""
    ref = reference_gguf(run)
    corpus = run / "data" / "prepared" / "corpora" / "wiki.txt"
    base = work / f"ref-c{CTX}-w{windows}.kld"
    if not base.exists():
        t0 = time.perf_counter()
        tmp = base.with_suffix(".tmp.kld")
        timed(
            [
                llamacpp.find_tool("llama-perplexity"),
                "-m",
                ref,
                "-f",
                corpus,
                "-c",
                CTX,
                "--chunks",
                windows,
                "--kl-divergence-base",
                tmp,
                "-t",
                threads,
            ],
            work,
            threads,
            work / "ref.log",
        )
        tmp.rename(base)
        print(f"setup: llama-perplexity reference base {time.perf_counter() - t0:.1f} s", flush=True)
    q8 = work / "SmolLM2-135M-Instruct.Q8_0.gguf"
    report = llamacpp.quantize(ref, q8, "Q8_0", threads=threads)
    return q8, report["seconds"]


def ours_scoring_s(log: Path) -> float:
    """Seconds the fidelity stage's window loop took (its tqdm bar), i.e. the wall less start-up and model load."""
    bars = re.findall(r"fidelity \S+: 100%\|[^|]*\| \d+/\d+ \[(\d+):(\d+)<", log.read_text(errors="replace"))
    return 60 * int(bars[-1][0]) + int(bars[-1][1]) if bars else float("nan")


def mean_kld(log: Path, pattern: str) -> float:
    found = re.findall(pattern, log.read_text(errors="replace"))
    return float(found[-1]) if found else float("nan")


def summary(xs: list[float]) -> str:
    return f"{min(xs):8.2f} {statistics.median(xs):8.2f} {max(xs):8.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=str(REPO / "benchmarks" / "out" / "fidelity_vs_llamacpp"))
    args = ap.parse_args(argv)
    work = Path(args.workdir).resolve()
    run = work / "run"
    work.mkdir(parents=True, exist_ok=True)
    setup_ours(run, args.windows, args.threads)
    q8, quant_build_s = setup_llamacpp(work, run, args.windows, args.threads)
    base = work / f"ref-c{CTX}-w{args.windows}.kld"
    ours_cmd = [*silentzone_cmd(), "fidelity", QUANT]
    lc_cmd = [
        llamacpp.find_tool("llama-perplexity"),
        "-m",
        q8,
        "--kl-divergence-base",
        base,
        "--kl-divergence",
        "-t",
        args.threads,
    ]

    warm_up(ours_cmd, run, args.threads, work)
    load_start = os.getloadavg()[0]
    walls = {"ours": [], "llamacpp": []}
    rss = {"ours": [], "llamacpp": []}
    scoring = []
    for r in range(args.rounds):
        for name, cmd, cwd in (("ours", ours_cmd, run), ("llamacpp", lc_cmd, work)):
            wall, peak = timed(cmd, cwd, args.threads, work / f"{name}.log")
            walls[name].append(wall)
            rss[name].append(peak)
            if name == "ours":
                scoring.append(ours_scoring_s(work / "ours.log"))
            print(f"round {r + 1} {name:9s} {wall:7.2f} s  peak RSS {peak:.3f} GiB  load {os.getloadavg()[0]:.2f}", flush=True)
    load_end = os.getloadavg()[0]
    ratios = [lc / ours for lc, ours in zip(walls["llamacpp"], walls["ours"])]

    tokens = args.windows * CTX
    scored = args.windows * (CTX // 2 - 1)
    print(
        f"\nQ8_0 vs stored reference, {args.windows} windows x {CTX} tokens ({scored} scored), {args.threads} threads, {args.rounds} rounds"
    )
    print(f"{'':10s} {'min':>8s} {'median':>8s} {'max':>8s}   (wall s)   peak RSS GiB   window tokens/s (median)")
    for name in walls:
        print(
            f"{name:10s} {summary(walls[name])}              {max(rss[name]):.3f}         {tokens / statistics.median(walls[name]):.0f}"
        )
    print(f"{'ratio':10s} {summary(ratios)}   (llama.cpp wall / ours wall; > 1: ours faster)")
    print(
        f"ours, window loop only (tqdm, whole seconds): {summary(scoring)}; the rest of each wall is start-up, model load and quantization"
    )
    kld_ours = mean_kld(work / "ours.log", r"mean KLD ([0-9.eE+-]+)")
    kld_lc = mean_kld(work / "llamacpp.log", r"Mean\s+KLD:\s+([0-9.eE+-]+)")
    # Not the same quantity: llama.cpp's base is the Q4_1 GGUF on its own kernels, ours the fp32 dequantization (docs/fidelity.md).
    print(f"mean KLD of Q8_0: ours {kld_ours:.6f}, llama.cpp {kld_lc:.6f} (different bases, see docs/fidelity.md)")
    print(f"load average (1 min): {load_start:.2f} at start, {load_end:.2f} at end; llama-quantize Q8_0: {quant_build_s:.2f} s")
    result = {
        "ratio_median": round(statistics.median(ratios), 4),
        "ratio_min": round(min(ratios), 4),
        "ratio_max": round(max(ratios), 4),
        "ours_rss_gib": round(max(rss["ours"]), 3),
        "llamacpp_rss_gib": round(max(rss["llamacpp"]), 3),
        "load_avg": [round(load_start, 2), round(load_end, 2)],
        "quant_build_s": round(quant_build_s, 3),
        "ours_wall_s": [round(x, 3) for x in walls["ours"]],
        "llamacpp_wall_s": [round(x, 3) for x in walls["llamacpp"]],
        "ours_scoring_s": scoring,
        "kld_mean_ours": kld_ours if kld_ours == kld_ours else None,  # NaN is not JSON
        "kld_mean_llamacpp": kld_lc if kld_lc == kld_lc else None,
        "windows": args.windows,
        "threads": args.threads,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
