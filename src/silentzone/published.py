"""Published cohort tables (data/external/*.csv, or any CSV with one row per quant): the one reader,
and the fidelity-vs-score correlations over the full cohort and the silent zone.

`read_table` is what `silentzone analyze-cohort`, notebook 06 and `silentzone ingest csv` read such
a file with: UTF-8 text, `#` comment lines allowed (a `#` inside a row is text), every row with the
header's number of cells, one name column (default: the first) with unique names, numeric columns
checked cell by cell (an empty cell is a value not published; NaN or infinity written out is
refused), one-line errors naming the file, the line and the fix.

Physical sanity in `analyze`: the columns mean what their names say where they say it (a fidelity
column named `kl…`/`kld…` is ≥ −KLD_TOLERANCE, one named `ppl…`/`perplexity` ≥ 1, unless a token
such as `ratio`/`diff`/`log` says it is derived); scores are shares ([0, 1]) or percentages
([0, 100]), all --score columns in the same one (a column with a value above 1 is in percent).

`analyze`: the composite is the mean of the score columns. The reference row (named, or the one
row whose name contains "reference") only anchors the score delta of the margin rule; it never
enters a correlation. Margins are in the units of the scores (percentage points if the scores are
percentages). Published cohorts have no per-item outcomes, so the design's default silent zone
(the paired bootstrap over items) is impossible: a margin or a k must be given.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import io, stats, zone
from .config import ANALYZE_COHORT_DEFAULTS
from .errors import SilentzoneError
from .schema import COMPOSITE, KLD_TOLERANCE, MODEL, SCORE_PREFIX, composite

DEFAULT_SEED = ANALYZE_COHORT_DEFAULTS["seed"]
DEFAULT_RESAMPLES = ANALYZE_COHORT_DEFAULTS["resamples"]
NO_RULE = (
    "published cohorts have no per-item outcomes, so the default silent zone (paired bootstrap over items) is "
    "impossible; give --silent-margin X (in score units) or --silent-k K"
)
# A cell left empty on purpose: the value was not published. Every cell may be missing (published
# tables have gaps); an analysis uses the rows that have what it needs.
MISSING = frozenset({"", "#N/A", "#N/A N/A", "#NA", "<NA>", "N/A", "NA", "NULL", "None", "n/a", "null"})
# NaN written as a number is a failed computation, not a gap: refused, like infinities.
NAN_SPELLINGS = frozenset({"nan", "-nan", "+nan", "1.#qnan", "-1.#qnan", "1.#ind", "-1.#ind"})
# KLD ≥ 0 within one uint16 step of llama.cpp's stored log-probabilities (16/65535 nats), the tolerance


# ---------------------------------------------------------------- reading


def _rows(path: Path) -> list[tuple[int, list[str]]]:
    """(file line, cells) of the header and every data row. `#` starts a comment only at the start of
    a line (a `#` inside a row is text, never a silently dropped tail); blank lines are skipped; every
    row must have the header's number of cells (pandas would shift or pad a ragged row silently)."""
    import csv

    text = io.read_text(path, "a CSV file")
    lines = [
        (i, line)
        for i, line in enumerate(text.splitlines(keepends=True), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise SilentzoneError(
            f"{path}: no header line (the file is empty or all comments); a cohort CSV has a header and one row per quant"
        )
    reader = csv.reader((line for _, line in lines), skipinitialspace=True, strict=True)
    rows = []
    while True:
        start = reader.line_num  # lines consumed so far: the next record starts at lines[start]
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise SilentzoneError(
                f"{path}:{lines[min(start, len(lines) - 1)][0]}: not a readable CSV row ({exc}); fix the quoting"
            ) from None
        rows.append((lines[start][0], cells))
    width = len(rows[0][1])
    for line, cells in rows[1:]:
        if len(cells) != width:
            raise SilentzoneError(
                f"{path}:{line}: {len(cells)} cells, but the header has {width}; a comma too many or too few "
                "(quote a cell that holds a comma)"
            )
    seen: dict[str, int] = {}
    for i, name in enumerate(rows[0][1]):
        if name in seen:
            raise SilentzoneError(
                f"{path}:{rows[0][0]}: column {name!r} appears twice in the header (cells {seen[name] + 1} and {i + 1}); "
                "rename one"
            )
        seen[name] = i
    return rows


def location(path: str | Path, row: int | None = None) -> str:
    """`path:line` of the header (row None) or of data row `row` (0-based), as read_table reads the file."""
    path = Path(path)
    rows = _rows(path)
    i = 0 if row is None else row + 1
    return f"{path}:{rows[i][0]}" if i < len(rows) else str(path)


def read_table(path: str | Path, columns: list[str], name_col: str | None = None) -> tuple[pd.DataFrame, str]:
    """The CSV as (table, name column): `model` (the names, stripped, unique) then every column of
    `columns` as float64 (a missing cell is NaN; NaN or infinity written out, or any other text, is an
    error)."""
    path = Path(path)
    if not path.exists():
        raise SilentzoneError(f"{path}: not found")
    rows = _rows(path)
    if len(rows) < 2:
        raise SilentzoneError(f"{path}:{rows[0][0]}: a header but no data rows; a cohort CSV has one row per quant")
    header = rows[0][1]
    raw = pd.DataFrame([cells for _, cells in rows[1:]], columns=header, dtype=str)
    lines = [line for line, _ in rows]
    name_col = name_col or raw.columns[0]
    missing = [c for c in [name_col, *columns] if c not in raw.columns]
    if missing:
        raise SilentzoneError(
            f"{_at(path, lines)}: no column {', '.join(map(repr, missing))}; columns are {', '.join(raw.columns)}"
        )
    table = pd.DataFrame({MODEL: _names(raw[name_col], path, name_col, lines)})
    for col in dict.fromkeys(columns):
        table[col] = _numbers(raw[col], table[MODEL], path, col, lines)
    return table, name_col


def _at(path: Path, lines: list[int], row: int | None = None) -> str:
    """`path:line` of the header (row None) or of data row `row` (0-based)."""
    i = 0 if row is None else row + 1
    return f"{path}:{lines[i]}" if i < len(lines) else str(path)


def _names(column: pd.Series, path: Path, name_col: str, lines: list[int]) -> pd.Series:
    names = column.str.strip()
    empty = names.isin(MISSING)
    if empty.any():
        raise SilentzoneError(
            f"{_at(path, lines, int(empty.to_numpy().argmax()))}: row has no name in column {name_col!r}; name every row"
        )
    folded = names.str.casefold()
    dupes = folded.duplicated()
    if dupes.any():
        i = int(dupes.to_numpy().argmax())
        first = names.iloc[int((folded == folded.iloc[i]).to_numpy().argmax())]
        case = f" (as {first!r}: names differ only in case)" if first != names.iloc[i] else ""
        raise SilentzoneError(
            f"{_at(path, lines, i)}: quant {names.iloc[i]!r} appears twice in column {name_col!r}{case}; names must be unique, "
            "one row per quant"
        )
    return names


def _numbers(column: pd.Series, names: pd.Series, path: Path, col: str, lines: list[int]) -> pd.Series:
    text = column.str.strip()
    gap = text.isin(MISSING)
    values = pd.to_numeric(text.mask(gap), errors="coerce").astype(float)
    bad = (values.isna() | np.isinf(values)) & ~gap
    if bad.any():
        i = int(bad.to_numpy().argmax())
        cell = column.iloc[i]
        where = f"{_at(path, lines, i)}: column {col!r}, row {names.iloc[i]!r}: {cell!r}"
        if text.iloc[i].casefold() in NAN_SPELLINGS:
            raise SilentzoneError(
                f"{where} is NaN, a failed computation rather than a value; leave the cell empty (or n/a) if nothing was "
                "published, else give the number"
            )
        if np.isinf(values.iloc[i]):
            raise SilentzoneError(f"{where} is not finite; give the published number, or leave the cell empty if there is none")
        raise SilentzoneError(f"{where} is not a number; fix the cell or choose another column")
    return values


def find_reference(table: pd.DataFrame, name: str | None, path: Path) -> str | None:
    """The reference row's name: `name` (checked), else the one row whose name contains "reference"."""
    if name is not None:
        if name not in set(table[MODEL]):
            raise SilentzoneError(f"{path}: --reference-row {name!r} not found; names are {', '.join(table[MODEL])}")
        return name
    hits = table.loc[table[MODEL].str.contains("reference", case=False), MODEL].tolist()
    if len(hits) > 1:
        raise SilentzoneError(
            f"{path}: several rows look like the reference ({', '.join(hits)}); choose one with --reference-row"
        )
    return hits[0] if hits else None


# ---------------------------------------------------------------- correlations


def silent_members(
    quants: pd.DataFrame, reference: pd.Series | None, primary: str, margin: float | None, k: int | None, path: Path
) -> tuple[list[str], str]:
    """Members of the silent zone (zone.margin_members / zone.lowest_k_members) and the rule in words."""
    if margin is not None:
        if reference is None or pd.isna(reference[COMPOSITE]):
            raise SilentzoneError(
                f"{path}: --silent-margin needs a reference row with every --score column; pass --reference-row or use --silent-k"
            )
        return zone.margin_members(quants, float(reference[COMPOSITE]), margin), f"|composite - {reference[MODEL]}| <= {margin:g}"
    return zone.lowest_k_members(quants, primary, k), f"the {k} quants with the lowest {primary}"


# What a fidelity column's name says it holds (tokens of the name, split at _ - . and spaces): a KL
# divergence (`kl`, `kld`) is ≥ −KLD_TOLERANCE, a perplexity (`ppl`, `perplexity`) ≥ 1, unless
# a token says it is derived (a ratio, difference, log …). Other fidelity columns need only be finite.
KLD_TOKENS, PPL_TOKENS = {"kl", "kld"}, {"ppl", "perplexity"}
DERIVED_TOKENS = {"ratio", "diff", "delta", "change", "rel", "log", "ln", "dln", "se", "err", "error", "unc", "std"}


def _tokens(column: str) -> set[str]:
    return set(re.split(r"[\s_.\-]+", column.casefold()))


def _check_columns(path: Path, fidelities: list[str], scores: list[str], name_col: str | None) -> None:
    """Each column once: a score given twice would weigh twice in the composite, a fidelity twice
    would be Holm-corrected twice, and a column both fidelity and score correlates with itself."""
    for option, cols in (("--fidelity", fidelities), ("--score", scores)):
        dupes = sorted({c for c in cols if cols.count(c) > 1})
        if dupes:
            raise SilentzoneError(f"{path}: {option} names column {dupes[0]!r} twice; name each column once")
    both = [c for c in fidelities if c in scores]
    if both:
        raise SilentzoneError(
            f"{path}: column {both[0]!r} is both a --fidelity and a --score column; a column cannot predict itself"
        )
    if name_col is not None and name_col in (*fidelities, *scores):
        raise SilentzoneError(f"{path}: --name-col {name_col!r} is also a --fidelity/--score column; the name column holds names")


def _check_values(path: Path, table: pd.DataFrame, fidelities: list[str], scores: list[str]) -> None:
    """Physical sanity: KLD ≥ 0 and perplexity ≥ 1 where the column name says so; scores are shares
    ([0, 1]) or percentages ([0, 100]), all score columns in one of the two (their mean is the composite)."""

    def first_bad(col: str, bad: pd.Series, why: str):
        i = int(bad.to_numpy().argmax())
        raise SilentzoneError(
            f"{location(path, i)}: column {col!r}, row {table[MODEL].iloc[i]!r}: {table[col].iloc[i]:g} is impossible ({why}); "
            "fix the cell (a typo or a sign lost in copying?)"
        )

    for col in fidelities:
        tokens = _tokens(col)
        if tokens & DERIVED_TOKENS:
            continue
        if tokens & KLD_TOKENS and (bad := table[col] < -KLD_TOLERANCE).any():
            first_bad(col, bad, f"a KL divergence is ≥ 0, tolerance {KLD_TOLERANCE:.3g}")
        if tokens & PPL_TOKENS and (bad := table[col] < 1).any():
            first_bad(col, bad, "a perplexity is ≥ 1")
    for col in scores:
        if (bad := (table[col] < 0) | (table[col] > 100)).any():
            first_bad(col, bad, "a score is a share in [0, 1] or a percentage in [0, 100]")
    percent = {c: bool((table[c] > 1).any()) for c in scores}
    if len(set(percent.values())) > 1:
        shares = [c for c, p in percent.items() if not p]
        pct = [c for c, p in percent.items() if p]
        raise SilentzoneError(
            f"{path}: score columns mix units: {', '.join(map(repr, pct))} hold percentages (values above 1), "
            f"{', '.join(map(repr, shares))} only values in [0, 1] (shares); the composite averages them, so give every "
            "--score column in one unit"
        )


def _result(row: pd.Series) -> dict:
    keys = ["n", "rho", "p_perm", "ci_low", "ci_high", "p_holm", "refused"]
    return {k: (None if pd.isna(row[k]) else row[k]) for k in keys}  # pandas stores a missing refusal as NaN


def analyze(
    path: Path,
    fidelities: list[str],
    scores: list[str],
    name_col: str | None = None,
    reference_row: str | None = None,
    margin: float | None = None,
    k: int | None = None,
    seed: int = DEFAULT_SEED,
    resamples: int = DEFAULT_RESAMPLES,
    ci: float = 0.95,
) -> tuple[dict, pd.DataFrame]:
    """The correlations document (see the module docstring) and the tidy table behind it.
    Exactly one of `margin` and `k` chooses the silent zone."""
    path = Path(path)
    if margin is None and k is None:
        raise SilentzoneError(f"{path}: {NO_RULE}")
    if margin is not None and k is not None:
        raise SilentzoneError(f"{path}: give one silent-zone rule, --silent-margin or --silent-k, not both")
    if margin is not None and not np.isfinite(margin):
        raise SilentzoneError(f"{path}: --silent-margin {margin} is not a finite margin; give one in score units, e.g. 0.5")
    if (k is not None and k < 1) or (margin is not None and margin < 0):
        raise SilentzoneError(
            f"{path}: --silent-k must be at least 1 and --silent-margin at least 0, got {k if margin is None else margin}"
        )
    if seed < 0:
        raise SilentzoneError(f"{path}: --seed must be a non-negative integer, got {seed}")
    _check_columns(path, fidelities, scores, name_col)
    table, name_col = read_table(path, [*fidelities, *scores], name_col)
    _check_values(path, table, fidelities, scores)
    table[COMPOSITE] = composite(table[scores].add_prefix(SCORE_PREFIX))
    ref_name = find_reference(table, reference_row, path)
    reference = table[table[MODEL] == ref_name].iloc[0] if ref_name else None
    quants = table[(table[MODEL] != ref_name) & table[COMPOSITE].notna()]
    for fid in fidelities:
        usable = quants[fid].notna()
        if usable.sum() < stats.MIN_N:
            raise SilentzoneError(
                f"{path}: only {int(usable.sum())} rows have both {fid!r} and every score column "
                f"({', '.join(quants.loc[usable, MODEL]) or 'none'}); need at least {stats.MIN_N}"
            )
    ranked = int(quants[fidelities[0]].notna().sum())
    if k is not None and k > ranked:
        raise SilentzoneError(
            f"{path}: --silent-k {k} but only {ranked} quants have {fidelities[0]!r} and every score column; "
            f"choose K <= {ranked} (the silent zone is a part of the cohort)"
        )
    members, rule = silent_members(quants, reference, fidelities[0], margin, k, path)
    settings = {"seed": seed, "n_resamples": resamples, "n_bootstrap": resamples, "ci": ci, "min_n": stats.MIN_N}
    tidy = stats.correlation_table(quants, fidelities, [COMPOSITE], settings, {"full": quants[MODEL].tolist(), "silent": members})
    results = []
    for fid in fidelities:
        full = tidy[(tidy["zone"] == "full") & (tidy["variant"] == fid)].iloc[0]
        silent = tidy[(tidy["zone"] == "silent") & (tidy["variant"] == fid)].iloc[0]
        used = [m for m in members if pd.notna(quants.loc[quants[MODEL] == m, fid].iloc[0])]
        results.append({"fidelity": fid, "full": _result(full), "silent": {**_result(silent), "members": used}})
    doc = {
        "cohort": path.stem,
        "n": int(len(quants)),
        "score": scores,
        "name_col": name_col,
        "reference": ref_name,
        "silent_rule": rule,
        "seed": seed,
        "resamples": resamples,
        "ci": ci,
        "results": results,
    }
    return doc, tidy


def _fmt(r: dict) -> str:
    if r["refused"]:
        return f"n={r['n']:<3d} refused: {r['refused']}"
    return f"n={r['n']:<3d} rho={r['rho']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] p={r['p_perm']:.4f} p_holm={r['p_holm']:.4f}"


def report(doc: dict) -> str:
    """The correlations document as a few lines for a terminal or a notebook."""
    lines = [
        f"{doc['cohort']}: {doc['n']} quants, composite = mean({', '.join(doc['score'])}), reference = {doc['reference']}",
        f"silent zone: {doc['silent_rule']}",
    ]
    width = max(len(r["fidelity"]) for r in doc["results"])
    for r in doc["results"]:
        lines.append(f"  {r['fidelity']:<{width}}  full    {_fmt(r['full'])}")
        lines.append(f"  {'':<{width}}  silent  {_fmt(r['silent'])}  members: {', '.join(r['silent']['members'])}")
    return "\n".join(lines)
