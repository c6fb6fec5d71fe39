"""llama.cpp's reference-logits (.kld) reader, byte for byte on the real mini/ pair."""

from __future__ import annotations

import hashlib
import json
import lzma

import numpy as np
import pytest
from conftest import LLAMACPP_FIXTURES

from silentzone.errors import SilentzoneError
from silentzone.ingest.llamacpp_kld import read_kld, summary, token_stats
from silentzone.ingest.llamacpp_log import parse_log

MINI = LLAMACPP_FIXTURES / "mini"


@pytest.fixture(scope="module")
def files():
    return read_kld(MINI / "mini-ref-c128.kld.xz"), read_kld(MINI / "mini-Q4_K_M-c128.kld.xz")


@pytest.fixture(scope="module")
def stats(files):
    return token_stats(*files)


@pytest.mark.parametrize("index, name", [(0, "mini-ref-c128.kld"), (1, "mini-Q4_K_M-c128.kld")])
def test_header_and_sizes_equal_kld_files_json(files, index, name):
    spec = json.loads((LLAMACPP_FIXTURES / "kld_files.json").read_text())[name]
    f = files[index]
    assert (f.n_ctx, f.n_vocab, f.n_chunk) == (spec["n_ctx"], spec["n_vocab"], spec["n_chunk"])
    assert f.size_bytes == spec["size_bytes"] and len(f.tokens) == spec["tokens_stored"]
    assert f.n_scored == spec["scored_tokens_per_chunk"] and f.record_uint16s == spec["record_uint16s"]
    assert f.records.shape == (spec["n_chunk"] * spec["scored_tokens_per_chunk"], spec["record_uint16s"])
    # Byte for byte: the reader's header, tokens and records re-serialised give the file's sha256.
    blob = b"_logits_" + np.array([f.n_ctx, f.n_vocab, f.n_chunk], "<i4").tobytes() + f.tokens.tobytes() + f.records.tobytes()
    assert hashlib.sha256(blob).hexdigest() == spec["sha256"]


def test_records_are_log_probabilities(files):
    base = files[0]
    scale, low = base.scale_min()
    assert np.all(scale > 0) and np.all(low < 0)
    lp = base.log_probs().astype(np.float64)
    kept = base.quantized() > 0
    mass_kept = np.where(kept, np.exp(lp), 0.0).sum(axis=1)
    # Entries within 16 nats of the row maximum hold almost all the mass; q = 65535 marks the maximum.
    assert np.all(mass_kept <= 1.0 + 1e-3) and np.all(mass_kept > 0.99)
    assert np.all(base.quantized().max(axis=1) == 65535)
    assert np.allclose(lp.max(axis=1), scale.astype(np.float64) * 65535 + low, atol=1e-4)


def test_tokens_shared_and_first_tokens_are_the_corpus(files):
    base, other = files
    assert np.array_equal(base.tokens, other.tokens)
    assert base.targets().shape == (126,)
    assert list(base.tokens[:10]) == [4518, 14733, 3935, 738, 418, 2124, 634, 282, 623, 3301]


def test_statistics_from_stored_values_match_the_log(stats):
    log = parse_log(MINI / "kld-mini-c128-Q4_K_M.log")
    s = summary(stats)
    assert s["n_tokens"] == 126
    # PPL(base) in llama.cpp comes from these very uint16 values: equal to the printed digits.
    assert s["ppl_base"] == pytest.approx(log["ppl_base"], abs=1e-6)
    # The variant's values are its float logits rounded to uint16: PPL within 1e-5 relative.
    assert s["ppl_q"] == pytest.approx(log["ppl_q"], rel=1e-5)
    assert s["ln_ppl_ratio"] == pytest.approx(log["ln_ppl_ratio"], abs=2e-6)
    # Same argmax on all but 18 of 126 tokens, as llama.cpp counted: 108/126 = 85.714 %.
    assert int(stats["top1"].sum()) == 108 and log["same_top_p"] == 0.85714
    # KLD: close, not exact (llama.cpp uses the variant's float logits, we its uint16 copy).
    assert s["kld_mean"] == pytest.approx(log["kld_mean"], rel=2e-3)
    assert abs(s["kld_mean"] - log["kld_mean"]) < 0.1 * log["kld_mean_se"]
    for key in ("kld_max", "kld_median", "kld_p99", "kld_p90", "rms_dp"):
        assert s[key] == pytest.approx(log[key], rel=5e-3), key


def test_kld_is_exact_on_a_hand_built_pair(tmp_path):
    """Two tiny files written here: KLD, nll and same-top against values worked by hand in float64."""
    n_ctx, n_vocab, n_chunk = 4, 3, 1  # one scored position (2), predicting token 3
    tokens = np.array([0, 1, 2, 1], "<i4")

    def record(lp):
        low, high = min(lp), max(lp)
        scale = (high - low) / 65535
        q = np.round((np.array(lp) - low) / scale).astype("<u2")
        return np.concatenate([np.array([scale, low], "<f4").view("<u2"), q, np.zeros(1, "<u2")]), scale, low, q

    def write(name, lp):
        rec, scale, low, q = record(lp)
        path = tmp_path / name
        path.write_bytes(b"_logits_" + np.array([n_ctx, n_vocab, n_chunk], "<i4").tobytes() + tokens.tobytes() + rec.tobytes())
        return path, np.float32(scale) * q.astype(np.float32) + np.float32(low)

    pa, lpa = write("a.kld", np.log([0.7, 0.2, 0.1]))
    pb, lpb = write("b.kld", np.log([0.5, 0.3, 0.2]))
    s = token_stats(read_kld(pa), read_kld(pb))
    lpa, lpb = lpa.astype(np.float64), lpb.astype(np.float64)
    kept = np.arange(3) != np.argmin(lpa)  # the row minimum is stored as q = 0 and left out, as in llama.cpp
    assert s["kld"][0] == pytest.approx(np.sum(np.exp(lpa[kept]) * (lpa[kept] - lpb[kept])), rel=1e-12)
    assert s["nll_R"][0] == pytest.approx(-lpa[1]) and s["nll_q"][0] == pytest.approx(-lpb[1])
    assert s["top1"][0] and s["dp"][0] == pytest.approx(np.exp(lpb[1]) - np.exp(lpa[1]))


def test_damaged_files_fail_with_one_line(tmp_path):
    raw = lzma.open(MINI / "mini-ref-c128.kld.xz").read()
    cut = tmp_path / "cut.kld"
    cut.write_bytes(raw[:-10])
    with pytest.raises(
        SilentzoneError, match=r"cut.kld: 12388346 bytes, but its header .* implies 12388356; the file is truncated"
    ):
        read_kld(cut)
    bad = tmp_path / "bad.kld"
    bad.write_bytes(b"_notlog_" + raw[8:2000])
    with pytest.raises(SilentzoneError, match="magic b'_notlog_'"):
        read_kld(bad)
    with pytest.raises(SilentzoneError, match="not found"):
        read_kld(tmp_path / "missing.kld")


@pytest.mark.model
def test_our_tokenizer_gives_llama_cpps_tokens(smollm2_cache_dir):
    """The first 2x128 tokens of corpus.txt, as llama.cpp stored them (add_bos_token = false)."""
    from silentzone import config
    from silentzone.model import load_reference

    params = config.validate(config.build_profile("default", __import__("conftest").REPO / "profiles"), "profiles/default.yaml")
    _, tokenizer = load_reference(params, cache_dir=smollm2_cache_dir)
    ids = tokenizer((LLAMACPP_FIXTURES / "corpus.txt").read_text(encoding="utf-8"), add_special_tokens=False)["input_ids"]
    stored = read_kld(MINI / "mini-ref-c128.kld.xz").tokens
    assert ids[: len(stored)] == stored.tolist()


def test_cli_kld_pair(tmp_path, capsys):
    from silentzone.cli import main

    out = tmp_path / "tokens.csv"
    assert (
        main(["ingest", "kld", str(MINI / "mini-ref-c128.kld.xz"), str(MINI / "mini-Q4_K_M-c128.kld.xz"), "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "n_ctx=128 n_vocab=49152 n_chunk=2 scored=63/chunk records=126 bytes=12388356" in printed
    import pandas as pd

    table = pd.read_csv(out)
    assert len(table) == 126 and table["top1"].sum() == 108
    # silentzone.schema's per-token columns (no corpus: a .kld file does not name its text)
    assert list(table.columns) == ["ctx", "window", "pos", "token", "kld", "top1", "nll_q", "nll_R", "dp"]
    assert table["window"].tolist() == [0] * 63 + [1] * 63 and table["pos"].tolist() == list(range(64, 127)) * 2
