"""Published cohort tables (data/external/*.csv, or any CSV with one row per quant): the one reader,
and the fidelity-vs-score correlations over the full cohort and the silent zone.

`read_table` is what `silentzone analyze-cohort`, notebook 06 and `silentzone ingest csv` read such
a file with: `#` comment lines allowed, one name column (default: the first), numeric columns
checked cell by cell, one-line errors naming the file, the line and the fix.

`analyze`: the composite is the mean of the score columns. The reference row (named, or the one
row whose name contains "reference") only anchors the score delta of the margin rule; it never
enters a correlation. Margins are in the units of the scores (percentage points if the scores are
percentages). Published cohorts have no per-item outcomes, so the design's default silent zone
(the paired bootstrap over items) is impossible: a margin or a k must be given.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from . import stats, zone
from .config import ANALYZE_COHORT_DEFAULTS
from .errors import SilentzoneError
from .schema import COMPOSITE, MODEL, SCORE_PREFIX, composite

DEFAULT_SEED = ANALYZE_COHORT_DEFAULTS["seed"]
DEFAULT_RESAMPLES = ANALYZE_COHORT_DEFAULTS["resamples"]
NO_RULE = ("published cohorts have no per-item outcomes, so the default silent zone (paired bootstrap over items) is "
           "impossible; give --silent-margin X (in score units) or --silent-k K")
# A missing cell, spelled as pandas' read_csv recognises one by default.
MISSING = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
                     "NULL", "NaN", "None", "n/a", "nan", "null"})


# ---------------------------------------------------------------- reading


def _data_lines(path: Path) -> list[int]:
    """File line of the header and of every data row, as pandas (comment='#') reads them."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [i for i, line in enumerate(lines, start=1) if line.strip() and not line.lstrip().startswith("#")]


def _at(path: Path, lines: list[int], row: int | None = None) -> str:
    """`path:line` of the header (row None) or of data row `row` (0-based); `path` alone if a
    quoted cell spanning lines leaves the line unknown."""
    i = 0 if row is None else row + 1
    return f"{path}:{lines[i]}" if i < len(lines) else str(path)


def read_table(path: str | Path, columns: list[str], name_col: str | None = None) -> tuple[pd.DataFrame, str]:
    """The CSV as (table, name column): `model` (the names, stripped, unique) then every column of
    `columns` as float64 (a missing cell is NaN; any other text is an error)."""
    path = Path(path)
    if not path.exists():
        raise SilentzoneError(f"{path}: not found")
    try:
        raw = pd.read_csv(path, comment="#", dtype=str, keep_default_na=False, skipinitialspace=True)
        lines = _data_lines(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise SilentzoneError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    name_col = name_col or raw.columns[0]
    missing = [c for c in [name_col, *columns] if c not in raw.columns]
    if missing:
        raise SilentzoneError(f"{_at(path, lines)}: no column {', '.join(map(repr, missing))}; columns are {', '.join(raw.columns)}")
    table = pd.DataFrame({MODEL: _names(raw[name_col], path, name_col, lines)})
    for col in dict.fromkeys(columns):
        table[col] = _numbers(raw[col], table[MODEL], path, col, lines)
    return table, name_col


def _names(column: pd.Series, path: Path, name_col: str, lines: list[int]) -> pd.Series:
    names = column.str.strip()
    empty = names.isin(MISSING)
    if empty.any():
        raise SilentzoneError(f"{_at(path, lines, int(empty.to_numpy().argmax()))}: row has no name in column {name_col!r}; name every row")
    dupes = names.duplicated()
    if dupes.any():
        i = int(dupes.to_numpy().argmax())
        raise SilentzoneError(f"{_at(path, lines, i)}: quant {names.iloc[i]!r} appears twice in column {name_col!r}; names must be unique")
    return names


def _numbers(column: pd.Series, names: pd.Series, path: Path, col: str, lines: list[int]) -> pd.Series:
    text = column.str.strip()
    values = pd.to_numeric(text.mask(text.isin(MISSING)), errors="coerce")
    bad = values.isna() & ~text.isin(MISSING)
    if bad.any():
        i = int(bad.to_numpy().argmax())
        raise SilentzoneError(f"{_at(path, lines, i)}: column {col!r}, row {names.iloc[i]!r}: {column.iloc[i]!r} is not a number; "
                              "fix the cell or choose another column")
    return values.astype(float)


def find_reference(table: pd.DataFrame, name: str | None, path: Path) -> str | None:
    """The reference row's name: `name` (checked), else the one row whose name contains "reference"."""
    if name is not None:
        if name not in set(table[MODEL]):
            raise SilentzoneError(f"{path}: --reference-row {name!r} not found; names are {', '.join(table[MODEL])}")
        return name
    hits = table.loc[table[MODEL].str.contains("reference", case=False), MODEL].tolist()
    if len(hits) > 1:
        raise SilentzoneError(f"{path}: several rows look like the reference ({', '.join(hits)}); choose one with --reference-row")
    return hits[0] if hits else None


# ---------------------------------------------------------------- correlations


def silent_members(quants: pd.DataFrame, reference: pd.Series | None, primary: str, margin: float | None, k: int | None,
                   path: Path) -> tuple[list[str], str]:
    """Members of the silent zone (zone.margin_members / zone.lowest_k_members) and the rule in words."""
    if margin is not None:
        if reference is None or pd.isna(reference[COMPOSITE]):
            raise SilentzoneError(f"{path}: --silent-margin needs a reference row with every --score column; pass --reference-row or use --silent-k")
        return zone.margin_members(quants, float(reference[COMPOSITE]), margin), f"|composite - {reference[MODEL]}| <= {margin:g}"
    return zone.lowest_k_members(quants, primary, k), f"the {k} quants with the lowest {primary}"


def _result(row: pd.Series) -> dict:
    keys = ["n", "rho", "p_perm", "ci_low", "ci_high", "p_holm", "refused"]
    return {k: (None if pd.isna(row[k]) else row[k]) for k in keys}  # pandas stores a missing refusal as NaN


def analyze(path: Path, fidelities: list[str], scores: list[str], name_col: str | None = None, reference_row: str | None = None,
            margin: float | None = None, k: int | None = None, seed: int = DEFAULT_SEED, resamples: int = DEFAULT_RESAMPLES,
            ci: float = 0.95) -> tuple[dict, pd.DataFrame]:
    """The correlations document (see the module docstring) and the tidy table behind it.
    Exactly one of `margin` and `k` chooses the silent zone."""
    path = Path(path)
    if margin is None and k is None:
        raise SilentzoneError(f"{path}: {NO_RULE}")
    if margin is not None and k is not None:
        raise SilentzoneError(f"{path}: give one silent-zone rule, --silent-margin or --silent-k, not both")
    if (k is not None and k < 1) or (margin is not None and margin < 0):
        raise SilentzoneError(f"{path}: --silent-k must be at least 1 and --silent-margin at least 0, got {k if margin is None else margin}")
    table, name_col = read_table(path, [*fidelities, *scores], name_col)
    table[COMPOSITE] = composite(table[scores].add_prefix(SCORE_PREFIX))
    ref_name = find_reference(table, reference_row, path)
    reference = table[table[MODEL] == ref_name].iloc[0] if ref_name else None
    quants = table[(table[MODEL] != ref_name) & table[COMPOSITE].notna()]
    for fid in fidelities:
        usable = quants[fid].notna()
        if usable.sum() < stats.MIN_N:
            raise SilentzoneError(f"{path}: only {int(usable.sum())} rows have both {fid!r} and every score column "
                                  f"({', '.join(quants.loc[usable, MODEL]) or 'none'}); need at least {stats.MIN_N}")
    members, rule = silent_members(quants, reference, fidelities[0], margin, k, path)
    settings = {"seed": seed, "n_resamples": resamples, "n_bootstrap": resamples, "ci": ci, "min_n": stats.MIN_N}
    tidy = stats.correlation_table(quants, fidelities, [COMPOSITE], settings, {"full": quants[MODEL].tolist(), "silent": members})
    results = []
    for fid in fidelities:
        full = tidy[(tidy["zone"] == "full") & (tidy["variant"] == fid)].iloc[0]
        silent = tidy[(tidy["zone"] == "silent") & (tidy["variant"] == fid)].iloc[0]
        used = [m for m in members if pd.notna(quants.loc[quants[MODEL] == m, fid].iloc[0])]
        results.append({"fidelity": fid, "full": _result(full), "silent": {**_result(silent), "members": used}})
    doc = {"cohort": path.stem, "n": int(len(quants)), "score": scores, "name_col": name_col, "reference": ref_name,
           "silent_rule": rule, "seed": seed, "resamples": resamples, "ci": ci, "results": results}
    return doc, tidy


def _fmt(r: dict) -> str:
    if r["refused"]:
        return f"n={r['n']:<3d} refused: {r['refused']}"
    return f"n={r['n']:<3d} rho={r['rho']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] p={r['p_perm']:.4f} p_holm={r['p_holm']:.4f}"


def report(doc: dict) -> str:
    """The correlations document as a few lines for a terminal or a notebook."""
    lines = [f"{doc['cohort']}: {doc['n']} quants, composite = mean({', '.join(doc['score'])}), reference = {doc['reference']}",
             f"silent zone: {doc['silent_rule']}"]
    width = max(len(r["fidelity"]) for r in doc["results"])
    for r in doc["results"]:
        lines.append(f"  {r['fidelity']:<{width}}  full    {_fmt(r['full'])}")
        lines.append(f"  {'':<{width}}  silent  {_fmt(r['silent'])}  members: {', '.join(r['silent']['members'])}")
    return "\n".join(lines)
