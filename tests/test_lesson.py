"""The lesson for teachers of metric validity (notebooks/lesson-metric-validity.ipynb), executed as
`paper inputs` executes it: on the committed default run alone, no model and no capture. Its closing
cell's numbers are checked against values computed here independently (scipy, pandas) and against the
run's own published numbers; its exercises' answers are folded. Its run time is measured by
benchmarks/lesson_runtime.py (target: under a minute on 2 cores)."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from silentzone import lesson
from silentzone.errors import SilentzoneError

REPO = Path(__file__).resolve().parents[1]
RUN = REPO / "data" / "published" / "default"
NOTEBOOK = REPO / "notebooks" / f"{lesson.LESSON}.ipynb"

pytestmark = pytest.mark.skipif(not (RUN / "items.parquet").exists(), reason="no committed default run")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    out = tmp_path_factory.mktemp("lesson") / f"{lesson.LESSON}.ipynb"
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        lesson.execute(out, "data/published/default")
    finally:
        os.chdir(cwd)
    return json.loads(out.read_text())


def summary(nb: dict) -> dict:
    """The dict the lesson's closing cell displays."""
    last = [c for c in nb["cells"] if c["cell_type"] == "code"][-1]
    return ast.literal_eval("".join(last["outputs"][0]["data"]["text/plain"]))


def independent() -> dict:
    """The lesson's full-cohort correlations, recomputed with scipy from the committed tables: the signed
    outcome as the mean paired change of the gold answer's log-probability (LAMBADA: choice_logprobs[0])."""
    cohort = pd.read_parquet(RUN / "cohort.parquet")
    items = pd.read_parquet(RUN / "items.parquet")
    gold = items["gold_logprob"] if "gold_logprob" in items else items["choice_logprobs"].map(lambda lp: float(lp[0]))
    items = items.assign(gold=gold)
    ref = items[items["model"] == "reference"].set_index(["task", "item_id"])["gold"]
    items = items.join(ref.rename("ref"), on=["task", "item_id"])
    signed = (items["gold"] - items["ref"]).groupby(items["model"]).mean()
    quants = cohort[cohort["model"] != "reference"].set_index("model")
    return {
        "n_quants": len(quants),
        "rho_accuracy": scipy_stats.spearmanr(quants["kld_mean"], quants["composite"]).statistic,
        "rho_signed": scipy_stats.spearmanr(quants["kld_mean"], signed.loc[quants.index]).statistic,
    }


def test_the_lesson_runs_on_the_committed_run_alone(executed):
    errors = [
        o for c in executed["cells"] if c["cell_type"] == "code" for o in c.get("outputs", []) if o["output_type"] == "error"
    ]
    assert errors == []
    images = [o for c in executed["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 1  # the simulation's figure


def test_the_lessons_numbers_are_the_runs(executed):
    found, truth = summary(executed), independent()
    assert found["n_quants"] == truth["n_quants"]
    assert found["rho_accuracy"]["full cohort"] == pytest.approx(truth["rho_accuracy"], abs=1e-4)
    assert found["rho_signed"]["full cohort"] == pytest.approx(truth["rho_signed"], abs=1e-4)
    # the run's own split-half reliabilities (its own number of splits): the lesson's use fewer splits
    noise = json.loads((RUN / "numbers" / "07-noise-ceiling.json").read_text())["reliability"]
    assert found["reliability"]["full cohort"] == pytest.approx(noise["full"]["reliability"], abs=0.05)
    assert found["reliability"]["silent zone"] == pytest.approx(noise["silent"]["reliability"], abs=0.15)
    assert found["n_silent"] == noise["silent"]["n_quants"]
    verdicts = RUN / "numbers" / "verdicts.json"
    if verdicts.exists():  # runs published with verdicts carry the signed outcome's reliability too
        signed = json.loads(verdicts.read_text())["signed_outcome"]
        assert found["reliability_signed"]["silent zone"] == pytest.approx(signed["reliability_silent"], abs=0.1)
        assert found["rho_signed"]["silent zone"] == pytest.approx(signed["rho_kld_mean_silent"], abs=1e-4)


def test_every_exercise_has_its_answer_folded():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    exercises = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "".join(c["source"]).startswith("**Exercise")]
    assert len(exercises) >= 4
    for i in exercises:
        answer = cells[i + 1]
        text = "".join(answer["source"])
        if answer["cell_type"] == "code":  # folded in the rendered page and in JupyterLab
            assert text.startswith("#| code-fold: true") and answer["metadata"]["jupyter"]["source_hidden"] is True
        else:
            assert text.startswith("<details><summary>Answer") and text.rstrip().endswith("</details>")


def test_the_parameters_are_what_paper_inputs_passes():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1
    names = {t.id for node in ast.parse("".join(tagged[0]["source"])).body if isinstance(node, ast.Assign) for t in node.targets}
    assert "published_dir" in names and {"item_counts", "n_sims", "seed"} <= names


def test_a_run_without_gold_logprob_takes_lambadas_target_log_likelihood():
    items = pd.DataFrame(
        {
            "task": ["lambada", "arc_easy"],
            "choice_logprobs": [np.array([-1.5]), np.array([-0.2, -2.0])],
        }
    )
    out = lesson.with_gold_logprob(items)
    assert out["gold_logprob"].iloc[0] == -1.5 and np.isnan(out["gold_logprob"].iloc[1])
    assert lesson.with_gold_logprob(out.assign(gold_logprob=[1.0, 2.0]))["gold_logprob"].tolist() == [1.0, 2.0]


def test_a_missing_run_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SilentzoneError, match=r"no-such-run/items.parquet: not found .* data/published/"):
        lesson.load("no-such-run")


def test_the_silent_zone_is_read_from_the_runs_own_outputs(tmp_path):
    (tmp_path / "figures" / "01-fidelity-vs-score").mkdir(parents=True)
    pd.DataFrame({"model": ["reference", "a", "b", "c"], "zone": ["reference", "silent", "outside", "silent"]}).to_csv(
        tmp_path / lesson.ZONE_FIGURE, index=False
    )
    assert lesson.silent_members(tmp_path, ["c", "b", "a"]) == ["c", "a"]  # cohort order
    (tmp_path / "numbers").mkdir()
    (tmp_path / lesson.VERDICTS).write_text(json.dumps({"silent_zone": ["b"]}))
    assert lesson.silent_members(tmp_path, ["c", "b", "a"]) == ["b"]  # verdicts.json first
    with pytest.raises(SilentzoneError, match="republish"):
        lesson.silent_members(tmp_path / "nothing", ["a"])
