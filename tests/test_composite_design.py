"""benchmarks/composite_design.py: the default profile's one-task composite follows from the committed
design data (the 4-task run's per-item outcomes and stage times), by the pipeline's own statistic."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def design():
    spec = importlib.util.spec_from_file_location("composite_design", REPO / "benchmarks" / "composite_design.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spearman_brown_and_its_inverse_agree(design):
    assert design.spearman_brown(0.5, 2) == pytest.approx(2 / 3)  # 2·0.5 / (1 + 0.5)
    assert design.spearman_brown(0.8, 1) == pytest.approx(0.8)
    for r, k in [(0.87, 1.625), (0.5, 3.0), (0.95, 0.5)]:
        assert design.factor_for(r, design.spearman_brown(r, k)) == pytest.approx(k)


def test_lambada_alone_is_the_cheapest_design_to_the_target(design):
    items = pd.read_parquet(design.DATA / "default-4task-outcomes.parquet")
    assert len(items) == 31 * 1100 and set(items["task"]) == {"lambada", "sciq", "piqa", "arc_easy"}
    outcomes = design.outcomes_of(items)
    cost = design.seconds_per_item(pd.read_csv(design.DATA / "default-4task-seconds.csv"))
    designs = design.design_table(outcomes, cost, n_splits=200, seed=1, target=0.9, budget=162.0)
    assert len(designs) == 15 and designs.loc[0, "tasks"] == "lambada 400"
    best = designs.loc[0]
    assert 0.85 < best["reliability"] < 0.89 and best["quant_s_for_0.9"] < 162.0  # 650 items x 0.249 s
    four = designs[designs["tasks"].str.count(r"\+") == 3].iloc[0]
    assert four["reliability_at_162_s"] < 0.9 < best["reliability_at_162_s"]
    # the paired z is the pipeline's: composite drop over its paired SE
    quant, z = design.worst_z(outcomes, ["lambada"])
    wide = items[items["task"] == "lambada"].pivot(index="item_id", columns="model", values="correct").astype(float)
    d = wide["mxfp4"] - wide["reference"]
    assert quant == "mxfp4" and math.isclose(z, d.mean() / math.sqrt(d.var(ddof=0) / len(d)), rel_tol=1e-12)
    assert math.isclose(z, -7.18, abs_tol=0.01)
