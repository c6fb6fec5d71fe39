"""Per-token fidelity metrics, the fidelity stage (resume, bad inputs) and the 14 variants."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import log_softmax, rel_entr, softmax
from scipy.stats import entropy

from silentzone import cli, config, metrics, refstore, variants
from silentzone.errors import SilentzoneError
from silentzone.layout import Layout
from silentzone.model import build_tiny
from silentzone.schema import TOKEN_COLUMNS
from silentzone.stages import fidelity

FLOOR = math.log(1e-12)
REPO = Path(__file__).resolve().parents[1]


def perturbed(model, scale=0.05, seed=1):
    """A copy of `model` with seeded relative Gaussian noise on every weight: a stand-in quant."""
    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.std())
    return other


@pytest.fixture(scope="module")
def setup(tiny_reference):
    """Tiny params, reference model, tokenizer and the prepared + referenced layout (shared, read-only)."""
    return tiny_reference


def scratch(layout: Layout, root: Path) -> Layout:
    """A fresh run folder that reads the shared reference store and prepared data, and writes its own
    fidelity outputs (data/fidelity/ under `root`)."""
    mine = Layout(root)
    mine.reference.parent.mkdir(parents=True, exist_ok=True)
    mine.reference.symlink_to(layout.reference.resolve())
    mine.prepared.symlink_to(layout.prepared.resolve())
    return mine


def segments(params, layout: Layout) -> list[refstore.Segment]:
    return [refstore.open_fidelity(layout.reference, corpus, ctx) for corpus, ctx in params.store_specs()]


# ---------------------------------------------------------------------------- token metrics


def random_logits(rows=6, vocab=9, seed=0, spread=3.0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(rows, vocab)) * spread, rng.normal(size=(rows, vocab)) * spread


@pytest.mark.parametrize("work_dtype, atol", [("float64", 1e-12), ("float32", 1e-6)])
def test_token_metrics_match_scipy(work_dtype, atol):
    zR, zq = random_logits()
    zq = zR + 0.7 * zq  # related, as a quant is
    zR, zq = zR.astype(np.float32).astype(np.float64), zq.astype(np.float32).astype(np.float64)  # fp32 logits, as models give
    y = np.array([0, 3, 8, 2, 2, 5])
    m = metrics.token_metrics(zR, zq, y, topk=3, floor=FLOOR, work_dtype=work_dtype)
    pR, pq = softmax(zR, axis=-1), softmax(zq, axis=-1)
    np.testing.assert_allclose(m["kld"], entropy(pR, pq, axis=-1), rtol=0, atol=atol)
    np.testing.assert_allclose(m["kld"], rel_entr(pR, pq).sum(-1), rtol=0, atol=atol)
    np.testing.assert_allclose(m["rkld"], entropy(pq, pR, axis=-1), rtol=0, atol=atol)
    rows = np.arange(6)
    np.testing.assert_allclose(m["nll_q"], -log_softmax(zq, axis=-1)[rows, y], atol=atol)
    np.testing.assert_allclose(m["nll_R"], -log_softmax(zR, axis=-1)[rows, y], atol=atol)
    g = pR.argmax(-1)
    np.testing.assert_allclose(m["nll_q_greedy"], -np.log(pq[rows, g]), atol=atol)
    np.testing.assert_allclose(m["dp"], pq[rows, y] - pR[rows, y], atol=atol)
    np.testing.assert_array_equal(m["top1"], pR.argmax(-1) == pq.argmax(-1))
    assert (m["kld"] > 0).all() and (m["rkld"] > 0).all()


@pytest.mark.parametrize("work_dtype", ["float32", "float64"])
def test_identical_logits_give_zero(work_dtype):
    zR, _ = random_logits(seed=4)
    m = metrics.token_metrics(zR, zR.copy(), np.zeros(6, int), topk=4, floor=FLOOR, work_dtype=work_dtype)
    assert np.all(m["kld"] == 0) and np.all(m["rkld"] == 0) and np.all(m["kld_topk"] == 0) and np.all(m["dp"] == 0)
    assert m["top1"].all()
    np.testing.assert_array_equal(m["nll_q"], m["nll_R"])


def test_kld_topk_hand_worked():
    # p_R = (0.5, 0.3, 0.15, 0.05), p_q = (0.4, 0.1, 0.3, 0.2); k = 2.
    pR = np.array([0.5, 0.3, 0.15, 0.05])
    pq = np.array([0.4, 0.1, 0.3, 0.2])
    # Reference top-2 = {0, 1}; quant's own top-2 = {0, 2}: token 1 is outside it, so it gets the floor.
    expected = 0.5 * (math.log(0.5) - math.log(0.4)) + 0.3 * (math.log(0.3) - FLOOR)
    m = metrics.token_metrics(np.log(pR)[None], np.log(pq)[None], np.array([0]), topk=2, floor=FLOOR, work_dtype="float64")
    assert m["kld_topk"][0] == pytest.approx(expected, abs=1e-12)
    # k = 3: reference top-3 = {0, 1, 2}, quant's top-3 = {0, 2, 3}: token 1 still gets the floor.
    expected3 = expected + 0.15 * (math.log(0.15) - math.log(0.3))
    m3 = metrics.token_metrics(np.log(pR)[None], np.log(pq)[None], np.array([0]), topk=3, floor=FLOOR, work_dtype="float64")
    assert m3["kld_topk"][0] == pytest.approx(expected3, abs=1e-12)


def test_kld_topk_approaches_kld_as_k_grows():
    zR, zq = random_logits(rows=20, vocab=200, seed=7, spread=2.0)
    zq = zR + 0.3 * zq
    kld = metrics.token_metrics(zR, zq, np.zeros(20, int), topk=1, floor=FLOOR, work_dtype="float64")["kld"]
    gaps = [
        np.abs(
            metrics.token_metrics(zR, zq, np.zeros(20, int), topk=k, floor=FLOOR, work_dtype="float64")["kld_topk"] - kld
        ).mean()
        for k in (5, 50, 150, 200)
    ]
    assert gaps[-1] < 1e-12  # k = vocabulary: exactly kld
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3]


def test_float32_work_agrees_with_float64_on_a_large_vocabulary():
    gen = np.random.default_rng(3)
    zR = (gen.standard_normal((16, 49152)) * 3).astype(np.float32)
    zq = zR + (gen.standard_normal((16, 49152)) * 0.05).astype(np.float32)
    y = gen.integers(0, 49152, 16)
    fast = metrics.token_metrics(zR, zq, y, 20, FLOOR, "float32")
    exact = metrics.token_metrics(zR, zq, y, 20, FLOOR, "float64")
    for name in ("kld", "rkld", "kld_topk", "nll_q", "nll_R", "nll_q_greedy", "dp"):
        np.testing.assert_allclose(fast[name], exact[name], rtol=0, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(fast["top1"], exact["top1"])
    assert exact["kld"].min() > 1e-4


@pytest.mark.parametrize("rows", [85, 63, 16, 9])
def test_row_blocks_give_the_same_bits_as_one_pass(rows, monkeypatch):
    """token_metrics splits a chunk into cache-sized row blocks (>= MIN_BLOCK_ROWS rows); the values
    are the bits of one pass over the whole chunk (the speed-up changes no result)."""
    gen = np.random.default_rng(5)
    zR = torch.from_numpy((gen.standard_normal((rows, 49152)) * 3).astype(np.float32))
    zq = zR + torch.from_numpy((gen.standard_normal((rows, 49152)) * 0.05).astype(np.float32))
    y = gen.integers(0, 49152, rows)
    blocked = metrics.token_metrics(zR, zq, y, 20, FLOOR)
    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 1 << 40)  # one block: the arithmetic before row blocks
    whole = metrics.token_metrics(zR, zq, y, 20, FLOOR)
    for name in whole:
        np.testing.assert_array_equal(blocked[name], whole[name], err_msg=name)


def test_finiteness_check_names_the_row_of_an_inf_among_finite_rows():
    logits = torch.zeros(4, 10)
    metrics.check_finite(logits, "quant 'q'", "wiki", 512, 0, 100)  # all finite: no error
    logits[2, 3] = float("inf")
    with pytest.raises(SilentzoneError, match=r"\(inf\).*position 102"):
        metrics.check_finite(logits, "quant 'q'", "wiki", 512, 0, 100)
    big = torch.full((2, 10), 3e38)  # row sums overflow, the logits are finite: no error
    metrics.check_finite(big, "quant 'q'", "wiki", 512, 0, 0)


# ---------------------------------------------------------------------------- the stage


def in_memory_kld(model_R, model_q, tokens, first, ctx):
    """Full-vocabulary KLD per scored token straight from both models' logits (scipy, float64)."""
    ids = torch.from_numpy(tokens)
    with torch.inference_mode():
        zR = model_R(ids).logits[:, first : ctx - 1].double().numpy()
        zq = model_q(ids).logits[:, first : ctx - 1].double().numpy()
    return rel_entr(softmax(zR, -1), softmax(zq, -1)).sum(-1).reshape(-1)


def test_stored_kld_equals_in_memory_kld(setup, tmp_path):
    params, model, tokenizer, layout = setup
    quant = perturbed(model)
    table = fidelity.per_token_table(params, scratch(layout, tmp_path), "noisy", quant, tokenizer)
    assert list(table.columns) == TOKEN_COLUMNS
    for ref in segments(params, layout):
        meta = ref.manifest
        first, tokens = ref.first(0), ref.windows()
        got = table[(table.corpus == meta["corpus"]) & (table.ctx == meta["ctx"])].sort_values(["window", "pos"])
        want = in_memory_kld(model, quant, tokens, first, meta["ctx"])
        assert len(got) == len(want) == meta["n"] * (meta["ctx"] - 1 - first)
        assert np.abs(got["kld"].to_numpy() - want).max() < 1e-6  # default work_dtype float32
        assert got["kld"].mean() > 1e-3  # the perturbation is visible
        np.testing.assert_array_equal(got["token"].to_numpy(), tokens[:, first + 1 :].reshape(-1))


def test_reference_against_itself_is_zero(setup, tmp_path):
    params, model, tokenizer, layout = setup
    table = fidelity.per_token_table(params, scratch(layout, tmp_path), "reference", model, tokenizer)
    assert np.abs(table["kld"]).max() < 1e-9 and table["top1"].all()
    v = variants.compute(table, params)
    assert v["ppl_ratio"] == pytest.approx(1.0, abs=1e-9) and v["kld_mean"] == pytest.approx(0.0, abs=1e-9)
    # the reference row collect writes: the identity value of every variant (ppl_greedy has none)
    ident = variants.reference_values(params)
    assert set(ident) == set(v) and ident["ppl_ratio"] == 1.0 and ident["kld_mean"] == 0.0 and math.isnan(ident["ppl_greedy"])
    for name, value in ident.items():
        if not math.isnan(value):
            assert v[name] == pytest.approx(value, abs=1e-9), name


def test_resume_after_interruption_gives_identical_bytes(setup, tmp_path, monkeypatch):
    params, model, tokenizer, layout = setup
    quant = perturbed(model, seed=2)
    report = {"bpw": 32.0}
    clean, resumed = scratch(layout, tmp_path / "clean"), scratch(layout, tmp_path / "resumed")
    fidelity.run(params, clean, "noisy", quant, tokenizer, report)
    real, calls = fidelity.window_batch_metrics, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fidelity, "window_batch_metrics", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fidelity.run(params, resumed, "noisy", quant, tokenizer, report)
    assert len(list(resumed.fidelity_parts("noisy").glob("*.parquet"))) == 3
    assert not resumed.fidelity_table("noisy").exists()
    calls.clear()
    monkeypatch.setattr(fidelity, "window_batch_metrics", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    fidelity.run(params, resumed, "noisy", quant, tokenizer, report)
    assert params.fidelity.batch_windows == 1
    n_jobs = sum(len(seg) for seg in segments(params, layout))  # batch_windows = 1
    assert len(calls) == n_jobs - 3  # finished parts were skipped
    assert resumed.fidelity_table("noisy").read_bytes() == clean.fidelity_table("noisy").read_bytes()
    assert resumed.fidelity_report("noisy").read_bytes() == clean.fidelity_report("noisy").read_bytes()
    assert not resumed.fidelity_parts("noisy").exists()


def test_vocabulary_mismatch_is_one_line_error(setup, tmp_path):
    params, _, _, layout = setup
    raw = params.model_dump(by_alias=True)
    raw["model"]["tiny"]["vocab_size"] = 400
    model, tokenizer = build_tiny(config.validate(raw, "params.yaml"))
    with pytest.raises(
        SilentzoneError, match=r"quant 'wide': its vocabulary \(400 logits.*differs from the reference's \(384"
    ) as err:
        fidelity.per_token_table(params, scratch(layout, tmp_path), "wide", model, tokenizer)
    assert "\n" not in str(err.value)


def test_nan_logits_name_quant_corpus_window_position(setup, tmp_path):
    params, model, tokenizer, layout = setup
    broken = copy.deepcopy(model)
    with torch.no_grad():
        broken.model.norm.weight[3] = float("nan")
    with pytest.raises(
        SilentzoneError, match=r"quant 'broken': non-finite logits \(nan\) on corpus 'wiki', ctx 64, window 0, position 32;"
    ) as err:
        fidelity.per_token_table(params, scratch(layout, tmp_path), "broken", broken, tokenizer)
    assert "\n" not in str(err.value)


def test_cli_fidelity_runs_a_real_quant_and_reports_bpw(setup, tmp_path, capsys, monkeypatch):
    import json

    params, _, _, layout = setup
    mine = scratch(layout, tmp_path)
    (tmp_path / "params.yaml").write_text(config.dump(config.build_profile("tiny", REPO / "profiles")))
    monkeypatch.chdir(tmp_path)  # stage commands read and write the current folder's layout
    argv = ["--params", str(tmp_path / "params.yaml"), "fidelity", "q4_0"]
    assert cli.main(argv) == 0
    report = json.loads(mine.fidelity_report("q4_0").read_text())
    table = pd.read_parquet(mine.fidelity_table("q4_0"))
    assert 4.0 < report["bpw"] < 6.0
    assert report["variants"] == variants.compute(table, params)
    assert report["variants"]["kld_mean"] > 0
    assert report["quant"] == "q4_0" and report["quant_report"]["formats"] == {"Q4_0": 14, "Q8_0": 1}
    capsys.readouterr()
    argv[3] = "no-such-quant"
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "quant 'no-such-quant' is not in `cohort`" in err


# ---------------------------------------------------------------------------- variants


def hand_table():
    """wiki@64: 5 tokens; wiki@32, fiction@64 and code@64: 2 tokens each, with simple values."""
    rows = []
    for i, (kld, nll_q, nll_R, top1, dp) in enumerate(
        [
            (0.0, 1.0, 1.0, True, 0.1),
            (1.0, 2.0, 1.0, True, -0.1),
            (2.0, 3.0, 2.0, False, 0.3),
            (3.0, 1.0, 2.0, True, 0.0),
            (4.0, 3.0, 1.0, False, 0.5),
        ]
    ):
        rows.append(
            dict(
                corpus="wiki",
                ctx=64,
                window=0,
                pos=32 + i,
                token=i,
                kld=kld,
                rkld=kld / 2,
                kld_topk=kld * 0.9,
                top1=top1,
                nll_q=nll_q,
                nll_R=nll_R,
                nll_q_greedy=nll_q / 2,
                dp=dp,
            )
        )
    for corpus, ctx, klds in [("wiki", 32, [5.0, 7.0]), ("fiction", 64, [0.25, 0.75]), ("code", 64, [10.0, 20.0])]:
        for i, kld in enumerate(klds):
            rows.append(
                dict(
                    corpus=corpus,
                    ctx=ctx,
                    window=0,
                    pos=16 + i,
                    token=i,
                    kld=kld,
                    rkld=0.0,
                    kld_topk=0.0,
                    top1=True,
                    nll_q=1.0,
                    nll_R=1.0,
                    nll_q_greedy=1.0,
                    dp=0.0,
                )
            )
    return pd.DataFrame(rows)


def test_compute_variants_hand_computed(tiny_params):
    v = variants.compute(hand_table(), tiny_params)
    # sorted wiki@64 KLDs 0,1,2,3,4: linear-interpolated percentile at q = p*(n-1) = 4p
    expected = {
        "kld_mean": 2.0,
        "kld_median": 2.0,
        "kld_p90": 3.6,
        "kld_p99": 3.96,
        "kld_p99_9": 3.996,
        "kld_topk_mean": 1.8,
        "ppl_ratio": math.exp(2.0 - 1.4),
        "abs_dln_ppl": 0.6,
        "ppl_greedy": math.exp(1.0),
        "top1_disagree": 0.4,
        "rms_dp": math.sqrt((0.01 + 0.01 + 0.09 + 0 + 0.25) / 5),
        "kld_mean_fiction": 0.5,
        "kld_mean_code": 15.0,
        "kld_mean_ctx128": 6.0,
    }
    assert set(v) == set(expected)
    for name, value in expected.items():
        assert v[name] == pytest.approx(value, abs=1e-12), name


def test_compute_variants_missing_corpus_is_clear(tiny_params):
    table = hand_table()
    with pytest.raises(SilentzoneError, match=r"no tokens for variant 'kld_mean_code' \(corpus 'code', ctx 64\)"):
        variants.compute(table[table.corpus != "code"], tiny_params)
    # an unknown aggregation is refused when params are validated, before any table is read
    raw = config.build_profile("tiny", REPO / "profiles")
    raw["variants"]["x"] = {"metric": "kld", "agg": "p42"}
    with pytest.raises(SilentzoneError, match=r"^params.yaml: `variants.x.agg`: Input should be .*got 'p42'$"):
        config.validate(raw, "params.yaml")
