"""The published default run's verdicts (data/published/default/verdicts/verdicts.json, written by
scripts/published_verdicts.py from the run's own tables) against an independent recomputation from
its items.parquet and cohort.parquet: scipy's Spearman ρ, split-half reliability by plain numpy, the
mean-KLD router's accuracy by hand, and no claim holding on an outcome below the reliability rule."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "data" / "published" / "default"
VERDICTS = RUN / "verdicts" / "verdicts.json"
pytestmark = pytest.mark.skipif(not VERDICTS.is_file(), reason="no published default run with verdicts is committed")


@pytest.fixture(scope="module")
def run():
    items = pd.read_parquet(RUN / "items.parquet")
    items["gold_logprob"] = [float(lp[0]) for lp in items["choice_logprobs"]]  # LAMBADA: the target's log-probability
    cohort = pd.read_parquet(RUN / "cohort.parquet").set_index("model")
    return json.loads(VERDICTS.read_text()), items, cohort


def split_half(values: pd.DataFrame, n_splits: int = 400, seed: int = 1) -> float:
    """Spearman–Brown of the mean Spearman r between random half-means across the columns (quants)."""
    rng = np.random.default_rng(seed)
    x = values.to_numpy(float)
    n = len(x)
    rs = []
    for _ in range(n_splits):
        half = rng.permutation(n) < n // 2
        rs.append(sps.spearmanr(x[half].mean(axis=0), x[~half].mean(axis=0)).statistic)
    r = float(np.mean(rs))
    return 2 * r / (1 + r)


def test_the_committed_verdicts_are_what_the_runs_tables_give():
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "published_verdicts.py"), "default", "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "outcome, column, key", [("accuracy", "correct", "accuracy"), ("signed", "gold_logprob", "signed_outcome")]
)
def test_silent_zone_reliability_and_rho_recomputed(run, outcome, column, key):
    doc, items, cohort = run
    silent = doc["silent_zone"]
    table = items.pivot_table(index=["task", "item_id"], columns="model", values=column, aggfunc="first")[silent]
    assert split_half(table.astype(float)) == pytest.approx(doc[key]["reliability_silent"], abs=0.05)
    per_quant = table.astype(float).mean()
    if outcome == "signed":
        per_quant = per_quant - items.loc[items["model"] == "reference", column].mean()
    rho = sps.spearmanr(cohort.loc[silent, "kld_mean"], per_quant[silent]).statistic
    assert rho == pytest.approx(doc[key]["rho_kld_mean_silent"], abs=0.03)


def test_claim4_baseline_recomputed(run):
    doc, items, cohort = run
    quants = items[items["model"] != "reference"]
    correct = quants.pivot(index=["task", "item_id"], columns="model", values="correct").astype(int)
    kld = quants.pivot(index=["task", "item_id"], columns="model", values="prompt_kld").loc[correct.index]
    right = routed = 0
    for a, b in itertools.combinations(sorted(correct.columns), 2):
        mask = (correct[a] != correct[b]) & (kld[a] != kld[b])
        pick = a if cohort.loc[a, "kld_mean"] < cohort.loc[b, "kld_mean"] else b
        right += int(correct.loc[mask, pick].sum())
        routed += int(mask.sum())
    assert routed == doc["claim4"]["n_routed"]
    assert right / routed == pytest.approx(doc["claim4"]["baseline_mean_kld"], abs=0.005)  # within 0.5 points


def test_no_claim_holds_on_an_outcome_below_the_reliability_rule(run):
    doc = run[0]
    floor = doc["rules"]["min_reliability"]
    for claim in ("claim1", "claim2", "claim5"):
        for outcome, test in doc[claim]["by_outcome"].items():
            if test["verdict"] == "holds":
                assert test["power"]["powered"] and test["power"]["reliability"] >= floor, (claim, outcome)
