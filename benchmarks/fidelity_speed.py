"""Speed and memory of the fidelity stage: SmolLM2-135M, ctx 512, `--threads` torch threads.

Reports, for one quant against a wiki reference store of `--windows` windows:
  tokens/s         processed window tokens (windows x 512) per second of the fidelity stage's work
                   (quant forward + reference head + per-token metrics), excluding model load
  forward tokens/s the quant's plain forward pass (full logits, no metrics) on the same windows
  peak RSS         of the process running the fidelity stage (model load included), in a fresh
                   child process so the reference build does not count
  matmul GFLOP/s   fp32 (2048 x 2048) @ (2048 x 2048) on the same threads, to compare machines

Usage: .venv/bin/python benchmarks/fidelity_speed.py [--windows 4] [--quant q8_0] [--threads 2]
The reference store is built once under --workdir (default benchmarks/out/fidelity_speed, git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def bench_params(windows: int, threads: int):
    from silentzone import config

    raw = config.build_profile("default", REPO / "profiles")
    raw["threads"] = threads
    raw["corpora"] = {"wiki": raw["corpora"]["wiki"]}
    raw["cohort"] = {q: r for q, r in raw["cohort"].items() if not (isinstance(r, dict) and r.get("imatrix"))}
    raw["fidelity"] = {**raw["fidelity"], "corpora": ["wiki"], "n_windows": windows, "ctx_alt": 512}  # = ctx: no second store
    raw["variants"] = {"kld_mean": {"metric": "kld", "agg": "mean"}}
    return config.validate(raw, "params.yaml (benchmark)")


def build_store(params, workdir: Path) -> None:
    from silentzone import refstore
    from silentzone.layout import Layout
    from silentzone.model import load_reference
    from silentzone.stages import prepare, reference

    layout = Layout(workdir)
    folder = refstore.fidelity_dir(layout.reference, "wiki", 512)
    if folder.exists() and refstore.read_manifest(folder, "rebuild", verify=False)["n"] == params.fidelity.n_windows:
        return
    model, tokenizer = load_reference(params, cache_dir=REPO / "data" / "models")
    prepare.run(params, layout)
    reference.run(params, layout, model, tokenizer)


def matmul_gflops(threads: int, n: int = 2048, repeats: int = 5) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def child(args) -> dict:
    """The fidelity stage's work on every window of the store, timed; runs in a fresh process."""
    import torch

    from silentzone import refstore
    from silentzone.quant.load import load_quant
    from silentzone.stages import fidelity

    params = bench_params(args.windows, args.threads)
    torch.set_num_threads(args.threads)
    model, tokenizer, report = load_quant(params, args.quant, cache_dir=REPO / "data" / "models")
    reference_root = args.workdir / "data" / "reference"
    head = refstore.read_head(reference_root)
    head.check_vocab(args.quant, model, tokenizer)
    ref = refstore.open_fidelity(reference_root, "wiki", 512)
    tokens_all = ref.windows()
    n = len(ref)
    fidelity.window_batch_metrics(args.quant, model, head, ref, [0], params)  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    frames = [fidelity.window_batch_metrics(args.quant, model, head, ref, [w], params) for w in range(n)]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    with torch.inference_mode():
        f_wall, f_cpu = time.perf_counter(), time.process_time()
        for w in range(n):
            model(torch.from_numpy(tokens_all[w : w + 1]))
        f_wall, f_cpu = time.perf_counter() - f_wall, time.process_time() - f_cpu
    del frames
    tokens = n * 512
    return {
        "quant": args.quant,
        "bpw": report["bpw"],
        "windows": n,
        "tokens_per_s": tokens / wall,
        "forward_tokens_per_s": tokens / f_wall,
        # CPU seconds of all threads: less sensitive to other processes than wall time; on an idle
        # machine tokens_per_s ≈ threads x tokens_per_cpu_s when the threads are kept busy
        "tokens_per_cpu_s": tokens / cpu,
        "forward_tokens_per_cpu_s": tokens / f_cpu,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--quant", default="q8_0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "out" / "fidelity_speed")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    build_store(bench_params(args.windows, args.threads), args.workdir)
    cmd = [sys.executable, __file__, "--child", "--windows", str(args.windows), "--quant", args.quant, "--threads", str(args.threads), "--workdir", str(args.workdir)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["matmul_gflops"] = matmul_gflops(args.threads)
    result["threads"] = args.threads
    result["load_average_1min"] = os.getloadavg()[0]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
