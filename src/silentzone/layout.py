"""Where every stage reads and writes, relative to the run folder (the repository root by default).

dvc.yaml names the same paths (a test checks them against this module).

A run measures with one engine (params `engine.name`), whose outputs are the run's: data/reference,
data/fidelity, data/bench, data/processed. Each further engine of `engine.also` measures the same
tokens into the same layout under data/engines/<engine>/ (`Layout.for_engine`); prepared inputs,
model caches and everything after `collect` stay shared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")
    engine: str | None = None  # None: the run's own engine; else a further engine of `engine.also`

    def for_engine(self, run_engine: str, engine: str | None) -> Layout:
        """The layout `engine` writes to in a run whose own engine (params engine.name) is `run_engine`."""
        return Layout(self.root) if engine in (None, run_engine) else Layout(self.root, engine)

    @property
    def data(self) -> Path:
        """Where this engine's measurements go (reference store, fidelity, bench, processed tables)."""
        return self.root / "data" if self.engine is None else self.root / "data" / "engines" / self.engine

    # -- prepare
    @property
    def prepared(self) -> Path:
        return self.root / "data/prepared"

    @property
    def corpora_manifest(self) -> Path:
        return self.prepared / "corpora.json"

    def bench_items(self, task: str) -> Path:
        return self.prepared / "bench" / f"{task}.jsonl"

    # -- models: the fp32 cache of a GGUF reference
    @property
    def models(self) -> Path:
        return self.root / "data/models"

    # -- reference: one store (silentzone.refstore)
    @property
    def reference(self) -> Path:
        return self.data / "reference"

    # -- fidelity
    @property
    def fidelity(self) -> Path:
        return self.data / "fidelity"

    def fidelity_table(self, quant: str) -> Path:
        return self.fidelity / f"{quant}.parquet"

    def fidelity_report(self, quant: str) -> Path:
        return self.fidelity / f"{quant}.report.json"

    def fidelity_parts(self, quant: str) -> Path:
        return self.fidelity / ".parts" / quant

    # -- bench
    @property
    def bench(self) -> Path:
        return self.data / "bench"

    def bench_table(self, model: str) -> Path:
        return self.bench / f"{model}.parquet"

    def bench_stamp(self, model: str) -> Path:
        return self.bench / f"{model}.stamp.json"

    def bench_parts(self, model: str) -> Path:
        return self.bench / ".parts" / model

    # -- collect
    @property
    def processed(self) -> Path:
        return self.data / "processed"

    @property
    def processed_stamp(self) -> Path:
        return self.processed / "stamp.json"

    @property
    def external(self) -> Path:
        return self.root / "data/external"

    # -- analyze
    @property
    def results(self) -> Path:
        return self.root / "results"

    def notebook_outputs(self, name: str) -> dict[str, Path]:
        r = self.results
        return {
            "notebook": r / "notebooks" / f"{name}.ipynb",
            "figures_dir": r / "figures" / name,
            "tables_dir": r / "tables" / name,
            "numbers_path": r / "numbers" / f"{name}.json",
        }

    # -- verdicts
    @property
    def verdicts(self) -> Path:
        """The claims' verdicts (DVC metrics: what `dvc metrics show` prints); a further engine's as
        verdicts-<engine>.json beside them, so the paper reads both."""
        name = "verdicts" if self.engine is None else f"verdicts-{self.engine}"
        return self.root / "results" / "numbers" / f"{name}.json"

    @property
    def verdict_tables(self) -> Path:
        return self.root / "results" / "tables" / ("verdicts" if self.engine is None else f"verdicts-{self.engine}")

    # -- paper
    @property
    def paper(self) -> Path:
        return self.root / "paper"


DEFAULT = Layout()
