"""`silentzone analyze-cohort`: fidelity-vs-score Spearman correlations, full cohort and silent
zone, for any cohort CSV (one row per quant; `#` comment lines allowed). The work is
silentzone.published; this module only maps the command line onto it.
"""

from __future__ import annotations

import time
from pathlib import Path

from . import io, published
from .errors import SilentzoneError


def add_arguments(p):
    p.add_argument("csv", help="cohort CSV: one row per quant, fidelity and score columns")
    p.add_argument("--fidelity", action="append", required=True, metavar="COL", help="fidelity column (larger = further from the reference); repeat for several")
    p.add_argument("--score", action="append", required=True, metavar="COL[,COL...]", help="score column(s); the composite is their mean")
    p.add_argument("--name-col", default=None, help="column naming the quant (default: the first column)")
    p.add_argument("--reference-row", default=None, metavar="NAME", help="name of the reference row (default: the one row whose name contains 'reference')")
    # Not required at the argparse level: its error would be a usage block, not one line (published.NO_RULE).
    zone = p.add_mutually_exclusive_group()
    zone.add_argument("--silent-margin", type=float, default=None, metavar="X", help="silent zone: |composite − reference composite| ≤ X, in score units (this or --silent-k is required)")
    zone.add_argument("--silent-k", type=int, default=None, metavar="K", help="silent zone: the K quants with the lowest first --fidelity")
    p.add_argument("--seed", type=int, default=published.DEFAULT_SEED)
    p.add_argument("--resamples", type=int, default=published.DEFAULT_RESAMPLES, help="permutation and bootstrap resamples (default 10000)")
    p.add_argument("--ci", type=float, default=0.95)
    p.add_argument("--out", required=True, metavar="DIR", help="writes DIR/correlations.json and DIR/correlations.csv")


def run(args):
    if args.resamples < 1:
        raise SilentzoneError(f"--resamples must be at least 1, got {args.resamples}")
    if not 0 < args.ci < 1:
        raise SilentzoneError(f"--ci must lie between 0 and 1 (e.g. 0.95), got {args.ci}")
    scores = [c.strip() for group in args.score for c in group.split(",") if c.strip()]
    start = time.perf_counter()
    doc, tidy = published.analyze(Path(args.csv), args.fidelity, scores, args.name_col, args.reference_row, args.silent_margin,
                                  args.silent_k, args.seed, args.resamples, args.ci)
    out = Path(args.out)
    io.write_json(out / "correlations.json", doc)
    io.write_csv(out / "correlations.csv", tidy, float_format="%.9g")
    print(published.report(doc))
    print(f"wrote {out}/correlations.json and correlations.csv in {time.perf_counter() - start:.1f} s")
    return 0
