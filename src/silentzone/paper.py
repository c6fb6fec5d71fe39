"""`silentzone paper inputs` gathers what the manuscript embeds; `silentzone paper render` runs Quarto.

inputs: results/numbers/*.json -> paper/_variables.yml (read by `{{< var ... >}}`), the published
values of paper/published.yml beside ours, and copies of results/figures and results/tables (as
markdown tables) under paper/figures and paper/tables. Every number in paper/index.qmd comes from
here; none is typed by hand.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from . import config, io
from .layout import DEFAULT
from .errors import SilentzoneError

PAPER_DIR = Path("paper")
QUARTO_HELP = (
    "install Quarto >= 1.6 from https://quarto.org/docs/get-started/ (or `make paper-tools`, which "
    "pip-installs quarto-cli; it downloads Quarto from GitHub), then rerun `dvc repro paper`"
)


def add_arguments(p):
    p.add_argument("action", choices=["inputs", "render"])


def numbers_namespace(notebook_stem: str) -> str:
    """'01-fidelity-vs-score' -> 'fidelity_vs_score' (the key under which its numbers appear)."""
    return re.sub(r"^\d+-", "", notebook_stem).replace("-", "_")


def format_value(value):
    """Numbers as the manuscript prints them: 3 significant decimals, p-values never as 0."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        if value != 0 and abs(value) < 0.001:
            return f"{value:.1e}"
        return f"{value:.3f}"
    if isinstance(value, dict):
        return {k: format_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return ", ".join(str(format_value(v)) for v in value)
    return value


def build_variables(results_dir: Path, paper_dir: Path = PAPER_DIR) -> dict:
    numbers_dir = Path(results_dir) / "numbers"
    files = sorted(numbers_dir.glob("*.json"))
    if not files:
        raise SilentzoneError(f"{numbers_dir}: no numbers; run the analyze stages first (dvc repro)")
    variables = {}
    for path in files:
        try:
            variables[numbers_namespace(path.stem)] = format_value(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise SilentzoneError(f"{path}: invalid JSON at line {exc.lineno}; rerun `silentzone analyze {path.stem}`") from None
    published = paper_dir / "published.yml"
    if published.exists():
        variables["paper"] = yaml.safe_load(published.read_text())
    return variables


def csv_to_markdown(csv_path: Path, float_digits: int = 3) -> str:
    import pandas as pd

    df = pd.read_csv(csv_path)
    cells = df.map(lambda v: (f"{v:.{float_digits}f}" if isinstance(v, float) and not math.isnan(v) else ("" if isinstance(v, float) else str(v))))
    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(r) + " |" for r in cells.astype(str).values.tolist()]
    return "\n".join([header, rule, *rows]) + "\n"


def write_inputs(params, paper_dir: Path = PAPER_DIR) -> None:
    results = DEFAULT.results
    variables = build_variables(results, paper_dir)
    variables["run"] = {"profile": params.profile, "model": params.model.name, "n_quants": len(params.cohort),
                        "n_tasks": len(params.bench.tasks), "n_items": sum(params.bench.tasks.values())}
    io.write_text(paper_dir / "_variables.yml", yaml.safe_dump(variables, sort_keys=True, allow_unicode=True))
    for kind in ("figures", "tables"):
        target = paper_dir / kind
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for path in sorted((results / kind).glob("*/*")):
            dest = target / path.parent.name / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
            if kind == "tables" and path.suffix == ".csv":
                io.write_text(dest.with_suffix(".md"), csv_to_markdown(path))
    print(f"{paper_dir}/_variables.yml: {sum(len(v) for v in variables.values() if isinstance(v, dict))} values")


def render(paper_dir: Path = PAPER_DIR) -> None:
    quarto = shutil.which("quarto")
    if quarto is None:
        raise SilentzoneError(f"quarto: not installed, so {paper_dir}/ was not rendered (all other stages completed); {QUARTO_HELP}")
    proc = subprocess.run([quarto, "render", str(paper_dir)], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SilentzoneError(f"quarto render {paper_dir} failed: {last}")
    print(f"{paper_dir}/_output: rendered")


def run(args):
    params = config.load(args.params)
    if args.action == "inputs":
        write_inputs(params)
    else:
        render()
    return 0
