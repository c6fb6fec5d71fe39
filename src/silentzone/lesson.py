"""The lesson on metric validity for teachers and students (notebooks/lesson-metric-validity.ipynb):
reliability and attenuation, range restriction, binary against continuous outcomes, and a simulation
to rerun with other item counts, all on a committed published run (data/published/<profile>/), with
no model and no capture.

load() reads what the lesson needs from the run's committed files; execute() runs the notebook with
papermill into the paper's notebooks folder (`silentzone paper inputs` calls it), so the manuscript
site shows the lesson, executed, as a page of its own. It is not an analysis stage: it reads only
committed files and writes nothing under results/.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import io, kernels
from .errors import SilentzoneError
from .schema import GOLD_LOGPROB, MODEL, REFERENCE, quant_names

LESSON = "lesson-metric-validity"
PUBLISHED_RUN = Path("data/published/default")  # the committed run the lesson reads (scripts/publish_run.py)
PRIMARY = "kld_mean"
# Where the silent zone's members are written down in a published run: verdicts.json (runs with
# verdicts), else the zone column of notebook 01's figure data (every run).
VERDICTS = "numbers/verdicts.json"
ZONE_FIGURE = "figures/01-fidelity-vs-score/kld_vs_composite.csv"


@dataclass
class PublishedRun:
    cohort: pd.DataFrame  # one row per model, the reference first
    items: pd.DataFrame  # one row per model and item, with gold_logprob
    quants: list[str]  # every quant, in cohort order
    silent: list[str]  # the silent zone's quants, in cohort order
    folder: Path


def find_run(folder: str | Path) -> Path:
    """The published run's folder, relative to the working directory or to the repository root above
    it (a notebook opened in JupyterLab runs in notebooks/, papermill in the repository root)."""
    folder = Path(folder)
    for base in [Path.cwd(), *Path.cwd().parents]:
        if (base / folder / "items.parquet").exists():
            return base / folder
    raise SilentzoneError(
        f"{folder}/items.parquet: not found from {Path.cwd()} or any folder above it; run the lesson inside a checkout "
        "of the repository (the published runs are committed under data/published/)"
    )


def with_gold_logprob(items: pd.DataFrame) -> pd.DataFrame:
    """The item table with `gold_logprob` (the signed outcome's item column). Runs collected before it
    existed have it only for LAMBADA, as the target's log-likelihood, the one entry of `choice_logprobs`;
    their other tasks get NaN (no outcome), never a guess."""
    if GOLD_LOGPROB in items:
        return items
    values = np.full(len(items), np.nan)
    lambada = (items["task"] == "lambada").to_numpy()
    values[lambada] = [float(lp[0]) for lp in items.loc[lambada, "choice_logprobs"]]
    return items.assign(**{GOLD_LOGPROB: values})


def silent_members(folder: Path, quants: list[str]) -> list[str]:
    """The silent zone of the published run, as its own outputs recorded it (cohort order)."""
    verdicts, figure = folder / VERDICTS, folder / ZONE_FIGURE
    if verdicts.exists():
        inside = set(json.loads(verdicts.read_text())["silent_zone"])
    elif figure.exists():
        zone = pd.read_csv(figure)
        inside = set(zone.loc[zone["zone"] == "silent", MODEL])
    else:
        raise SilentzoneError(f"{folder}: neither {VERDICTS} nor {ZONE_FIGURE}; republish the run with scripts/publish_run.py")
    return [q for q in quants if q in inside]


def load(folder: str | Path = PUBLISHED_RUN) -> PublishedRun:
    folder = find_run(folder)
    cohort = io.read_parquet(folder / "cohort.parquet", "cohort table")
    items = with_gold_logprob(io.read_parquet(folder / "items.parquet", "item table"))
    if REFERENCE not in set(cohort[MODEL]) or PRIMARY not in cohort:
        raise SilentzoneError(f"{folder}/cohort.parquet: no reference row or no {PRIMARY} column; not a published run's cohort")
    quants = quant_names(cohort)
    return PublishedRun(cohort, items, quants, silent_members(folder, quants), folder)


def execute(out: Path, published: str | Path = PUBLISHED_RUN, kernel: str = "python3", root: Path = Path(".")) -> Path:
    """Run the lesson notebook (root/notebooks/LESSON.ipynb) with papermill into `out`, reading `published`;
    one line naming the cell when it fails."""
    source = Path(root) / "notebooks" / f"{LESSON}.ipynb"
    return kernels.execute(source, Path(out), {"published_dir": str(published)}, kernel, Path(root))
