"""`silentzone ingest <source>`: external measurements into our tables.

  llamacpp LOG [LOG ...] --out CSV          one row per llama-perplexity --kl-divergence log
  kld BASE [OTHER] [--out CSV]              header of a .kld file; with OTHER, llama.cpp's statistics from both
  lm-eval PATH [PATH ...] --model NAME --out FILE      --log_samples files/folders -> item rows
  livecodebench EVAL_ALL --model NAME --release R --out FILE   *_eval_all.json -> item rows
  csv CSV --reference NAME --map OURS=THEIRS ... --out FILE    published cohort table -> cohort rows
  cohort MANIFEST [--out DIR]               a whole cohort -> DIR/{cohort,items}.parquet

FILE ending in .parquet is written as parquet, anything else as CSV. Every input is read and
checked before anything is written.
"""

from __future__ import annotations

from pathlib import Path

from .. import io
from ..errors import SilentzoneError
from ..layout import DEFAULT as LAYOUT
from ..schema import MODEL


def add_arguments(parser):
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    p = sub.add_parser("llamacpp", help="llama-perplexity --kl-divergence logs -> one CSV row per log")
    p.add_argument("logs", nargs="+", metavar="LOG")
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="LOG=NAME",
        help="quant name for a log (default: from its model file, else its file name)",
    )

    p = sub.add_parser("kld", help="read a llama.cpp --kl-divergence-base file (.kld or .kld.xz)")
    p.add_argument("base")
    p.add_argument("other", nargs="?", help="a second .kld of the same tokens: llama.cpp's statistics from the two uint16 copies")
    p.add_argument("--out", help="CSV of per-token statistics (with OTHER)")

    p = sub.add_parser("lm-eval", help="lm-evaluation-harness --log_samples output -> item rows")
    p.add_argument("paths", nargs="+", metavar="PATH", help="samples_<task>_<date>.jsonl files or folders holding them")
    p.add_argument("--model", required=True, help="model name for the item table (`reference` for the reference)")
    p.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="TASK=METRIC",
        help="per-item metric deciding correctness (default: acc, exact_match, pass@1, …)",
    )
    p.add_argument(
        "--filter", action="append", default=[], metavar="TASK=FILTER", help="which filter's rows to use when a task logs several"
    )
    p.add_argument("--out", required=True)

    p = sub.add_parser("livecodebench", help="LiveCodeBench *_eval_all.json -> item rows")
    p.add_argument("eval_all")
    p.add_argument("--model", required=True)
    p.add_argument("--release", required=True, help="dataset release scored, e.g. release_v5")
    p.add_argument("--start-date", help="keep problems with contest_date >= this (YYYY-MM-DD)")
    p.add_argument("--end-date", help="keep problems with contest_date <= this (YYYY-MM-DD)")
    p.add_argument("--task", default="livecodebench", help="task name in the item table")
    p.add_argument("--out", required=True)

    p = sub.add_parser("csv", help="a published cohort CSV -> the cohort schema, through a column map")
    p.add_argument("csv")
    p.add_argument("--reference", required=True, help="the reference row's name, e.g. 'BF16 (reference)'")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="OURS=THEIRS",
        help="e.g. kld_mean=card_kl_mean, score_hellaswag=card_hellaswag_pct, ppl=card_ppl; model=COL names the quant column (default: the first)",
    )
    p.add_argument("--percent", action="append", default=[], metavar="OURS", help="a mapped column given in percent")
    p.add_argument("--out", required=True)

    p = sub.add_parser("cohort", help="manifest of per-quant logs and sample files -> cohort.parquet + items.parquet")
    p.add_argument("manifest")
    p.add_argument("--out", default=str(LAYOUT.processed), help=f"output folder (default: {LAYOUT.processed})")


def pairs(items: list[str], option: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.rpartition("=")
        if not sep or not key or not value:
            raise SilentzoneError(f"{option} {item!r}: expected KEY=VALUE")
        if key in out:  # the last one would silently win
            raise SilentzoneError(f"{option} {item!r}: {key} is already given ({option} {key}={out[key]}); give each KEY once")
        out[key] = value
    return out


def write_table(path: str, frame) -> None:
    if str(path).endswith(".parquet"):
        io.write_parquet(path, frame)
    else:
        io.write_csv(path, frame)  # shortest round-trip floats: values read back exactly


def run(args):
    handler = {
        "llamacpp": run_llamacpp,
        "kld": run_kld,
        "lm-eval": run_lm_eval,
        "livecodebench": run_livecodebench,
        "csv": run_csv,
        "cohort": run_cohort,
    }[args.source]
    return handler(args)


def run_llamacpp(args):
    from .llamacpp_log import check_one_per_quant, parse_logs

    names = pairs(args.name, "--name")
    unknown = [k for k in names if k not in args.logs and k not in {Path(p).name for p in args.logs}]
    if unknown:
        raise SilentzoneError(f"--name {unknown[0]}=…: no such LOG among the arguments")
    frame = parse_logs(args.logs, names)
    check_one_per_quant(args.logs, frame)
    write_table(args.out, frame)
    print(f"{args.out}: {len(frame)} logs ({', '.join(frame[MODEL])})")
    return 0


def run_kld(args):
    from .llamacpp_kld import read_kld, summary, token_stats, token_table

    base = read_kld(args.base)
    print(
        f"{args.base}: n_ctx={base.n_ctx} n_vocab={base.n_vocab} n_chunk={base.n_chunk} "
        f"scored={base.n_scored}/chunk records={len(base.records)} bytes={base.size_bytes}"
    )
    if args.other:
        stats = token_stats(base, read_kld(args.other))
        for key, value in summary(stats).items():
            print(f"  {key:14s} {value:.6f}")
        if args.out:
            write_table(args.out, token_table(base, stats))
    return 0


def run_lm_eval(args):
    from .lm_eval import read_model

    frame = read_model(args.paths, args.model, pairs(args.metric, "--metric"), pairs(args.filter, "--filter"))
    write_table(args.out, frame)
    print(f"{args.out}: {len(frame)} items of {args.model} ({', '.join(sorted(frame['task'].unique()))})")
    return 0


def run_livecodebench(args):
    from .livecodebench import read_eval_all

    frame = read_eval_all(args.eval_all, args.model, args.release, args.start_date, args.end_date, args.task)
    write_table(args.out, frame)
    print(
        f"{args.out}: {len(frame)} problems of {args.model}, {args.release} {frame['window_start'].iloc[0]} – {frame['window_end'].iloc[0]}"
    )
    return 0


def run_csv(args):
    from .cohort_csv import read_cohort_csv

    frame = read_cohort_csv(args.csv, pairs(args.map, "--map"), args.reference, args.percent)
    write_table(args.out, frame)
    print(f"{args.out}: {len(frame)} quants")
    return 0


def run_cohort(args):
    from .manifest import build, write

    cohort, items = build(args.manifest)
    write(cohort, items, args.out)
    print(f"{args.out}/cohort.parquet: {len(cohort)} models; items.parquet: {len(items)} rows")
    return 0
