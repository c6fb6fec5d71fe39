"""A whole external cohort -> cohort.parquet + items.parquet in the project's exact schema, and
published cohort CSVs through a column map."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import LLAMACPP_FIXTURES, REPO

from silentzone.cli import main
from silentzone.errors import SilentzoneError
from silentzone.ingest import VARIANT_METRICS, VARIANTS, cohort_csv
from silentzone.ingest.manifest import build

PAPER = Path(__file__).parent / "fixtures" / "ingest" / "paper_scale"
QUANTS = ["Q4_1", "Q8_0", "Q6_K", "Q5_K_M", "Q5_0", "Q4_K_M", "Q4_0", "Q2_K"]


def test_variant_names_are_the_registry():
    registry = yaml.safe_load((REPO / "profiles" / "default.yaml").read_text())["variants"]
    assert VARIANTS == list(registry)
    assert VARIANT_METRICS == {name: spec["metric"] for name, spec in registry.items()}


@pytest.fixture(scope="module")
def built():
    return build(PAPER / "manifest.yaml")


def test_paper_scale_cohort_schema(built):
    cohort, items = built
    variants = list(yaml.safe_load((REPO / "profiles" / "default.yaml").read_text())["variants"])
    tasks = ["arc_easy", "gsm8k", "livecodebench"]
    assert list(cohort.columns) == ["model", "is_reference", "bpw", *variants, *[f"score_{t}" for t in tasks], "composite"]
    assert cohort["model"].tolist() == ["reference", *QUANTS[1:]]
    assert cohort["is_reference"].tolist() == [True] + [False] * 7
    assert all(str(cohort[c].dtype) == "float64" for c in cohort.columns[2:])
    assert list(items.columns[:6]) == ["model", "task", "item_id", "correct", "prompt_kld", "n_prompt_tokens"]
    assert items["correct"].dtype == bool and items["prompt_kld"].isna().all()
    assert len(items) == 8 * (20 + 12 + 10) and not items.duplicated(["model", "task", "item_id"]).any()


def test_paper_scale_variants_are_the_logs_values(built):
    """Variants against kld_summary.csv (llama.cpp's printed values), derived by hand here."""
    cohort = built[0].set_index("model")
    logs = {q: PAPER / "logs" / ("kld-Q4_1_self.log" if q == "Q4_1" else f"kld-{q}.log") for q in QUANTS}
    summary = pd.read_csv(LLAMACPP_FIXTURES / "kld_summary.csv").set_index("log")
    for q in QUANTS:
        s = summary.loc[f"logs/{logs[q].name}"]
        assert (PAPER / "logs" / logs[q].name).read_bytes() == (LLAMACPP_FIXTURES / "logs" / logs[q].name).read_bytes()
        row = cohort.loc["reference" if q == "Q4_1" else q]
        assert row["kld_mean"] == s["mean_kld"] and row["kld_median"] == s["median_kld"] and row["kld_p90"] == s["p90.0_kld"]
        assert row["kld_p99"] == s["p99.0_kld"] and row["kld_p99_9"] == s["p99.9_kld"] and row["ppl_ratio"] == s["mean_ppl_ratio"]
        assert row["abs_dln_ppl"] == abs(s["mean_ln_ppl_ratio"])
        assert row["top1_disagree"] == pytest.approx(1 - s["same_top_p_pct"] / 100, abs=1e-12)
        assert row["rms_dp"] == pytest.approx(s["rms_dp_pct"] / 100, abs=1e-12)
        for missing in ("kld_topk_mean", "ppl_greedy", "kld_mean_fiction", "kld_mean_code", "kld_mean_ctx128"):
            assert math.isnan(row[missing])
    assert cohort.loc["Q8_0", "bpw"] == 8.51 and cohort.loc["reference", "bpw"] == 5.74


def test_paper_scale_scores_count_the_raw_files(built):
    """score_<task> = share of items correct, counted here straight from the JSON."""
    cohort = built[0].set_index("model")
    for q in QUANTS:
        folder = PAPER / "lm_eval" / q
        arc = [json.loads(x) for x in next(folder.glob("samples_arc_easy_*.jsonl")).read_text().splitlines()]
        gsm = [json.loads(x) for x in next(folder.glob("samples_gsm8k_*.jsonl")).read_text().splitlines()]
        lcb = json.loads((PAPER / "livecodebench" / f"{q}_codegeneration_1_0.2_eval_all.json").read_text())
        want = [
            sum(s["acc"] for s in arc) / 20,
            sum(s["exact_match"] for s in gsm if s["filter"] == "strict-match") / 12,
            sum(p["graded_list"][0] for p in lcb) / 10,
        ]
        row = cohort.loc["reference" if q == "Q4_1" else q]
        assert [row["score_arc_easy"], row["score_gsm8k"], row["score_livecodebench"]] == pytest.approx(want, abs=1e-15)
        assert row["composite"] == pytest.approx(sum(want) / 3, abs=1e-15)


def test_cli_writes_identical_bytes_twice(tmp_path):
    for out in ("a", "b"):
        assert main(["ingest", "cohort", str(PAPER / "manifest.yaml"), "--out", str(tmp_path / out)]) == 0
    for name in ("cohort.parquet", "items.parquet", "cohort.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert pd.read_parquet(tmp_path / "a" / "cohort.parquet").shape == (8, 21)


@pytest.fixture
def paper_copy(tmp_path):
    root = tmp_path / "paper_scale"
    shutil.copytree(PAPER, root)
    return root


def _edit_manifest(root: Path, edit) -> Path:
    path = root / "manifest.yaml"
    path.write_text(edit(path.read_text()))
    return path


def _fails(manifest: Path, message: str, tmp_path: Path, capsys):
    out = tmp_path / "out"
    assert main(["ingest", "cohort", str(manifest), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()  # nothing half-written
    return err


def test_mismatched_quant_names_between_fidelity_and_bench(paper_copy, tmp_path, capsys):
    manifest = _edit_manifest(paper_copy, lambda t: t.replace("  Q6_K: logs/", "  Q6_k: logs/"))
    err = _fails(
        manifest,
        "quant names differ between fidelity and bench sources (Q6_k only under fidelity; Q6_K only under bench)",
        tmp_path,
        capsys,
    )
    assert f"{manifest}:7:" in err


def test_log_of_another_quant(paper_copy, tmp_path, capsys):
    shutil.copyfile(LLAMACPP_FIXTURES / "b4747" / "kld-Q4_K_M.log", paper_copy / "logs" / "old.log")
    manifest = _edit_manifest(paper_copy, lambda t: t.replace("Q5_0: logs/kld-Q5_0.log", "Q5_0: logs/old.log"))
    _fails(manifest, "logs/old.log measured SmolLM2-135M-Instruct.Q4_K_M.gguf, but is filed under quant 'Q5_0'", tmp_path, capsys)


def test_lm_eval_run_of_another_quant(paper_copy, tmp_path, capsys):
    results = next((paper_copy / "lm_eval" / "Q6_K").glob("results_*.json"))
    results.write_text(results.read_text().replace("Q6_K.gguf", "Q5_0.gguf"))
    _fails(paper_copy / "manifest.yaml", "is a run of 'Q5_0', but is filed under 'Q6_K'", tmp_path, capsys)


def test_sample_file_from_a_different_task_set(paper_copy, tmp_path, capsys):
    src = next((paper_copy / "lm_eval" / "Q4_0").glob("samples_arc_easy_*.jsonl"))
    shutil.copyfile(src, src.with_name(src.name.replace("arc_easy", "arc_challenge")))
    err = _fails(
        paper_copy / "manifest.yaml",
        "model 'Q4_0' has a different task set than its siblings: samples_arc_challenge_",
        tmp_path,
        capsys,
    )
    assert "adds task 'arc_challenge'" in err


def test_duplicate_item_ids(paper_copy, tmp_path, capsys):
    path = next((paper_copy / "lm_eval" / "Q2_K").glob("samples_arc_easy_*.jsonl"))
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines + [lines[3]]))
    _fails(paper_copy / "manifest.yaml", f"{path}:21: duplicate doc_id 3 (first at line 4)", tmp_path, capsys)


def test_different_items_than_the_reference(paper_copy, tmp_path, capsys):
    path = next((paper_copy / "lm_eval" / "Q8_0").glob("samples_arc_easy_*.jsonl"))
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    _fails(
        paper_copy / "manifest.yaml",
        "('Q8_0', task arc_easy) has different items than the reference's (e.g. item 19)",
        tmp_path,
        capsys,
    )


def test_truncated_log_in_a_cohort(paper_copy, tmp_path, capsys):
    log = paper_copy / "logs" / "kld-Q4_0.log"
    text = log.read_text()
    log.write_text(text[: text.rindex("Same top p")])
    _fails(
        paper_copy / "manifest.yaml",
        f"{log}:66: statistics block starting at line 51 lacks same_top_p; the log is truncated",
        tmp_path,
        capsys,
    )


def test_manifest_errors(paper_copy, tmp_path, capsys):
    _fails(_edit_manifest(paper_copy, lambda t: t + "extra: 1\n"), "unknown key 'extra'", tmp_path, capsys)
    _fails(
        _edit_manifest(paper_copy, lambda t: t.replace("logs/kld-Q8_0.log", "logs/nope.log").replace("extra: 1\n", "")),
        "logs/nope.log not found (paths are relative to the manifest)",
        tmp_path,
        capsys,
    )


EXTERNAL = REPO / "data" / "external"  # the published cohorts the repository ships


def test_published_cohort_csv(tmp_path):
    out = tmp_path / "qwen35.csv"
    src = EXTERNAL / "qwen3.5-35b-a3b__apex-quant.csv"
    args = [
        "ingest",
        "csv",
        str(src),
        "--reference",
        "F16 (reference)",
        "--map",
        "kld_mean=kl_mean",
        "--map",
        "kld_median=kl_median",
        "--map",
        "kld_p99_9=kl_99_9",
        "--map",
        "ppl=perplexity",
        "--map",
        "score_hellaswag=hellaswag_pct",
        "--map",
        "score_mmlu=mmlu_pct",
        "--percent",
        "score_hellaswag",
        "--percent",
        "score_mmlu",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    got = pd.read_csv(out).set_index("model")
    raw = pd.read_csv(src, comment="#").set_index("quant")
    assert len(got) == len(raw) == 15 and got.loc["reference", "is_reference"]
    assert got.loc["Q8_0", "kld_mean"] == raw.loc["Q8_0", "kl_mean"] == 0.00458
    assert got.loc["Q8_0", "ppl_ratio"] == pytest.approx(6.5327 / 6.5371, rel=1e-12)
    assert got.loc["IQ2_M", "abs_dln_ppl"] == pytest.approx(abs(math.log(7.3029 / 6.5371)), rel=1e-9)
    assert got.loc["reference", "kld_mean"] == 0.0 and got.loc["reference", "ppl_ratio"] == 1.0
    assert got.loc["Q8_0", "composite"] == pytest.approx((0.83 + 0.412145) / 2, rel=1e-12)
    assert math.isnan(got.loc["Q8_0", "kld_p90"])


def test_published_cohort_csv_errors():
    src = EXTERNAL / "qwen3.6-35b-a3b__apex-quant.csv"
    with pytest.raises(
        SilentzoneError,
        match=r"qwen3.6-35b-a3b__apex-quant.csv:8: column 'card_size', row 'BF16 \(reference\)': '65 GB' is not a number",
    ):
        cohort_csv.read_cohort_csv(src, {"bpw": "card_size"}, "BF16 (reference)")
    with pytest.raises(SilentzoneError, match="no row with quant = 'BF16'"):
        cohort_csv.read_cohort_csv(src, {"kld_mean": "card_kl_mean"}, "BF16")
    with pytest.raises(SilentzoneError, match="no column 'kl'"):
        cohort_csv.read_cohort_csv(src, {"kld_mean": "kl"}, "BF16 (reference)")
    with pytest.raises(SilentzoneError, match="unknown target"):
        cohort_csv.read_cohort_csv(src, {"kld": "card_kl_mean"}, "BF16 (reference)")


def test_cohort_csv_name_column_and_percent(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("# made up\nsize,name,kl,acc\n16,BF16,,70.0\n8.5,Q8_0,0.01,69.5\n4.5,Q4_K_M,0.05,n/a\n")
    got = cohort_csv.read_cohort_csv(
        path, {"model": "name", "bpw": "size", "kld_mean": "kl", "score_acc": "acc"}, "BF16", ["score_acc"]
    )
    assert got["model"].tolist() == ["reference", "Q8_0", "Q4_K_M"] and got["is_reference"].tolist() == [True, False, False]
    assert got["kld_mean"].tolist() == [0.0, 0.01, 0.05]  # the reference's empty KLD is its identity value
    assert got["score_acc"].tolist()[:2] == [0.70, 0.695] and math.isnan(got.loc[2, "composite"])
    assert got.loc[1, "composite"] == got.loc[1, "score_acc"]
    with pytest.raises(SilentzoneError, match="unknown target; use model, bpw"):
        cohort_csv.read_cohort_csv(path, {"quant": "name"}, "BF16")
