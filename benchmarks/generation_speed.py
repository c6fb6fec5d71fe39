"""Greedy generation speed of the code tasks (silentzone.bench.code.generate): tokens/s per model.

    .venv/bin/python benchmarks/generation_speed.py [--model tiny|q8_0|reference] [--items 8]
        [--max-new-tokens 160] [--batch 8] [--threads 2] [--rounds 3] [--save FILE] [--check FILE]

Runs `code.generate` on the first `--items` HumanEval problems (the profile's prompts: chat
template, ```python prefill) with the default profile's model (or the tiny model of the tiny
profile), `--rounds` times, and reports generated tokens per second (new tokens kept, i.e. up to
the closing fence or EOS, over the wall time of generate()) as min / median / max with the load
average. `--save` writes every item's new token ids as JSON; `--check` compares them with a saved
file and fails on any difference (the greedy tokens must not change with a speed-up).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def params_for(model: str, threads: int):
    from silentzone import config

    raw = config.build_profile("tiny" if model == "tiny" else "default", REPO / "profiles")
    raw["threads"] = threads
    if model != "tiny":
        raw["cohort"] = {"q8_0": "Q8_0"}
    return config.validate(raw, "params.yaml (benchmark)")


def load(model: str, params):
    if model == "tiny":
        from silentzone.model.load import build_tiny

        m, tok = build_tiny(params)
        return m.eval(), tok
    from silentzone.quant.load import load_quant

    m, tok, _ = load_quant(params, model, cache_dir=REPO / "data" / "models")
    return m.eval(), tok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="q8_0")
    ap.add_argument("--items", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--save")
    ap.add_argument("--check")
    args = ap.parse_args(argv)
    import torch

    from silentzone.bench import code
    from silentzone.data import items as bench_items

    torch.set_num_threads(args.threads)
    params = params_for(args.model, args.threads)
    model, tokenizer = load(args.model, params)
    problems = bench_items.load_task("humaneval")[: args.items]
    load_start = os.getloadavg()[0]
    rates, gens = [], None
    for r in range(args.rounds):
        start = time.perf_counter()
        gens = code.generate(model, tokenizer, problems, args.max_new_tokens, args.batch)
        wall = time.perf_counter() - start
        n = sum(len(g.new_ids) for g in gens)
        rates.append(n / wall)
        print(f"round {r + 1}: {n} tokens in {wall:.2f} s = {n / wall:.1f} tokens/s (load {os.getloadavg()[0]:.2f})", flush=True)
    outputs = {p["item_id"]: g.new_ids for p, g in zip(problems, gens)}
    if args.save:
        Path(args.save).write_text(json.dumps(outputs) + "\n")
    same = None
    if args.check:
        want = json.loads(Path(args.check).read_text())
        same = want == outputs
        if not same:
            bad = [k for k in want if want[k] != outputs.get(k)]
            print(f"DIFFERENT greedy tokens on {len(bad)} of {len(want)} items: {bad[:5]}", flush=True)
    result = {
        "model": args.model,
        "items": args.items,
        "batch": args.batch,
        "max_new_tokens": args.max_new_tokens,
        "threads": args.threads,
        "tokens_per_s_min": round(min(rates), 2),
        "tokens_per_s_median": round(statistics.median(rates), 2),
        "tokens_per_s_max": round(max(rates), 2),
        "new_tokens": sum(len(v) for v in outputs.values()),
        "load_avg": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "same_as_saved": same,
    }
    print(json.dumps(result))
    return 0 if same in (None, True) else 1


if __name__ == "__main__":
    sys.exit(main())
