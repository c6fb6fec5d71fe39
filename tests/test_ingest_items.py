"""lm-eval --log_samples and LiveCodeBench eval_all.json into item rows (fixtures: tests/fixtures/ingest)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from silentzone.cli import main
from silentzone.errors import SilentzoneError
from silentzone.ingest.livecodebench import read_eval_all
from silentzone.ingest.lm_eval import read_model, read_samples, task_of

FIX = Path(__file__).parent / "fixtures" / "ingest"
DATE = "2025-03-14T09-26-53.589793"
ARC = FIX / "lm_eval" / f"samples_arc_easy_{DATE}.jsonl"
GSM = FIX / "lm_eval" / f"samples_gsm8k_{DATE}.jsonl"
LCB = FIX / "livecodebench" / "codegeneration_2_0.2_eval_all.json"


def test_task_from_file_name():
    assert task_of(ARC) == "arc_easy"
    assert task_of(Path("samples_mmlu_high_school_physics_2024-05-01T12-34-56.123456.jsonl")) == "mmlu_high_school_physics"
    with pytest.raises(SilentzoneError, match="not an lm-eval samples file name"):
        task_of(Path("arc.jsonl"))


def test_multiple_choice_rows():
    items = read_samples(ARC, "Q8_0")
    assert list(items.columns[:6]) == ["model", "task", "item_id", "correct", "prompt_kld", "n_prompt_tokens"]
    assert items["correct"].tolist() == [True, False, True, True, False]
    assert items["prompt_kld"].isna().all() and items["metric"].eq("acc").all()
    # Log-likelihoods parsed back from lm-eval's strings; chosen = argmax, checked against acc.
    raw = [json.loads(line) for line in ARC.read_text().splitlines()]
    for row, sample in zip(items.itertuples(), raw):
        lls = [float(r[0]) for r in sample["filtered_resps"]]
        assert row.choice_logprobs == lls
        assert row.chosen == lls.index(max(lls)) and (row.chosen == int(sample["target"])) == row.correct


def test_generative_rows_need_a_filter_choice():
    with pytest.raises(
        SilentzoneError, match=r"several filters \(flexible-extract, strict-match\); choose one with --filter gsm8k=NAME"
    ):
        read_samples(GSM, "Q8_0")
    items = read_samples(GSM, "Q8_0", filter_name="strict-match")
    assert items["correct"].tolist() == [True, False, True] and items["generation"].tolist() == ["3", "11", "17"]
    assert items["metric"].eq("exact_match").all()


def test_read_model_folder_and_cli(tmp_path):
    items = read_model([FIX / "lm_eval"], "Q8_0", filters={"gsm8k": "strict-match"})
    assert sorted(items["task"].unique()) == ["arc_easy", "gsm8k"] and len(items) == 8
    out = tmp_path / "items.parquet"
    assert (
        main(
            [
                "ingest",
                "lm-eval",
                str(FIX / "lm_eval"),
                "--model",
                "Q8_0",
                "--filter",
                "gsm8k=strict-match",
                "--metric",
                "arc_easy=acc_norm",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    back = pd.read_parquet(out)
    raw = [json.loads(line) for line in ARC.read_text().splitlines()]
    assert back[back["task"] == "arc_easy"]["correct"].tolist() == [s["acc_norm"] == 1.0 for s in raw]


def _write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda ls: ls + [ls[1]], r":6: duplicate doc_id 1 \(first at line 2\)"),
        (lambda ls: ls[:2] + [ls[2][:40] + "\n"], r":3: invalid JSON"),
        (lambda ls: [ls[0].replace('"acc": 1.0', '"acc": 0.5')], r":1: metric 'acc' = 0.5 is not 0/1"),
        (lambda ls: [ls[0].replace('"acc": 1.0', '"acc": 0.0')], r":1: acc=0.0 disagrees with the logged log-likelihoods"),
        (lambda ls: [ls[0].replace('"doc_id"', '"id"')], r":1: no `doc_id`"),
    ],
)
def test_bad_sample_files(tmp_path, edit, message):
    lines = ARC.read_text().splitlines(keepends=True)
    path = _write(tmp_path, ARC.name, edit(lines))
    with pytest.raises(SilentzoneError, match=message):
        read_samples(path, "Q8_0")


def test_two_runs_of_one_task_are_an_error(tmp_path):
    other = tmp_path / "samples_arc_easy_2025-04-01T00-00-00.000000.jsonl"
    other.write_text(ARC.read_text())
    with pytest.raises(SilentzoneError, match="task 'arc_easy' already read"):
        read_model([ARC, other], "Q8_0")


def test_livecodebench_rows():
    items = read_eval_all(LCB, "Q8_0", "release_v4")
    raw = json.loads(LCB.read_text())
    assert items["item_id"].tolist() == [p["question_id"] for p in raw]
    assert items["correct"].tolist() == [p["graded_list"][0] for p in raw] == [True, False, True, False, True, False]
    assert items["pass_at_1"].tolist() == [1.0, 0.0, 0.5, 0.5, 1.0, 0.0]
    assert items["test_status"].tolist() == ["passed", "Wrong Answer", "passed", "Wrong Answer", "passed", "Wrong Answer"]
    assert items["release"].eq("release_v4").all() and items["task"].eq("livecodebench").all()
    assert (items["window_start"].iloc[0], items["window_end"].iloc[0]) == ("2024-08-01", "2024-08-16")
    assert items["prompt_kld"].isna().all() and items["generation"].iloc[0].startswith("class Solution")


def test_livecodebench_date_window_and_cli(tmp_path):
    items = read_eval_all(LCB, "Q8_0", "release_v4", start_date="2024-08-05", end_date="2024-08-12")
    assert items["item_id"].tolist() == ["3002", "3003"] and items["window_start"].eq("2024-08-05").all()
    out = tmp_path / "lcb.csv"
    assert main(["ingest", "livecodebench", str(LCB), "--model", "reference", "--release", "release_v4", "--out", str(out)]) == 0
    assert pd.read_csv(out)["model"].eq("reference").all()


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda ps: ps + [ps[0]], "duplicate question_id 3000"),
        (lambda ps: [{**ps[0], "pass@1": 0.3}], r"pass@1 0.3 of 3000 disagrees with graded_list \(1.0\)"),
        (lambda ps: [{k: v for k, v in ps[0].items() if k != "graded_list"}], "lacks graded_list"),
        (lambda ps: [{**ps[0], "graded_list": []}], "non-empty list of true/false"),
    ],
)
def test_bad_livecodebench_files(tmp_path, edit, message):
    path = tmp_path / "x_eval_all.json"
    path.write_text(json.dumps(edit(json.loads(LCB.read_text())), indent=4))
    with pytest.raises(SilentzoneError, match=message) as err:
        read_eval_all(path, "Q8_0", "release_v4")
    assert str(err.value).startswith(f"{path}:")


def test_ingest_never_imports_torch():
    import subprocess
    import sys

    code = (
        "import sys, silentzone.ingest.cli, silentzone.ingest.manifest, silentzone.ingest.llamacpp_kld; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
