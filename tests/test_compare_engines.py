"""compare-engines on synthetic cohorts with known answers (stages/compare.side_by_side)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import spearmanr

from silentzone import config
from silentzone.errors import SilentzoneError
from silentzone.stages import compare

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def params():
    return config.validate(config.build_profile("quick", REPO / "profiles"), "params.yaml")


def cohort(params, kld: list[float], composite: list[float]) -> pd.DataFrame:
    models = ["reference", *[f"q{i}" for i in range(len(kld) - 1)]]
    table = pd.DataFrame({"model": models, "is_reference": [True] + [False] * (len(kld) - 1), "bpw": 8.0, "source": "recipe"})
    for name in params.variants:
        table[name] = kld
    table["composite"] = composite
    return table


def items(models: list[str], correct: dict[str, list[bool]]) -> pd.DataFrame:
    rows = [{"model": m, "task": "lambada", "item_id": str(k), "correct": c} for m in models for k, c in enumerate(correct[m])]
    return pd.DataFrame(rows)


def test_rho_and_agreement_are_the_hand_worked_values(params):
    a = cohort(params, [0.0, 0.01, 0.02, 0.03, 0.04], [0.5, 0.5, 0.4, 0.3, 0.2])
    b = cohort(params, [0.0, 0.02, 0.01, 0.05, 0.04], [0.5, 0.4, 0.4, 0.3, 0.3])  # two swaps
    models = list(a["model"])
    ia = items(models, {m: [True, True, False, False] for m in models})
    flips = {"reference": [True, True, False, False], "q0": [True, False, False, False], "q1": [False, False, True, True]}
    ib = items(models, {m: flips.get(m, [True, True, False, False]) for m in models})
    table, summary = compare.side_by_side(params, a, b, ia, ib, "llamacpp")
    want = spearmanr([0.01, 0.02, 0.03, 0.04], [0.02, 0.01, 0.05, 0.04])[0]  # 0.6
    assert summary["spearman"]["kld_mean"]["rho"] == pytest.approx(want) == pytest.approx(0.6)
    assert summary["n_quants"] == 4 and summary["reference_outcome_agreement"] == 1.0
    assert summary["reference_composite"] == {"torch": 0.5, "llamacpp": 0.5}
    agree = dict(zip(table["model"], table["outcome_agreement"]))
    assert agree["q0"] == 0.75 and agree["q1"] == 0.0 and agree["q2"] == 1.0
    assert list(table["kld_mean_llamacpp"]) == [0.0, 0.02, 0.01, 0.05, 0.04]


def test_cohorts_of_other_models_are_refused(params):
    a = cohort(params, [0.0, 0.01, 0.02], [0.5, 0.5, 0.4])
    b = a.assign(model=["reference", "q0", "other"])
    with pytest.raises(SilentzoneError, match="different models"):
        compare.side_by_side(params, a, b, pd.DataFrame(), pd.DataFrame(), "llamacpp")
