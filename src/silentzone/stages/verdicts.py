"""verdicts: every claim's tests (silentzone.claims) and verdicts (silentzone.verdicts) on the collected
cohort → results/numbers/verdicts.json (the DVC metrics `dvc metrics show` prints) and
results/tables/verdicts/{claims,rho_k}.csv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .. import claims, io, provenance, verdicts
from ..config import Params
from ..layout import Layout
from ..schema import COMPOSITE_ALL, composite_items


def run(params: Params, layout: Layout) -> str:
    provenance.verify_processed(layout.processed, params)
    cohort = io.read_parquet(layout.processed / "cohort.parquet", "cohort table")
    every_item = io.read_parquet(layout.processed / "items.parquet", "item table")
    return write(compute(params, cohort, every_item), layout.verdicts, layout.verdict_tables)


def compute(params: Params, cohort: pd.DataFrame, every_item: pd.DataFrame) -> tuple[dict, dict]:
    """(verdicts document, tables) of a collected cohort: every claim's tests and their verdicts."""
    items = composite_items(every_item, params.composite_tasks())
    rules = verdicts.Rules.of(params)
    tests = claims.all_tests(cohort, items, params)
    tests["robustness"] = claims.robustness_tests(cohort, items, params, len(tests["inputs"].silent))
    if COMPOSITE_ALL in cohort:  # bench.composite leaves tasks out: claims 1, 2 and 5 on the composite of them all
        tests["broad"] = claims.broad_tests(cohort, every_item, params)
    decided = verdicts.decide(tests, rules)
    return verdicts.document(tests, decided, rules), verdicts.tables(tests, decided)


def write(computed: tuple[dict, dict], verdicts_json: Path, tables_dir: Path) -> str:
    doc, tables = computed
    io.write_csv(tables_dir / "claims.csv", tables["claims"], float_format="%.6g")
    if tables["rho_k"] is not None:
        io.write_csv(tables_dir / "rho_k.csv", tables["rho_k"], float_format="%.6g")
    io.write_json(verdicts_json, doc)
    lines = [f"{c}: {doc[c]['verdict']} ({', '.join(doc[c]['outcome'])})" for c in verdicts.CLAIMS]
    return f"{verdicts_json}:\n  " + "\n  ".join(lines)
