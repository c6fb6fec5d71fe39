"""The bench stage end to end on the tiny profile: table schema, pinned outcomes, determinism,
per-prompt KLD of a quant, resume after an interruption, and one-line errors."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import yaml

from silentzone import cli, config
from silentzone.bench import items, run
from silentzone.errors import SilentzoneError


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """prepare + `bench reference` + `bench q4_0` once, in a fresh directory."""
    from tests.conftest import REPO

    root = tmp_path_factory.mktemp("bench")
    params = config.build_profile("tiny", REPO / "profiles")
    params["_source"] = "params.yaml"
    dirs = {"prepared_dir": root / "prepared", "reference_dir": root / "reference", "out_dir": root / "bench"}
    items.prepare(params, dirs["prepared_dir"])
    with pytest.raises(SilentzoneError, match="run `silentzone bench reference` first"):
        run.run_bench(params, "q4_0", **dirs)
    ref = run.run_bench(params, "reference", **dirs)
    quant = run.run_bench(params, "q4_0", **dirs)
    return params, dirs, ref, quant


def test_item_table_schema(tiny_run):
    params, dirs, ref, _ = tiny_run
    assert list(ref.columns) == run.COLUMNS
    assert (dirs["out_dir"] / "reference.parquet").exists()
    stored = pd.read_parquet(dirs["out_dir"] / "reference.parquet")
    assert list(stored["task"].unique()) == ["arc_easy", "winogrande", "humaneval"]
    assert stored["prompt_kld"].isna().all()  # the reference against itself: NaN by definition
    mc_rows = stored[stored["task"] != "humaneval"]
    assert mc_rows["choice_logprobs"].map(len).tolist() == [4, 4, 4, 4, 2, 2, 2]
    assert (mc_rows["correct"] == (mc_rows["chosen"] == [it["label"] for t in ("arc_easy", "winogrande") for it in items.read_prepared(t, dirs["prepared_dir"])])).all()
    code_row = stored[stored["task"] == "humaneval"].iloc[0]
    assert code_row["test_status"] == "unclosed" and not code_row["correct"]  # 8 random tokens never close the block
    assert (stored["n_prompt_tokens"] > 0).all()


# Per-item outcomes of the tiny model (random llama, seed 20260619). A change here means scoring,
# tokenisation or item selection changed: check why before updating.
PINNED = {
    ("arc_easy", "Mercury_7015715"): (0, 3),
    ("arc_easy", "VASoL_2009_5_10"): (2, 0),
    ("arc_easy", "Mercury_SC_405526"): (0, 0),
    ("arc_easy", "Mercury_7009940"): (3, 3),
    ("winogrande", "70"): (0, 0),
    ("winogrande", "402"): (0, 0),
    ("winogrande", "1095"): (1, 1),
}


def test_pinned_outcomes_of_the_tiny_model(tiny_run):
    ref = tiny_run[2]
    got = {(r.task, r.item_id): (r.chosen, r.chosen_norm) for r in ref.itertuples() if r.task != "humaneval"}
    assert got == PINNED


def test_quant_prompt_kld(tiny_run):
    _, _, ref, quant = tiny_run
    assert (quant["model"] == "q4_0").all()
    assert quant[["task", "item_id", "n_prompt_tokens"]].equals(ref[["task", "item_id", "n_prompt_tokens"]])
    kld = quant["prompt_kld"]
    assert kld.notna().all() and (kld > 0).all() and kld.map(math.isfinite).all()


def test_two_runs_give_identical_tables(tiny_run, tmp_path):
    params, dirs, _, _ = tiny_run
    again = {**dirs, "out_dir": tmp_path / "bench", "reference_dir": tmp_path / "reference"}
    run.run_bench(params, "reference", **again)
    assert (again["out_dir"] / "reference.parquet").read_bytes() == (dirs["out_dir"] / "reference.parquet").read_bytes()


def test_interrupted_run_resumes_per_task(tiny_run, tmp_path, monkeypatch):
    params, dirs, ref, _ = tiny_run
    params = {**params, "bench": {**params["bench"], "tasks": {"arc_easy": 4, "winogrande": 3}}}
    fresh = {**dirs, "out_dir": tmp_path / "bench", "reference_dir": tmp_path / "reference"}
    real_run_task, calls = run.run_task, []

    def flaky(params, name, task, *args):
        calls.append(task)
        if task == "winogrande" and calls.count("winogrande") == 1:
            raise KeyboardInterrupt
        return real_run_task(params, name, task, *args)

    monkeypatch.setattr(run, "run_task", flaky)
    with pytest.raises(KeyboardInterrupt):
        run.run_bench(params, "reference", **fresh)
    assert (fresh["out_dir"] / ".parts" / "reference" / "arc_easy.parquet").exists()
    assert not (fresh["out_dir"] / "reference.parquet").exists()
    table = run.run_bench(params, "reference", **fresh)
    assert calls == ["arc_easy", "winogrande", "winogrande"]  # arc_easy was not redone
    expected = ref[ref["task"] != "humaneval"].reset_index(drop=True)
    pd.testing.assert_frame_equal(table, expected)


def test_cli_errors_are_one_line(workdir, tiny_params, capsys):
    (workdir / "params.yaml").write_text(yaml.safe_dump({k: v for k, v in tiny_params.items() if not k.startswith("_")}))
    assert cli.main(["bench", "reference"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "run `silentzone prepare` first" in err
    empty = {**tiny_params, "bench": {"tasks": {}}}
    (workdir / "params.yaml").write_text(yaml.safe_dump({k: v for k, v in empty.items() if not k.startswith("_")}))
    assert cli.main(["bench", "reference"]) == 2
    assert "bench.tasks is empty" in capsys.readouterr().err
