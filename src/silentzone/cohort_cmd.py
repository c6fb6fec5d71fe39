"""`silentzone analyze-cohort`: fidelity-vs-score Spearman correlations, full cohort and silent
zone, for any cohort CSV (one row per quant; `#` comment lines allowed).

The composite is the mean of the --score columns. The reference row (--reference-row, or the one
row whose name contains "reference") only anchors the score delta of the margin criterion; it
never enters a correlation. Margins are in the units of the scores (percentage points if the
scores are percentages). Without --silent-margin or --silent-k the silent zone is the lower half
(rounded up) of the cohort by the first --fidelity column.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd

from . import io, stats
from .errors import SilentzoneError

DEFAULT_SEED = 20260619  # profiles/default.yaml `seed`, so results match the pipeline's defaults
DEFAULT_RESAMPLES = 10000


def add_arguments(p):
    p.add_argument("csv", help="cohort CSV: one row per quant, fidelity and score columns")
    p.add_argument("--fidelity", action="append", required=True, metavar="COL", help="fidelity column (larger = further from the reference); repeat for several")
    p.add_argument("--score", action="append", required=True, metavar="COL[,COL...]", help="score column(s); the composite is their mean")
    p.add_argument("--name-col", default=None, help="column naming the quant (default: the first column)")
    p.add_argument("--reference-row", default=None, metavar="NAME", help="name of the reference row (default: the one row whose name contains 'reference')")
    zone = p.add_mutually_exclusive_group()
    zone.add_argument("--silent-margin", type=float, default=None, metavar="X", help="silent zone: |composite − reference composite| ≤ X, in score units")
    zone.add_argument("--silent-k", type=int, default=None, metavar="K", help="silent zone: the K quants with the lowest first --fidelity")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="permutation and bootstrap resamples (default 10000)")
    p.add_argument("--ci", type=float, default=0.95)
    p.add_argument("--out", required=True, metavar="DIR", help="writes DIR/correlations.json and DIR/correlations.csv")


def read_cohort(path: Path, name_col: str | None, columns: list[str]) -> tuple[pd.DataFrame, str]:
    """The CSV with `columns` as floats; one-line errors for a missing file, column or bad cell."""
    if not path.exists():
        raise SilentzoneError(f"{path}: not found")
    try:
        raw = pd.read_csv(path, comment="#", dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SilentzoneError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    name_col = name_col or raw.columns[0]
    missing = [c for c in [name_col, *columns] if c not in raw.columns]
    if missing:
        raise SilentzoneError(f"{path}: no column {', '.join(map(repr, missing))}; columns are {', '.join(raw.columns)}")
    names = raw[name_col].str.strip()
    if names.isna().any():
        raise SilentzoneError(f"{path}: row {int(names.isna().to_numpy().argmax()) + 1} has no name in column {name_col!r}")
    dupes = names[names.duplicated()]
    if len(dupes):
        raise SilentzoneError(f"{path}: quant {dupes.iloc[0]!r} appears twice in column {name_col!r}; names must be unique")
    table = pd.DataFrame({"quant": names})
    for col in dict.fromkeys(columns):
        values = pd.to_numeric(raw[col], errors="coerce")
        bad = values.isna() & raw[col].notna()
        if bad.any():
            i = int(bad.to_numpy().argmax())
            raise SilentzoneError(f"{path}: column {col!r}, row {names.iloc[i]!r}: {raw[col].iloc[i]!r} is not a number; fix the cell or choose another column")
        table[col] = values.astype(float)
    return table, name_col


def find_reference(table: pd.DataFrame, name: str | None, path: Path) -> str | None:
    if name is not None:
        if name not in set(table["quant"]):
            raise SilentzoneError(f"{path}: --reference-row {name!r} not found; names are {', '.join(table['quant'])}")
        return name
    hits = table.loc[table["quant"].str.contains("reference", case=False), "quant"].tolist()
    if len(hits) > 1:
        raise SilentzoneError(f"{path}: several rows look like the reference ({', '.join(hits)}); choose one with --reference-row")
    return hits[0] if hits else None


def silent_members(quants: pd.DataFrame, reference: pd.Series | None, primary: str, margin: float | None, k: int | None,
                   path: Path) -> tuple[list[str], str]:
    """Members of the silent zone and a description of the rule used."""
    if margin is not None:
        if reference is None or pd.isna(reference["composite"]):
            raise SilentzoneError(f"{path}: --silent-margin needs a reference row with every --score column; pass --reference-row or use --silent-k")
        delta = quants["composite"] - reference["composite"]
        inside = delta.abs() <= margin + 1e-9 * max(1.0, abs(margin))  # 0.5-point steps must not miss by rounding
        return quants.loc[inside, "quant"].tolist(), f"|composite - {reference['quant']}| <= {margin:g}"
    usable = quants.dropna(subset=[primary]).sort_values([primary, "quant"], kind="stable")
    k = math.ceil(len(usable) / 2) if k is None else k
    if k < 1:
        raise SilentzoneError(f"--silent-k must be at least 1, got {k}")
    return usable["quant"].head(k).tolist(), f"the {k} quants with the lowest {primary}"


def _result(row: pd.Series) -> dict:
    keys = ["n", "rho", "p_perm", "ci_low", "ci_high", "p_holm", "refused"]
    return {k: (None if pd.isna(row[k]) else row[k]) for k in keys}  # pandas stores a missing refusal as NaN


def analyze(path: Path, fidelities: list[str], scores: list[str], name_col: str | None = None, reference_row: str | None = None,
            margin: float | None = None, k: int | None = None, seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES,
            ci: float = 0.95) -> tuple[dict, pd.DataFrame]:
    """The correlations document (see module docstring) and the tidy table behind it."""
    path = Path(path)
    table, name_col = read_cohort(path, name_col, [*fidelities, *scores])
    table["composite"] = table[scores].mean(axis=1, skipna=False)
    ref_name = find_reference(table, reference_row, path)
    reference = table[table["quant"] == ref_name].iloc[0] if ref_name else None
    quants = table[(table["quant"] != ref_name) & table["composite"].notna()]
    for fid in fidelities:
        usable = quants[fid].notna()
        if usable.sum() < stats.MIN_N:
            raise SilentzoneError(f"{path}: only {int(usable.sum())} rows have both {fid!r} and every score column "
                                  f"({', '.join(quants.loc[usable, 'quant']) or 'none'}); need at least {stats.MIN_N}")
    members, rule = silent_members(quants, reference, fidelities[0], margin, k, path)
    settings = {"seed": seed, "n_resamples": resamples, "n_bootstrap": resamples, "ci": ci, "min_n": stats.MIN_N}
    tidy = stats.correlation_table(quants, fidelities, ["composite"], settings, {"full": quants["quant"].tolist(), "silent": members})
    results = []
    for fid in fidelities:
        full = tidy[(tidy["zone"] == "full") & (tidy["variant"] == fid)].iloc[0]
        silent = tidy[(tidy["zone"] == "silent") & (tidy["variant"] == fid)].iloc[0]
        used = [m for m in members if pd.notna(quants.loc[quants["quant"] == m, fid].iloc[0])]
        results.append({"fidelity": fid, "full": _result(full), "silent": {**_result(silent), "members": used}})
    doc = {"cohort": path.stem, "n": int(len(quants)), "score": scores, "name_col": name_col, "reference": ref_name,
           "silent_rule": rule, "seed": seed, "resamples": resamples, "ci": ci, "results": results}
    return doc, tidy


def _fmt(r: dict) -> str:
    if r["refused"]:
        return f"n={r['n']:<3d} refused: {r['refused']}"
    return f"n={r['n']:<3d} rho={r['rho']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] p={r['p_perm']:.4f} p_holm={r['p_holm']:.4f}"


def report(doc: dict) -> str:
    lines = [f"{doc['cohort']}: {doc['n']} quants, composite = mean({', '.join(doc['score'])}), reference = {doc['reference']}",
             f"silent zone: {doc['silent_rule']}"]
    width = max(len(r["fidelity"]) for r in doc["results"])
    for r in doc["results"]:
        lines.append(f"  {r['fidelity']:<{width}}  full    {_fmt(r['full'])}")
        lines.append(f"  {'':<{width}}  silent  {_fmt(r['silent'])}  members: {', '.join(r['silent']['members'])}")
    return "\n".join(lines)


def run(args):
    if args.resamples < 1:
        raise SilentzoneError(f"--resamples must be at least 1, got {args.resamples}")
    if not 0 < args.ci < 1:
        raise SilentzoneError(f"--ci must lie between 0 and 1 (e.g. 0.95), got {args.ci}")
    scores = [c.strip() for group in args.score for c in group.split(",") if c.strip()]
    start = time.perf_counter()
    doc, tidy = analyze(Path(args.csv), args.fidelity, scores, args.name_col, args.reference_row, args.silent_margin,
                        args.silent_k, args.seed, args.resamples, args.ci)
    out = Path(args.out)
    io.write_json(out / "correlations.json", doc)
    io.write_csv(out / "correlations.csv", tidy, float_format="%.9g")
    print(report(doc))
    print(f"wrote {out}/correlations.json and correlations.csv in {time.perf_counter() - start:.1f} s")
    return 0
