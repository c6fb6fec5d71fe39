"""verdicts: every claim's tests (silentzone.claims) and verdicts (silentzone.verdicts) on the collected
cohort → results/numbers/verdicts.json (the DVC metrics `dvc metrics show` prints) and
results/tables/verdicts/{claims,rho_k}.csv."""

from __future__ import annotations

from .. import claims, io, provenance, verdicts
from ..config import Params
from ..layout import Layout
from ..schema import COMPOSITE_ALL, composite_items


def run(params: Params, layout: Layout) -> str:
    provenance.verify_processed(layout.processed, params)
    cohort = io.read_parquet(layout.processed / "cohort.parquet", "cohort table")
    every_item = io.read_parquet(layout.processed / "items.parquet", "item table")
    items = composite_items(every_item, params.composite_tasks())
    rules = verdicts.Rules.of(params)
    tests = claims.all_tests(cohort, items, params)
    tests["robustness"] = claims.robustness_tests(cohort, items, params, len(tests["inputs"].silent))
    if COMPOSITE_ALL in cohort:  # bench.composite leaves tasks out: claims 1, 2 and 5 on the composite of them all
        tests["broad"] = claims.broad_tests(cohort, every_item, params)
    decided = verdicts.decide(tests, rules)
    doc = verdicts.document(tests, decided, rules)
    tables = verdicts.tables(tests, decided)
    io.write_csv(layout.verdict_tables / "claims.csv", tables["claims"], float_format="%.6g")
    if tables["rho_k"] is not None:
        io.write_csv(layout.verdict_tables / "rho_k.csv", tables["rho_k"], float_format="%.6g")
    io.write_json(layout.verdicts, doc)
    lines = [f"{c}: {doc[c]['verdict']} ({', '.join(doc[c]['outcome'])})" for c in verdicts.CLAIMS]
    return f"{layout.verdicts}:\n  " + "\n  ".join(lines)
