"""llama.cpp --kl-divergence logs: every statistic of every real fixture log, against the values the
fixture's README and kld_summary.csv print (parsed there independently of our parser)."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from conftest import LLAMACPP_FIXTURES

from silentzone.cli import main
from silentzone.errors import SilentzoneError
from silentzone.ingest.llamacpp_log import parse_log, parse_logs, quant_from_model_file

# kld_summary.csv column -> ours (values in *_pct columns are percent; ours are fractions)
SUMMARY_TO_OURS = {
    "mean_ppl_q": "ppl_q",
    "mean_ppl_q_unc": "ppl_q_se",
    "mean_ppl_base": "ppl_base",
    "mean_ppl_base_unc": "ppl_base_se",
    "cor_ln_ppl_pct": "cor_ln_ppl",
    "mean_ln_ppl_ratio": "ln_ppl_ratio",
    "mean_ln_ppl_ratio_unc": "ln_ppl_ratio_se",
    "mean_ppl_ratio": "ppl_ratio",
    "mean_ppl_ratio_unc": "ppl_ratio_se",
    "mean_ppl_diff": "ppl_diff",
    "mean_ppl_diff_unc": "ppl_diff_se",
    "mean_kld": "kld_mean",
    "mean_kld_unc": "kld_mean_se",
    "maximum_kld": "kld_max",
    "minimum_kld": "kld_min",
    "median_kld": "kld_median",
    "mean_dp_pct": "dp_mean",
    "mean_dp_pct_unc": "dp_mean_se",
    "maximum_dp_pct": "dp_max",
    "minimum_dp_pct": "dp_min",
    "median_dp_pct": "dp_median",
    "rms_dp_pct": "rms_dp",
    "rms_dp_pct_unc": "rms_dp_se",
    "same_top_p_pct": "same_top_p",
    "same_top_p_pct_unc": "same_top_p_se",
}


def summary_key(col: str) -> str:
    if col in SUMMARY_TO_OURS:
        return SUMMARY_TO_OURS[col]
    m = re.fullmatch(r"p([\d.]+)_(kld|dp_pct)", col)
    assert m, col
    block = "kld" if m.group(2) == "kld" else "dp"
    return f"{block}_p{float(m.group(1)):g}".replace(".", "_")


@pytest.fixture(scope="module")
def summary():
    return pd.read_csv(LLAMACPP_FIXTURES / "kld_summary.csv")


@pytest.fixture(scope="module")
def parsed(summary):
    return parse_logs([LLAMACPP_FIXTURES / p for p in summary["log"]])


def test_every_statistic_of_every_log_matches_kld_summary(summary, parsed):
    assert len(parsed) == len(summary) == 12
    checked = 0
    for (_, want), (_, got) in zip(summary.iterrows(), parsed.iterrows()):
        assert got["source"] == want["log"].split("/")[-1]
        for col in summary.columns[1:]:
            ours = summary_key(col)
            expected = want[col] / 100 if col.endswith("_pct") or col.endswith("_pct_unc") else want[col]
            if math.isnan(expected):  # a statistic this llama.cpp version did not print
                assert math.isnan(got[ours]), (want["log"], col)
            else:
                assert got[ours] == pytest.approx(expected, rel=1e-12, abs=1e-15), (want["log"], col)
            checked += 1
    assert checked == 12 * 43


def test_readme_tables_agree(parsed):
    """The README's two result tables (value ± se columns), row by row."""
    text = (LLAMACPP_FIXTURES / "README.md").read_text()
    rows = re.findall(
        r"^\| (Q[^|]+?) \| ([\d.]+) ± ([\d.]+) \| ([-\d.]+) ± ([\d.]+) \| ([\d.]+) ± ([\d.]+) \| (-?[\d.]+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) ± ([\d.]+) \|$",
        text,
        re.M,
    )
    assert len(rows) == 9
    logs = {"Q4_1 (self)": "kld-Q4_1_self.log", "Q4_K_M @256": "kld-c256-Q4_K_M.log"}
    by_source = parsed[parsed["model_from"] == "log_name"].set_index("source")
    for name, *values in rows:
        got = by_source.loc[logs.get(name, f"kld-{name}.log")]
        v = [float(x) for x in values]
        ours = [
            got.ppl_q,
            got.ppl_q_se,
            got.ln_ppl_ratio,
            got.ln_ppl_ratio_se,
            got.kld_mean,
            got.kld_mean_se,
            got.kld_median,
            got.kld_p99,
            got.kld_max,
            got.same_top_p * 100,
            got.same_top_p_se * 100,
        ]
        assert ours == pytest.approx(v, abs=5e-7), name


def test_old_version_prints_fewer_percentiles(parsed):
    old = parsed[parsed["model_from"] == "model_file"].iloc[0]
    assert old["model"] == "Q4_K_M" and old["model_file"] == "SmolLM2-135M-Instruct.Q4_K_M.gguf"
    assert math.isnan(old["kld_p95"]) and math.isnan(old["kld_p90"]) and math.isnan(old["kld_p0_1"])
    assert old["kld_p99"] == 0.440908 and old["kld_mean"] == 0.061892


def test_names_and_chunking(parsed):
    q8 = parsed.set_index("source").loc["kld-Q8_0.log"]
    assert q8["model"] == "Q8_0" and q8["model_from"] == "log_name" and (q8["n_ctx"], q8["n_chunks"]) == (512, 20)
    assert q8["same_top_p"] == 0.95353 and q8["cor_ln_ppl"] == 0.9992
    assert quant_from_model_file("models/Qwen3.6-35B-A3B-UD-Q4_K_XL.gguf") == "UD-Q4_K_XL"
    assert quant_from_model_file("SmolLM2-135M-Instruct.IQ2_XXS.gguf") == "IQ2_XXS"
    assert quant_from_model_file("model-bf16.gguf") == "bf16"
    assert quant_from_model_file("apex_balanced.gguf") == "apex_balanced"


def test_cli_writes_one_row_per_log_with_required_columns(tmp_path):
    logs = [str(LLAMACPP_FIXTURES / "logs" / f) for f in ("kld-Q8_0.log", "kld-Q2_K.log")] + [
        str(LLAMACPP_FIXTURES / "b4747" / "kld-Q4_K_M.log")
    ]
    out = tmp_path / "kld.csv"
    assert main(["ingest", "llamacpp", *logs, "--out", str(out), "--name", "kld-Q2_K.log=Q2_K_custom"]) == 0
    table = pd.read_csv(out)
    assert list(table["model"]) == ["Q8_0", "Q2_K_custom", "Q4_K_M"]
    required = [
        "model",
        "source",
        "ppl_q",
        "ppl_base",
        "ln_ppl_ratio",
        "ppl_ratio",
        "kld_mean",
        "kld_mean_se",
        "kld_max",
        "kld_p99_9",
        "kld_p99",
        "kld_p95",
        "kld_p90",
        "kld_median",
        "kld_p10",
        "kld_p5",
        "kld_p1",
        "kld_p0_1",
        "kld_min",
        "dp_mean",
        "rms_dp",
        "same_top_p",
    ]
    assert set(required) <= set(table.columns)
    assert table.loc[0, "same_top_p"] == 0.95353 and table.loc[1, "kld_p0_1"] == 0.000386
    assert table.loc[2, ["kld_p95", "kld_p90", "kld_p0_1"]].isna().all()
    assert table.loc[1, "rms_dp"] == pytest.approx(0.18034, abs=1e-15)


def _variant(tmp_path, transform, name="kld-bad.log"):
    text = (LLAMACPP_FIXTURES / "logs" / "kld-Q8_0.log").read_text()
    path = tmp_path / name
    path.write_text(transform(text))
    return path


@pytest.mark.parametrize(
    "transform, message",
    [
        (lambda t: t[: t.index("====== Token probability")], "token probability|dp statistics block is missing"),
        (lambda t: t[: t.index("RMS Δp")], "lacks rms_dp, same_top_p; the log is truncated"),
        (lambda t: t.rstrip("\n")[:-4], "stops mid-line"),
        (lambda t: t[: t.index("\n====== Perplexity")], "no `====== KL divergence statistics ======` block"),
        (lambda t: t.replace("Median  KLD:", "Medain  KLD:"), "unrecognised statistics line"),
        (lambda t: t.replace("Same top p: 95.353 ± 0.295 %", "Same top p: 95.353"), "cut short"),
        (lambda t: t.replace("99.9%   KLD:   0.115437", "99.0%   KLD:   0.115437"), "printed twice with different values"),
    ],
)
def test_malformed_logs_fail_with_file_and_line(tmp_path, transform, message):
    path = _variant(tmp_path, transform)
    with pytest.raises(SilentzoneError, match=message) as err:
        parse_log(path)
    assert re.match(rf"{re.escape(str(path))}:\d+: ", str(err.value)) and "\n" not in str(err.value)


def test_reference_run_log_is_rejected_and_nothing_written(tmp_path, capsys):
    out = tmp_path / "kld.csv"
    code = main(
        [
            "ingest",
            "llamacpp",
            str(LLAMACPP_FIXTURES / "logs" / "kld-Q8_0.log"),
            str(LLAMACPP_FIXTURES / "logs" / "ref.log"),
            "--out",
            str(out),
        ]
    )
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err.strip()
    assert "ref.log:" in err and "no `====== KL divergence statistics ======` block" in err and len(err.splitlines()) == 1


def test_duplicate_identical_line_is_accepted(tmp_path):
    """b4747 prints `99.0% KLD` twice with the same value; that is one statistic, not an error."""
    path = _variant(
        tmp_path, lambda t: t.replace("99.0%   KLD:   0.032627\n", "99.0%   KLD:   0.032627\n99.0%   KLD:   0.032627\n")
    )
    assert parse_log(path)["kld_p99"] == 0.032627
