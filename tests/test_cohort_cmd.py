"""`silentzone analyze-cohort` on synthetic and published cohort CSVs: output shape, values against
scipy, the reference row, zone rules, refusals, byte-identical reruns and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats as ss

from silentzone import cli, published
from silentzone.errors import SilentzoneError

EXTERNAL = Path(__file__).resolve().parents[1] / "data" / "external"

CSV = """# source: made up for the test
# second comment line
name,kld,ppl,mmlu,arc,note
BF16 (reference),,6.50,70.0,60.0,ref
Q8_0,0.004,6.51,70.2,59.9,a
Q6_K,0.010,6.52,69.8,60.3,b
Q5_K_M,0.020,6.55,69.9,59.5,c
Q4_K_M,0.050,6.60,69.0,59.8,d
Q3_K_M,0.150,6.90,67.5,57.0,e
Q2_K,0.400,7.60,63.0,52.5,f
IQ1_S,0.900,9.90,50.0,40.0,g
"""


def _run(tmp_path, *args, csv=CSV, name="toy.csv"):
    path = tmp_path / name
    path.write_text(csv)
    code = cli.main(["analyze-cohort", str(path), *args, "--out", str(tmp_path / "out")])
    return code, tmp_path / "out" / "correlations.json"


def test_shape_and_values(tmp_path, capsys):
    code, out = _run(
        tmp_path, "--fidelity", "kld", "--fidelity", "ppl", "--score", "mmlu,arc", "--silent-margin", "0.5", "--resamples", "500"
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["cohort"] == "toy" and doc["n"] == 7 and doc["score"] == ["mmlu", "arc"] and doc["reference"] == "BF16 (reference)"
    table = pd.read_csv(tmp_path / "toy.csv", comment="#").iloc[1:]  # the reference row is not correlated
    composite = table[["mmlu", "arc"]].mean(axis=1)
    for result, col in zip(doc["results"], ["kld", "ppl"]):
        assert result["fidelity"] == col
        full = result["full"]
        assert set(full) >= {"n", "rho", "p_perm", "ci_low", "ci_high"} and full["n"] == 7
        assert full["rho"] == pytest.approx(ss.spearmanr(table[col], composite).statistic)
        assert full["ci_low"] <= full["rho"] <= full["ci_high"] and 0 < full["p_perm"] <= 1
    # margin 0.5 around the reference composite 65.0: Q8_0 65.05, Q6_K 65.05, Q5_K_M 64.7, Q4_K_M 64.4 (out)
    silent = doc["results"][0]["silent"]
    assert silent["members"] == ["Q8_0", "Q6_K", "Q5_K_M"] and silent["rho"] is None and "fewer than 4" in silent["refused"]
    text = capsys.readouterr().out
    assert "kld" in text and "refused" in text and "rho=" in text


def test_silent_k_and_exact_p(tmp_path):
    code, out = _run(tmp_path, "--fidelity", "kld", "--score", "mmlu", "--silent-k", "5", "--resamples", "200")
    assert code == 0
    silent = json.loads(out.read_text())["results"][0]["silent"]
    assert silent["members"] == ["Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M"] and silent["n"] == 5
    # n = 5: 5! = 120 <= 200 resamples, so p is the exact permutation p
    kld, mmlu = [0.004, 0.010, 0.020, 0.050, 0.150], [70.2, 69.8, 69.9, 69.0, 67.5]
    assert silent["rho"] == pytest.approx(ss.spearmanr(kld, mmlu).statistic)
    exact = ss.permutation_test(
        (kld,), lambda a: ss.spearmanr(a, mmlu).statistic, permutation_type="pairings", vectorized=False, n_resamples=np.inf
    ).pvalue
    assert silent["p_perm"] == pytest.approx(exact)


def test_rerun_is_byte_identical(tmp_path):
    args = ["--fidelity", "kld", "--score", "mmlu,arc", "--silent-k", "4", "--resamples", "300", "--seed", "7"]
    _, out = _run(tmp_path, *args)
    first = out.read_bytes()
    _, out = _run(tmp_path, *args)
    assert out.read_bytes() == first


@pytest.mark.parametrize(
    "args,csv,message",
    [
        (["--fidelity", "kl_mean", "--score", "mmlu", "--silent-k", "4"], CSV, "toy.csv:3: no column 'kl_mean'"),
        (
            ["--fidelity", "kld", "--score", "mmlu", "--silent-k", "4"],
            CSV.replace("69.0,59.8", "n/a?,59.8"),
            "toy.csv:8: column 'mmlu', row 'Q4_K_M'",
        ),
        (
            ["--fidelity", "kld", "--score", "mmlu", "--silent-k", "4"],
            "\n".join(CSV.splitlines()[:7]),
            "only 3 rows have both 'kld'",
        ),
        (
            ["--fidelity", "kld", "--score", "mmlu", "--silent-k", "4", "--reference-row", "F16"],
            CSV,
            "--reference-row 'F16' not found",
        ),
        (
            ["--fidelity", "kld", "--score", "mmlu", "--silent-margin", "1"],
            CSV.replace("BF16 (reference)", "BF16"),
            "--silent-margin needs a reference row",
        ),
        (
            ["--fidelity", "kld", "--score", "mmlu", "--silent-k", "4"],
            CSV.replace("Q6_K,", "Q8_0,"),
            "toy.csv:6: quant 'Q8_0' appears twice",
        ),
        (
            ["--fidelity", "kld", "--score", "mmlu", "--silent-k", "0"],
            CSV,
            "--silent-k: Input should be greater than or equal to 1",
        ),
        # no per-item outcomes: the default (paired-bootstrap) zone is impossible, and the command says so
        (["--fidelity", "kld", "--score", "mmlu"], CSV, "give --silent-margin X (in score units) or --silent-k K"),
    ],
)
def test_errors_are_one_line(tmp_path, capsys, args, csv, message):
    code, _ = _run(tmp_path, *args, csv=csv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_constant_column_is_refused(tmp_path):
    csv = CSV.replace("6.51", "6.50").replace("6.52", "6.50").replace("6.55", "6.50").replace("6.60", "6.50")
    csv = csv.replace("6.90", "6.50").replace("7.60", "6.50").replace("9.90", "6.50")
    code, out = _run(tmp_path, "--fidelity", "ppl", "--score", "mmlu", "--silent-k", "4", "--resamples", "100", csv=csv)
    full = json.loads(out.read_text())["results"][0]["full"]
    assert code == 0 and full["rho"] is None and "constant ppl" in full["refused"]


def test_published_qwen35_cohort(tmp_path):
    src = EXTERNAL / "qwen3.5-35b-a3b__apex-quant.csv"
    assert src.read_text().startswith("# source: https://github.com/mudler/apex-quant")
    scores = "hellaswag_pct,winogrande_pct,mmlu_pct,arc_challenge_pct,truthfulqa_pct"
    code = cli.main(
        [
            "analyze-cohort",
            str(src),
            "--fidelity",
            "kl_mean",
            "--score",
            scores,
            "--silent-margin",
            "0.5",
            "--resamples",
            "500",
            "--out",
            str(tmp_path),
        ]
    )
    doc = json.loads((tmp_path / "correlations.json").read_text())
    table = pd.read_csv(src, comment="#")
    quants = table[table["quant"] != "F16 (reference)"]
    composite = quants[scores.split(",")].mean(axis=1)
    assert code == 0 and doc["n"] == 14
    assert doc["results"][0]["full"]["rho"] == pytest.approx(ss.spearmanr(quants["kl_mean"], composite).statistic)
    ref = table.loc[table["quant"] == "F16 (reference)", scores.split(",")].mean(axis=1).iloc[0]
    expected = quants.loc[(composite - ref).abs() <= 0.5, "quant"].tolist()
    assert doc["results"][0]["silent"]["members"] == expected and len(expected) >= 4


def test_published_gemma_cohort_drops_rows_without_kld(tmp_path):
    code = cli.main(
        [
            "analyze-cohort",
            str(EXTERNAL / "gemma-3-27b__unsloth-dynamic2.csv"),
            "--fidelity",
            "kld_dynamic2",
            "--score",
            "mmlu5_unsloth_pct",
            "--silent-margin",
            "1",
            "--resamples",
            "200",
            "--out",
            str(tmp_path),
        ]
    )
    result = json.loads((tmp_path / "correlations.json").read_text())["results"][0]
    assert code == 0 and result["full"]["n"] == 7  # only 7 quants have both KLD and MMLU
    assert result["silent"]["members"] == ["Q3_K_XL", "Q4_K_XL"] and result["silent"]["refused"]


def test_read_table_missing_cells_and_names(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("# a comment\nname , kld,score\n A ,0.5, 70\nB,,n/a\nC,NA,71.5\n")
    table, name_col = published.read_table(path, ["kld", "score"])
    assert name_col == "name " and table["model"].tolist() == ["A", "B", "C"]  # names stripped; header as written
    assert table["kld"].tolist()[0] == 0.5 and table[["kld", "score"]].isna().sum().tolist() == [2, 1]
    assert table["score"].dtype == "float64"
    path.write_text("name,kld\nA,0.5\n,0.7\n")
    with pytest.raises(SilentzoneError, match=r"t.csv:3: row has no name in column 'name'"):
        published.read_table(path, ["kld"])
    with pytest.raises(SilentzoneError, match="not found"):
        published.read_table(tmp_path / "absent.csv", ["kld"])


def test_analyze_needs_exactly_one_rule(tmp_path):
    path = tmp_path / "toy.csv"
    path.write_text(CSV)
    with pytest.raises(SilentzoneError, match="not both"):
        published.analyze(path, ["kld"], ["mmlu"], margin=0.5, k=3)
    doc, _ = published.analyze(path, ["kld"], ["mmlu"], k=3, resamples=100)
    assert doc["silent_rule"] == "the 3 quants with the lowest kld" and doc["results"][0]["silent"]["members"] == [
        "Q8_0",
        "Q6_K",
        "Q5_K_M",
    ]
