"""prepare: the calibration corpora and the benchmark item subsets → data/prepared/.

Everything is built in memory first and written only when all of it succeeded, so a bad corpus or
task leaves no partial output behind — nor a benchmark subset that shares text with a corpus.
"""

from __future__ import annotations

from pathlib import Path

from ..data import corpora, items
from ..layout import Layout


def run(params, layout: Layout) -> list[str]:
    """Write every corpus and task subset; returns one summary line per file written."""
    texts, manifest = corpora.build_all(params)
    subsets = items.draw_all(params)
    items.check_disjoint(texts, subsets, params.source)
    corpora.write_all(texts, manifest, layout.prepared)
    lines = [
        f"{layout.prepared / e['path']}: {e['n_docs']} documents{_short_of(name, e)}, {e['n_bytes']} bytes, sha256 {e['sha256'][:12]}"
        for name, e in manifest.items()
    ]
    return lines + [f"{path}: benchmark items" for path in items.write_all(subsets, Path(layout.prepared))]


def _short_of(name: str, entry: dict) -> str:
    """The explicit warning when `max_docs` asks for more documents than the source has (it is a
    cap: the corpus is then all of them, and corpora.json records both numbers)."""
    if entry["n_docs"] >= entry["max_docs"]:
        return ""
    return f" (warning: corpora.{name}.max_docs = {entry['max_docs']}, but {entry['source']} has only these)"
