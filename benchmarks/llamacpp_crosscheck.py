"""Our KLD beside llama.cpp's, for the same quants on the same tokens.

    .venv/bin/python benchmarks/llamacpp_crosscheck.py [--windows 20] [--out results/tables/llamacpp_crosscheck.csv]

Inputs: the real llama.cpp fixtures in tests/fixtures/llamacpp (README there). Their Q8_0, Q5_0 and
Q4_0 GGUFs (token_embd kept at Q8_0) hold bit-identical weights to our cohort's q8_0, q5_0 and q4_0
recipes (gguf-py formats, silentzone.quant) applied to the same Q4_1 reference; llama.cpp scored
corpus.txt in 20 windows of 512 tokens, the second half of each (positions 256…510 predicting the
next token). We score the same tokens with our runtime (transformers, fp32) and our metrics
(silentzone.fidelity.token_metrics, float64), and compare with the statistics llama.cpp printed.

Three checks:
  tokens   our tokenizer reproduces llama.cpp's stored tokens (mini/, first 2 x 128)
  floor    our fp32 reference against llama.cpp's stored reference log-probs (mini/, 126 tokens,
           uint16): the runtime difference alone, with identical weights
  quants   per quant: mean / median / p99 KLD, same-top-p, PPL ratio, ours vs llama.cpp's log

CPU only, 2 threads; ~5 min on 2 shared cores. Timings taken beside other jobs are not benchmarks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from silentzone import config, io  # noqa: E402
from silentzone.errors import SilentzoneError  # noqa: E402
from silentzone.ingest.llamacpp_kld import read_kld  # noqa: E402
from silentzone.ingest.llamacpp_log import parse_log  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "llamacpp"
QUANTS = {"q8_0": "kld-Q8_0.log", "q5_0": "kld-Q5_0.log", "q4_0": "kld-Q4_0.log"}  # our cohort name -> llama.cpp log
CTX = 512


def scored_logits(model, window: np.ndarray, first: int) -> np.ndarray:
    import torch

    with torch.inference_mode():
        logits = model(torch.from_numpy(window[None]).long()).logits[0, first : len(window) - 1]
    return logits.float().numpy()


def runtime_floor(ref_model, ids: list[int]) -> dict:
    """Our fp32 reference vs llama.cpp's stored reference log-probs, on mini/'s 2 x 128 tokens."""
    import torch

    base = read_kld(FIXTURES / "mini" / "mini-ref-c128.kld.xz")
    if ids[: len(base.tokens)] != base.tokens.tolist():
        raise SilentzoneError("our tokenizer differs from llama.cpp's tokens in mini/; the comparison would be meaningless")
    lp_ours = []
    for c in range(base.n_chunk):
        window = np.asarray(ids[c * base.n_ctx : (c + 1) * base.n_ctx])
        logits = torch.from_numpy(scored_logits(ref_model, window, base.first_scored)).double()
        lp_ours.append(torch.log_softmax(logits, -1).numpy())
    lp_ours = np.concatenate(lp_ours)
    lp_lc = base.log_probs().astype(np.float64)
    kept = base.quantized() > 0
    kld = np.where(kept, np.exp(lp_lc) * (lp_lc - lp_ours), 0.0).sum(1)  # llama.cpp's sum: base entries with q > 0
    y = base.targets()
    rows = np.arange(len(y))
    return {
        "n_tokens": len(y),
        "kld_mean": kld.mean(),
        "kld_median": np.median(kld),
        "kld_p99": np.percentile(kld, 99),
        "same_top_p": float(np.mean(lp_ours.argmax(1) == lp_lc.argmax(1))),
        "ppl_ours": float(np.exp(-lp_ours[rows, y].mean())),
        "ppl_llamacpp": float(np.exp(-lp_lc[rows, y].mean())),
    }


def main(argv=None) -> int:
    import torch

    from silentzone.metrics import token_metrics
    from silentzone.quant.load import load_quant
    from silentzone.stages.reference import score_range, tokenize

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=20)
    ap.add_argument("--out", default="results/tables/llamacpp_crosscheck.csv")
    args = ap.parse_args(argv)
    if not (FIXTURES / "corpus.txt").exists():
        raise SystemExit(f"llama.cpp fixtures not found at {FIXTURES}")
    torch.set_num_threads(2)
    params = config.validate(config.build_profile("default", REPO / "profiles"), "profiles/default.yaml")
    topk, floor = params.fidelity.topk, params.fidelity.topk_floor
    t0 = time.time()
    ref_model, tokenizer, _ = load_quant(params, "reference", cache_dir=REPO / "data" / "models")
    ids = tokenize(tokenizer, (FIXTURES / "corpus.txt").read_text(encoding="utf-8"))
    floor_stats = runtime_floor(ref_model, ids)
    print(f"tokens: first 256 equal llama.cpp's; corpus = {len(ids)} tokens", flush=True)
    print(
        "floor (our fp32 reference vs llama.cpp reference, mini/ 126 tokens): "
        + ", ".join(f"{k}={v:.6g}" for k, v in floor_stats.items()),
        flush=True,
    )

    first, stop = score_range(CTX, 0.5)
    windows = np.asarray(ids[: args.windows * CTX]).reshape(args.windows, CTX)
    ref_logits = [scored_logits(ref_model, w, first) for w in windows]
    nll_R = np.concatenate(
        [
            -torch.log_softmax(torch.from_numpy(lg).double(), -1)[np.arange(len(lg)), w[first + 1 :]].numpy()
            for lg, w in zip(ref_logits, windows)
        ]
    )
    print(
        f"reference PPL on {len(nll_R)} tokens: ours {np.exp(nll_R.mean()):.6f} (llama.cpp PPL(base) 17.911256)  ({time.time() - t0:.0f} s)",
        flush=True,
    )
    del ref_model

    rows = [
        {
            "quant": "runtime floor (reference vs reference)",
            "tokens": floor_stats["n_tokens"],
            "kld_mean_ours": floor_stats["kld_mean"],
            "kld_mean_llamacpp": 0.0,
            "kld_median_ours": floor_stats["kld_median"],
            "kld_median_llamacpp": 0.0,
            "kld_p99_ours": floor_stats["kld_p99"],
            "kld_p99_llamacpp": 0.0,
            "same_top_p_ours": floor_stats["same_top_p"],
            "same_top_p_llamacpp": 1.0,
            "ppl_ratio_ours": floor_stats["ppl_ours"] / floor_stats["ppl_llamacpp"],
            "ppl_ratio_llamacpp": 1.0,
        }
    ]
    for name, log_name in QUANTS.items():
        model, _, report = load_quant(params, name, cache_dir=REPO / "data" / "models")
        parts = [
            token_metrics(lR, scored_logits(model, w, first), w[first + 1 :], topk, floor) for lR, w in zip(ref_logits, windows)
        ]
        m = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        lc = parse_log(FIXTURES / "logs" / log_name)
        rows.append(
            {
                "quant": f"{name} ({report['formats']})",
                "tokens": len(m["kld"]),
                "kld_mean_ours": m["kld"].mean(),
                "kld_mean_llamacpp": lc["kld_mean"],
                "kld_median_ours": np.median(m["kld"]),
                "kld_median_llamacpp": lc["kld_median"],
                "kld_p99_ours": np.percentile(m["kld"], 99),
                "kld_p99_llamacpp": lc["kld_p99"],
                "same_top_p_ours": m["top1"].mean(),
                "same_top_p_llamacpp": lc["same_top_p"],
                "ppl_ratio_ours": float(np.exp((m["nll_q"] - m["nll_R"]).mean())),
                "ppl_ratio_llamacpp": lc["ppl_ratio"],
            }
        )
        r = rows[-1]
        print(
            f"{name}: "
            + ", ".join(f"{k}={v:.6g}" for k, v in r.items() if k not in ("quant", "tokens"))
            + f"  ({time.time() - t0:.0f} s)",
            flush=True,
        )
        del model
    import pandas as pd

    table = pd.DataFrame(rows)
    io.write_csv(REPO / args.out, table)
    cols = ["kld_mean", "kld_median", "kld_p99", "same_top_p", "ppl_ratio"]
    print("\n| quant | tokens | " + " | ".join(f"{c} ours / llama.cpp" for c in cols) + " |")
    print("|---|---:|" + "---:|" * len(cols))
    for r in rows:
        print(
            f"| {r['quant']} | {r['tokens']} | "
            + " | ".join(f"{r[c + '_ours']:.6f} / {r[c + '_llamacpp']:.6f}" for c in cols)
            + " |"
        )
    print(f"\nwrote {args.out}; wall {time.time() - t0:.0f} s (2 threads, shared machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
