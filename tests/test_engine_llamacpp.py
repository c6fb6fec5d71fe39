"""The llama.cpp engine (silentzone.engines.llamacpp) on the real SmolLM2 reference, CI-sized: two
128-token windows per corpus, a dozen benchmark items, three members (two recipes, one llama-quantize
mix). One run folder per session runs both engines through the CLI, as `dvc repro` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from silentzone import config
from silentzone.errors import SilentzoneError
from silentzone.layout import Layout
from silentzone.quant import llamacpp as tools
from silentzone.schema import ITEM_COLUMNS, TOKEN_COLUMNS

REPO = Path(__file__).resolve().parents[1]
COHORT = {
    "q8_0": "Q8_0",
    "q4_0+layer0-q8_0": {"default": "Q4_0", "embedding": "Q8_0", "layers": {"0": "Q8_0"}},
    "lq-q4_k_m": {"llama-quantize": "Q4_K_M"},
}
TASKS = {"lambada": 6, "arc_easy": 3, "winogrande": 2}


def silentzone(run: Path, *args) -> str:
    exe = Path(sys.executable).parent / "silentzone"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([str(exe), *args], cwd=run, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"silentzone {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout


def engine_ready() -> bool:
    from silentzone.engines.llamacpp import runtime

    try:
        runtime.binding()
    except SilentzoneError:
        return False
    return tools.tools_available()


@pytest.fixture(scope="session")
def run(tmp_path_factory, smollm2_cache_dir):
    """A SmolLM2 run folder measured by both engines: torch is the run's engine, llama.cpp a further one."""
    if not engine_ready():
        pytest.skip("llama.cpp tools, library or binding missing; run `make llamacpp`")
    folder = tmp_path_factory.mktemp("engines")
    (folder / "profiles").symlink_to(REPO / "profiles")
    (folder / "data").mkdir()
    (folder / "data" / "models").symlink_to(Path(smollm2_cache_dir).resolve())  # the torch fp32 cache, built once
    p = config.build_profile("default", REPO / "profiles")
    p["fidelity"].update(ctx=128, ctx_alt=64, n_windows=2)
    p["cohort"] = COHORT
    p["bench"]["tasks"] = TASKS
    p["engine"].update(name="torch", also=["llamacpp"])
    (folder / "params.yaml").write_text(config.dump(p))
    silentzone(folder, "prepare")
    for engine in ("torch", "llamacpp"):
        flag = ["--engine", engine]
        silentzone(folder, "reference", *flag)
        silentzone(folder, "bench", "reference", *flag)
        for quant in COHORT:
            silentzone(folder, "fidelity", quant, *flag)
            silentzone(folder, "bench", quant, *flag)
        silentzone(folder, "collect", *flag)
    silentzone(folder, "fidelity", "reference", "--engine", "llamacpp")  # the reference against its own store
    return folder


def engine_dir(run: Path) -> Path:
    return run / "data" / "engines" / "llamacpp"


# ------------------------------------------------------------------------------------- agreement


def test_both_engines_cut_the_same_token_ids(run):
    """Windows of every corpus and ctx, and every benchmark sequence: llama.cpp's tokenizer gives
    transformers' ids (the reference's chosen sequences match item for item)."""
    for kind in ("fidelity", "bench"):
        torch_segments = sorted((run / "data" / "reference" / kind).iterdir())
        assert len(torch_segments) == (4 if kind == "fidelity" else len(TASKS))
        for seg in torch_segments:
            other = engine_dir(run) / "reference" / kind / seg.name
            assert np.array_equal(np.load(seg / "tokens.npy"), np.load(other / "tokens.npy")), seg.name
            assert np.array_equal(np.load(seg / "offsets.npy"), np.load(other / "offsets.npy")), seg.name


def test_the_reference_outcomes_agree_across_engines(run):
    """Same items, same answers from the reference; its gold log-probabilities within 0.02 nats (the
    llama.cpp reference keeps an F16 KV cache; its weights are the torch reference's bit for bit)."""
    a = pd.read_parquet(run / "data" / "bench" / "reference.parquet")
    b = pd.read_parquet(engine_dir(run) / "bench" / "reference.parquet")
    assert list(a["item_id"]) == list(b["item_id"])
    assert (a["correct"].to_numpy() == b["correct"].to_numpy()).all()
    for x, y in zip(a["choice_logprobs"], b["choice_logprobs"]):
        assert np.allclose(x, y, atol=0.02)


def test_the_reference_scored_against_its_own_store_is_zero(run):
    """llama.cpp's logits at the scored positions against h @ W^T of its stored hidden states at the same
    positions: the two sides are aligned position by position (any shift would give KLD ~ 1)."""
    report = json.loads((engine_dir(run) / "fidelity" / "reference.report.json").read_text())
    assert 0 <= report["variants"]["kld_mean"] < 1e-5
    assert report["variants"]["top1_disagree"] == 0.0


def test_deployed_q8_0_is_further_from_the_reference_than_simulated(run):
    """llama.cpp rounds Q8_0's activations to 8 bits too; the torch engine does not (docs/engines.md)."""
    sim = json.loads((run / "data" / "fidelity" / "q8_0.report.json").read_text())["variants"]["kld_mean"]
    dep = json.loads((engine_dir(run) / "fidelity" / "q8_0.report.json").read_text())["variants"]["kld_mean"]
    assert 0 < sim < dep < 0.05


# ------------------------------------------------------------------------------ files and tables


def test_a_recipe_member_is_a_gguf_of_its_recipe_types_with_the_torch_engines_values(run):
    from gguf.quants import dequantize

    from silentzone.quant import formats
    from silentzone.quant.gguf_member import open_gguf

    report = json.loads((engine_dir(run) / "fidelity" / "q4_0+layer0-q8_0.report.json").read_text())["quant_report"]
    reader = open_gguf(run / report["file"])
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["token_embd.weight"] == "Q8_0"  # embedding: Q8_0 (tied: the more precise of embedding/output)
    assert types["blk.0.ffn_down.weight"] == "Q8_0" and types["blk.0.attn_q.weight"] == "Q8_0"  # layers: {0: Q8_0}
    assert types["blk.1.ffn_down.weight"] == "Q4_0" and types["blk.29.attn_v.weight"] == "Q4_0"
    assert types["blk.0.attn_norm.weight"] == "F32"
    ref = {t.name: t for t in open_gguf(next(run.glob("data/models/*/llamacpp/reference-F32.gguf"))).tensors}
    for name in ("blk.1.ffn_down.weight", "blk.5.attn_q.weight"):  # the torch engine's round trip of the same F32 values
        t = next(t for t in reader.tensors if t.name == name)
        values = np.asarray(dequantize(ref[name].data, ref[name].tensor_type), dtype=np.float32)
        assert np.array_equal(dequantize(t.data, t.tensor_type), formats.quantize_dequantize(values, "Q4_0"))


def test_the_engines_write_tables_of_one_schema(run):
    for model in ("q8_0", "lq-q4_k_m"):
        a = pd.read_parquet(run / "data" / "fidelity" / f"{model}.parquet")
        b = pd.read_parquet(engine_dir(run) / "fidelity" / f"{model}.parquet")
        assert list(b.columns) == TOKEN_COLUMNS and a.dtypes.equals(b.dtypes)
        assert a[["corpus", "ctx", "window", "pos", "token"]].equals(b[["corpus", "ctx", "window", "pos", "token"]])
    for name in ("cohort", "items"):
        a = pd.read_parquet(run / "data" / "processed" / f"{name}.parquet")
        b = pd.read_parquet(engine_dir(run) / "processed" / f"{name}.parquet")
        assert list(a.columns) == list(b.columns) and a.dtypes.equals(b.dtypes)
        assert list(a["model"]) == list(b["model"])
    items = pd.read_parquet(engine_dir(run) / "processed" / "items.parquet")
    assert list(items.columns) == ITEM_COLUMNS
    quants = items[items["model"] != "reference"]
    assert np.isfinite(quants["prompt_kld"]).all() and (quants["prompt_kld"] >= 0).all()


def test_compare_engines_sets_the_cohorts_side_by_side(run):
    out = silentzone(run, "compare-engines", "llamacpp")
    assert "Spearman" in out
    table = pd.read_csv(run / "results" / "tables" / "compare-llamacpp" / "cohort.csv")
    assert {"kld_mean", "kld_mean_llamacpp", "composite", "composite_llamacpp", "outcome_agreement"} <= set(table.columns)
    summary = json.loads((run / "results" / "numbers" / "compare-llamacpp.json").read_text())
    assert summary["n_quants"] == len(COHORT) and summary["other"] == "llamacpp"
    assert summary["reference_outcome_agreement"] == 1.0
    assert -1 <= summary["spearman"]["kld_mean"]["rho"] <= 1


# --------------------------------------------------------------------- determinism and provenance


def test_two_runs_are_byte_identical(run):
    from silentzone import io

    table, report = engine_dir(run) / "fidelity" / "q8_0.parquet", engine_dir(run) / "fidelity" / "q8_0.report.json"
    bench = engine_dir(run) / "bench" / "q8_0.parquet"
    before = [io.sha256_file(p) for p in (table, report, bench)]
    import shutil

    shutil.rmtree(engine_dir(run) / "bench" / ".parts" / "q8_0", ignore_errors=True)
    silentzone(run, "fidelity", "q8_0", "--engine", "llamacpp")
    silentzone(run, "bench", "q8_0", "--engine", "llamacpp")
    assert [io.sha256_file(p) for p in (table, report, bench)] == before


def test_outputs_record_the_engine_its_settings_the_build_and_the_cpu(run):
    note = json.loads((engine_dir(run) / "fidelity" / "q8_0.report.json").read_text())["quant_report"]["engine"]
    assert note["engine"] == "llamacpp" and note["binding"] == "llama-cpp-python==0.3.36"
    assert note["settings"]["flash_attn"] is False and note["threads"] == 2
    assert "-mno-amx-tile" in note["build_flags"] and "BUILD_SHARED_LIBS=ON" in note["build_flags"]
    assert "CPU" in note["system_info"] and "AMX_INT8 = 1" not in note["system_info"]
    assert isinstance(note["cpu_features"], list) and len(note["library_sha256"]) == 64


# ------------------------------------------------------------------------------- errors and config


def test_engine_settings_are_validated_in_one_line():
    raw = config.build_profile("quick", REPO / "profiles")
    bad = {**raw, "engine": {**raw["engine"], "also": ["torch"]}}
    with pytest.raises(SilentzoneError, match=r"`also` \['torch'\] must name engines other than `name`"):
        config.validate(bad, "params.yaml")
    bad = {**raw, "engine": {**raw["engine"], "llamacpp": {**raw["engine"]["llamacpp"], "n_ubatch": 4096}}}
    with pytest.raises(SilentzoneError, match="n_ubatch"):
        config.validate(bad, "params.yaml")
    tiny = config.build_profile("tiny", REPO / "profiles")
    with pytest.raises(SilentzoneError, match="engine llamacpp runs GGUF files"):
        config.validate({**tiny, "engine": {"name": "llamacpp"}}, "params.yaml")


def test_a_missing_library_is_one_line_naming_make_llamacpp(tmp_path, monkeypatch):
    from silentzone.engines.llamacpp import runtime

    monkeypatch.setenv(tools.ENV_BIN, str(tmp_path / "bin"))
    monkeypatch.setattr(tools, "find_tool", lambda name: (_ for _ in ()).throw(SilentzoneError("no tool")))
    with pytest.raises(SilentzoneError, match="make llamacpp") as exc:
        runtime.library_dir()
    assert "\n" not in str(exc.value)


def test_an_engine_outside_the_run_is_refused(tmp_path):
    from silentzone import engines

    params = config.validate(config.build_profile("tiny", REPO / "profiles"), "params.yaml")
    with pytest.raises(SilentzoneError, match="not an engine of this run"):
        engines.chosen(params, "llamacpp")
    assert engines.chosen(params, None) == "torch"


def test_a_further_engine_writes_under_data_engines():
    layout = Layout(Path("run"))
    assert layout.for_engine("torch", None).fidelity == Path("run/data/fidelity")
    assert layout.for_engine("torch", "torch").bench == Path("run/data/bench")
    other = layout.for_engine("torch", "llamacpp")
    assert other.fidelity == Path("run/data/engines/llamacpp/fidelity") and other.prepared == Path("run/data/prepared")
    assert other.models == Path("run/data/models") and other.processed == Path("run/data/engines/llamacpp/processed")


def test_profiles_name_their_engines():
    for name, want in (("default", ("torch", ["llamacpp"])), ("tiny", ("torch", [])), ("qwen", ("llamacpp", []))):
        p = yaml.safe_load(config.dump(config.build_profile(name, REPO / "profiles")).split("\n", 2)[2])
        assert (p["engine"]["name"], p["engine"]["also"]) == want
