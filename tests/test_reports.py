"""silentzone.reports (what each analysis notebook computes and writes), run directly, not through
papermill: every report completes on cohorts of 0 to 3 quants and records why it refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from silentzone import config, reports
from silentzone.schema import MODEL, REFERENCE, scores

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "paper" / "published.yml"
PIPELINE = {
    "01-fidelity-vs-score": reports.fidelity_vs_score,
    "02-silent-zone-sweep": reports.silent_zone_sweep,
    "03-failure-prediction": reports.failure_prediction,
    "04-routing": reports.routing,
    "05-volume-direction": reports.volume_direction,
    "07-noise-ceiling": reports.noise_ceiling,
}


@pytest.fixture(scope="module")
def params():
    return config.validate(config.build_profile("tiny", REPO / "profiles"), "params.yaml")


def write_cohort(folder: Path, params, n_quants: int, prompt_kld: bool = True, seed: int = 0) -> Path:
    """data/processed/{cohort,items}.parquet of a made-up cohort: the reference and n quants, two
    tasks, every variant of params (KLD growing with the quant's index)."""
    rng = np.random.default_rng(seed)
    models = [REFERENCE, *[f"q{i}" for i in range(n_quants)]]
    truth = {"arc": rng.random(8) < 0.6, "code": rng.random(4) < 0.5}
    rows = []
    for i, model in enumerate(models):
        for task, base in truth.items():
            flips = np.zeros(len(base), bool) if model == REFERENCE else rng.random(len(base)) < 0.15 * i
            kld = np.full(len(base), np.nan) if model == REFERENCE or not prompt_kld else rng.lognormal(-4 + i, 0.5, len(base))
            rows += [
                {MODEL: model, "task": task, "item_id": f"{task}/{j}", "correct": bool(c), "prompt_kld": k, "n_prompt_tokens": 20}
                for j, (c, k) in enumerate(zip(base ^ flips, kld))
            ]
    items = pd.DataFrame(rows)
    cohort = pd.DataFrame(
        {MODEL: models, "is_reference": [m == REFERENCE for m in models], "bpw": [32.0] + [8.0 - i for i in range(n_quants)]}
    )
    for j, name in enumerate(params.variants):
        cohort[name] = [0.0] + [0.01 * (i + 1) * (1 + 0.1 * j) for i in range(n_quants)]
    cohort = cohort.merge(scores(items), on=MODEL)
    processed = folder / "data" / "processed"
    processed.mkdir(parents=True)
    cohort.to_parquet(processed / "cohort.parquet")
    items.to_parquet(processed / "items.parquet")
    return processed


def run_report(name, params, processed: Path, out: Path) -> tuple[dict, dict]:
    paths = {
        "figures_dir": out / "figures" / name,
        "tables_dir": out / "tables" / name,
        "numbers_path": out / "numbers" / f"{name}.json",
    }
    extra = {} if name in ("01-fidelity-vs-score", "05-volume-direction", "07-noise-ceiling") else {"published_path": PUBLISHED}
    result = PIPELINE[name](
        params,
        processed,
        paths["figures_dir"],
        paths["tables_dir"],
        paths["numbers_path"],
        params.notebooks.options(name),
        **extra,
    )
    return result, json.loads(paths["numbers_path"].read_text())


EXPECTED_REFUSAL = {  # notebook -> (fewest quants it needs, the start of its refusal)
    "01-fidelity-vs-score": (4, "fewer than 4 quants (n = {n})"),
    "02-silent-zone-sweep": (4, "fewer than 4 quants (n = {n})"),
    "03-failure-prediction": (1, "no quants in the cohort"),
    "04-routing": (2, "{what}"),
    "05-volume-direction": (4, "fewer than 4 quants (n = {n})"),
    "07-noise-ceiling": (4, "fewer than 4 quants (n = {n})"),
}


@pytest.mark.parametrize("n_quants", [0, 1, 2, 3])
@pytest.mark.parametrize("name", list(PIPELINE))
def test_small_cohorts_complete_and_say_why(tmp_path, params, name, n_quants):
    processed = write_cohort(tmp_path, params, n_quants)
    result, numbers = run_report(name, params, processed, tmp_path / "results")
    assert numbers == json.loads(json.dumps(result["numbers"], default=float))  # what the notebook shows is what was written
    needed, refusal = EXPECTED_REFUSAL[name]
    if n_quants < needed:
        what = (
            "no quants in the cohort"
            if n_quants == 0
            else f"routing needs at least 2 quants with per-prompt KLD; the cohort has {n_quants}"
        )
        assert numbers["refused"].startswith(refusal.format(n=n_quants, what=what))
    else:
        assert "refused" not in numbers
    for figure in result["figures"].values():  # every figure is written, empty or not, with its data beside it
        assert figure.exists() and figure.with_suffix(".csv").exists()
    assert list((tmp_path / "results" / "tables" / name).glob("*.csv"))


def test_refusals_inside_the_numbers(tmp_path, params):
    processed = write_cohort(tmp_path, params, 2)
    _, numbers = run_report("01-fidelity-vs-score", params, processed, tmp_path / "results")
    assert numbers["n_quants"] == 2 and numbers["primary"]["full"]["rho"] is None
    assert numbers["primary"]["full"]["refused"] == "fewer than 4 quants (n = 2)"
    _, numbers = run_report("02-silent-zone-sweep", params, processed, tmp_path / "results")
    assert numbers["n_zones"] == numbers["n_refused"] == 7  # every margin; no k fits 2 quants
    _, numbers = run_report("04-routing", params, processed, tmp_path / "results")
    assert numbers["n_pairs"] == 0 and numbers["accuracy_pooled"] is None and "refused" not in numbers


def test_a_complete_cohort_refuses_nothing(tmp_path, params):
    processed = write_cohort(tmp_path, params, 6, seed=1)
    seen = {}
    for name in PIPELINE:
        result, seen[name] = run_report(name, params, processed, tmp_path / "results")
        assert "refused" not in seen[name], name
    numbers = seen["05-volume-direction"]
    assert numbers["volume"]["full"]["n"] == 6 and numbers["identity_max_abs_error"] == 0.0
    assert seen["07-noise-ceiling"]["reliability"]["full"]["reliability"] is not None
    result, numbers = run_report("01-fidelity-vs-score", params, processed, tmp_path / "results")
    assert numbers["n_quants"] == 6 and numbers["n_variants"] == 14 and numbers["primary"]["full"]["rho"] is not None
    assert set(result["variants_full_vs_silent"]["variant"]) == set(params.variants)


@pytest.mark.parametrize("name", ["03-failure-prediction", "04-routing"])
def test_cohort_without_per_prompt_kld(tmp_path, params, name):
    processed = write_cohort(tmp_path, params, 3, prompt_kld=False)
    result, numbers = run_report(name, params, processed, tmp_path / "results")
    assert numbers["prompt_kld_available"] is False and numbers["refused"].startswith("no per-prompt KLD in the item table")
    table = next((tmp_path / "results" / "tables" / name).glob("*.csv"))
    assert pd.read_csv(table).empty


def test_published_cohorts(tmp_path, params):
    options = {**params.notebooks.options("06-published-cohorts"), "resamples": 200}
    result = reports.published_cohorts(
        params, REPO / "data" / "external", tmp_path / "tables", tmp_path / "numbers.json", options
    )
    numbers = json.loads((tmp_path / "numbers.json").read_text())
    assert set(numbers) == {"qwen3_6_35b_a3b", "qwen3_5_35b_a3b", "gemma_3_27b"} and numbers == result["numbers"]
    assert numbers["qwen3_5_35b_a3b"]["n"] == 14 and numbers["qwen3_5_35b_a3b"]["n_silent"] == 9  # margin 0.5 points
    assert numbers["qwen3_6_35b_a3b"]["n_silent"] == 7  # silent_k 7
    assert len(list((tmp_path / "tables").glob("*.correlations.json"))) == 3
    with pytest.raises(Exception, match="notebooks.06-published-cohorts.resamples"):
        reports.published_cohorts(
            params, REPO / "data" / "external", tmp_path / "tables", tmp_path / "n.json", {**options, "resamples": 5}
        )
