"""Speed and memory of the fidelity stage: SmolLM2-135M, ctx 512, `--threads` torch threads.

Reports, for one quant against a wiki reference store of `--windows` windows, each as [min, median,
max] over `--rounds` rounds that alternate the three passes (A B C A B C ...):
  fidelity_tokens_per_s        processed window tokens (windows x 512) per second of the fidelity
                               stage's work (quant forward + both heads + per-token metrics), excluding model load
  forward_full_tokens_per_s    the quant's plain forward pass, model(ids): decoder + lm_head on every position
  forward_scored_tokens_per_s  the decoder + the quant's lm_head on the scored positions only
  fidelity_fraction_of_*       forward wall / fidelity wall per round: the share of the forward
                               pass's speed the fidelity stage keeps (1.0 = as fast as the plain forward)
  peak_rss_gib                 of the process running the stage (model load included), in a fresh
                               child process so the reference build does not count
  matmul_gflops                fp32 (2048 x 2048) @ (2048 x 2048) on the same threads, before and after
  load_avg                     1-minute load average before and after

The last line is one JSON object.
Usage: .venv/bin/python benchmarks/fidelity_speed.py [--windows 4] [--quant q8_0] [--threads 2] [--rounds 3]
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
    # members whose importance matrix reads a corpus dropped above would not validate
    raw["cohort"] = {k: v for k, v in raw["cohort"].items() if not (isinstance(v, dict) and v.get("imatrix"))}
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
    """The fidelity stage's work on every window of the store, timed against plain forward passes on
    the same windows, alternating (A B C A B C ...) for `--rounds` rounds; runs in a fresh process."""
    import statistics

    import torch

    from silentzone import refstore
    from silentzone.model import head as lm
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
    n, first = len(ref), ref.first(0)

    def fidelity_pass():
        for w in range(n):
            fidelity.window_batch_metrics(args.quant, model, head, ref, [w], params)

    def forward_full():  # model(ids): the decoder and the lm_head on every position (what a plain forward computes)
        for w in range(n):
            model(torch.from_numpy(tokens_all[w : w + 1]))

    def forward_scored():  # the decoder and the quant's own lm_head on the scored positions only (the least work giving its logits)
        for w in range(n):
            hidden = lm.final_hidden(model, torch.from_numpy(tokens_all[w : w + 1]))[0, first:-1]
            lm.lm_logits(model, hidden, lm.softcap_of(model))

    passes = {"fidelity": fidelity_pass, "forward_full": forward_full, "forward_scored": forward_scored}
    walls = {k: [] for k in passes}
    cpus = {k: [] for k in passes}
    with torch.inference_mode():
        fidelity.window_batch_metrics(args.quant, model, head, ref, [0], params)  # warm-up
        model(torch.from_numpy(tokens_all[:1]))
        for _ in range(args.rounds):
            for name, run in passes.items():
                wall, cpu = time.perf_counter(), time.process_time()
                run()
                walls[name].append(time.perf_counter() - wall)
                cpus[name].append(time.process_time() - cpu)
    tokens = n * 512
    out = {"quant": args.quant, "bpw": report["bpw"], "windows": n, "rounds": args.rounds}
    for name in passes:
        rates = [tokens / w for w in walls[name]]
        out[f"{name}_tokens_per_s"] = [round(min(rates), 1), round(statistics.median(rates), 1), round(max(rates), 1)]
        # CPU seconds of all threads: less sensitive to other processes than wall time
        out[f"{name}_tokens_per_cpu_s"] = round(tokens / statistics.median(cpus[name]), 1)
    for base in ("forward_full", "forward_scored"):  # per round (the two ran back to back), then min/median/max
        fractions = [b / f for f, b in zip(walls["fidelity"], walls[base])]
        out[f"fidelity_fraction_of_{base}"] = [
            round(min(fractions), 3),
            round(statistics.median(fractions), 3),
            round(max(fractions), 3),
        ]
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--quant", default="q8_0")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / "out" / "fidelity_speed")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    build_store(bench_params(args.windows, args.threads), args.workdir)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--windows",
        str(args.windows),
        "--quant",
        args.quant,
        "--threads",
        str(args.threads),
        "--rounds",
        str(args.rounds),
        "--workdir",
        str(args.workdir),
    ]
    load_start, gflops_before = os.getloadavg()[0], matmul_gflops(args.threads)
    out = subprocess.run(
        cmd, check=True, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["matmul_gflops"] = [round(gflops_before, 1), round(matmul_gflops(args.threads), 1)]  # before and after the child
    result["threads"] = args.threads
    result["load_avg"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
