"""Where every stage reads and writes, relative to the run folder (the repository root by default).

dvc.yaml names the same paths (a test checks them against this module).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")

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
        return self.root / "data/reference"

    # -- fidelity
    @property
    def fidelity(self) -> Path:
        return self.root / "data/fidelity"

    def fidelity_table(self, quant: str) -> Path:
        return self.fidelity / f"{quant}.parquet"

    def fidelity_report(self, quant: str) -> Path:
        return self.fidelity / f"{quant}.report.json"

    def fidelity_parts(self, quant: str) -> Path:
        return self.fidelity / ".parts" / quant

    # -- bench
    @property
    def bench(self) -> Path:
        return self.root / "data/bench"

    def bench_table(self, model: str) -> Path:
        return self.bench / f"{model}.parquet"

    def bench_stamp(self, model: str) -> Path:
        return self.bench / f"{model}.stamp.json"

    def bench_parts(self, model: str) -> Path:
        return self.bench / ".parts" / model

    # -- collect
    @property
    def processed(self) -> Path:
        return self.root / "data/processed"

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
        """The claims' verdicts (DVC metrics): what `dvc metrics show` prints."""
        return self.results / "numbers" / "verdicts.json"

    @property
    def verdict_tables(self) -> Path:
        return self.results / "tables" / "verdicts"

    # -- paper
    @property
    def paper(self) -> Path:
        return self.root / "paper"


DEFAULT = Layout()
