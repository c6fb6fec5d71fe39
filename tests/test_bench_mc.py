"""Cloze scoring and per-prompt KLD against independent computations on the tiny model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, rel_entr

from silentzone import config, metrics, refstore
from silentzone.bench import mc
from silentzone.model import head as lm
from silentzone.model import load_reference
from silentzone.stages import bench


@pytest.fixture(scope="module")
def tiny(request):
    from tests.conftest import REPO

    params = config.validate(config.build_profile("tiny", REPO / "profiles"), "params.yaml")
    model, tokenizer = load_reference(params)
    return model, tokenizer


ARC = {
    "task": "arc_easy",
    "item_id": "t1",
    "kind": "mc",
    "contexts": ["Question: What is hot?\nAnswer:"] * 3,
    "continuations": [" the sun", " ice", " a very cold glacier"],
    "label": 0,
}
WINO = {
    "task": "winogrande",
    "item_id": "t2",
    "kind": "mc",
    "contexts": ["Anna helped Beth so Anna", "Anna helped Beth so Beth"],
    "continuations": [" was thanked."] * 2,
    "label": 1,
}


def full_sequence_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """Textbook: one forward of context + continuation, sum the continuation tokens' log-probs."""
    ctx = tokenizer(context).input_ids
    cont = tokenizer(continuation, add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(torch.tensor([ctx + cont])).logits[0].double().numpy()
    logp = log_softmax(logits, axis=-1)
    return float(sum(logp[len(ctx) - 1 + j, t] for j, t in enumerate(cont)))


@pytest.mark.parametrize("item", [ARC, WINO], ids=["shared-context", "own-context"])
def test_choice_logprobs_match_full_forward(tiny, item):
    model, tokenizer = tiny
    scored = mc.score_item(model, tokenizer, item, None)
    expected = [full_sequence_logprob(model, tokenizer, c, k) for c, k in zip(item["contexts"], item["continuations"])]
    np.testing.assert_allclose(scored.logprobs, expected, rtol=0, atol=2e-3)
    assert scored.chosen == int(np.argmax(expected))
    per_char = [lp / len(k) for lp, k in zip(expected, item["continuations"])]
    assert scored.chosen_norm == int(np.argmax(per_char))
    for tokens, path in zip(scored.tokens, scored.paths):
        assert path.shape[0] == len(tokens) - 1


def test_mean_kld_matches_scipy_and_is_zero_against_itself(tiny, tmp_path):
    model, tokenizer = tiny
    refstore.write_head(tmp_path, *lm.head_arrays(model, tokenizer, "tiny-llama"))
    head = refstore.read_head(tmp_path)
    scored = mc.score_item(model, tokenizer, ARC, None)
    hidden = scored.paths[0].float().numpy()
    with torch.inference_mode():
        own = lm.lm_logits(model, scored.paths[0], None)
    assert metrics.prompt_kld(head, hidden, own) == pytest.approx(0.0, abs=1e-9)
    other = own + torch.linspace(-2, 2, own.shape[-1])  # a different distribution at every position
    ref_logp = log_softmax(own.double().numpy(), axis=-1)
    q_logp = log_softmax(other.double().numpy(), axis=-1)
    expected = rel_entr(np.exp(ref_logp), np.exp(q_logp)).sum(-1).mean()
    assert expected > 1e-3
    # the fidelity stage's KLD (float32 elementwise work, float64 sums); measured 4e-10 relative here
    assert metrics.prompt_kld(head, hidden, other) == pytest.approx(expected, rel=1e-6)
    assert metrics.prompt_kld(head, hidden, other, "float64") == pytest.approx(expected, rel=1e-9)


def test_task_store_round_trip(tiny, tmp_path):
    """A bench segment (data/reference/bench/<task>) holds each item's chosen path, its tokens and
    the reference's hidden states; a quant's Context reads them back by item id."""
    model, tokenizer = tiny
    scored = mc.score_item(model, tokenizer, ARC, None)
    hidden_t1 = scored.paths[2].float().numpy()
    writer = bench._BenchSegment(refstore.bench_dir(tmp_path, "arc_easy"), {"task": "arc_easy", "fingerprint": "fp"})
    writer.add("t0", [5, 6, 7], 0, np.ones((2, model.config.hidden_size), np.float32), 1)
    writer.add("t1", scored.tokens[2], 0, hidden_t1, 2)
    writer.close()
    assert not (tmp_path / "head").exists()  # a bench segment never carries a head
    segment = refstore.open_bench(tmp_path, "arc_easy")
    ctx = bench.Context("q", model, tokenizer, head_R=object(), segment=segment)
    chosen, tokens, hidden = ctx.reference_path("arc_easy", "t1")
    assert chosen == 2 and tokens.tolist() == scored.tokens[2]
    np.testing.assert_array_equal(hidden, hidden_t1)
    chosen, tokens, hidden = ctx.reference_path("arc_easy", "t0")
    assert chosen == 1 and tokens.tolist() == [5, 6, 7] and hidden.shape == (2, model.config.hidden_size)
    assert refstore.bench_fingerprint(tmp_path, "arc_easy") == "fp"
    from silentzone.errors import SilentzoneError

    with pytest.raises(SilentzoneError, match=r"reference store has no sequence 't9'; rerun `silentzone bench reference`"):
        ctx.reference_path("arc_easy", "t9")
    (refstore.bench_dir(tmp_path, "arc_easy") / "hidden.npy").write_bytes(b"damaged")
    with pytest.raises(
        SilentzoneError, match=r"hidden.npy: reference store file corrupted .*; rerun `silentzone bench reference`"
    ):
        refstore.open_bench(tmp_path, "arc_easy")


@pytest.mark.model
def test_smollm2_arc_easy_first_100_accuracy(smollm2_cache_dir):
    """Cloze, raw summed log-prob, 0-shot: SmolLM2-135M-Instruct lands near 0.48 on the first 100
    ARC-Easy validation items (per-char normalisation is recorded, not used for `correct`)."""
    from silentzone.data import items
    from tests.conftest import REPO

    raw = config.build_profile("default", REPO / "profiles")
    raw["threads"] = 1  # accuracy, not speed: one thread stays fast on a busy shared machine
    model, tokenizer = load_reference(config.validate(raw, "params.yaml"), cache_dir=smollm2_cache_dir)
    arc = items.load_task("arc_easy")[:100]
    correct = [mc.score_item(model, tokenizer, it, None).chosen == it["label"] for it in arc]
    assert 0.43 <= np.mean(correct) <= 0.53  # measured: 0.48 (acc_norm 0.35)
