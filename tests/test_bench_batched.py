"""The batched scorer (bench.batched: packed rows, block masks, many items per forward) against the
per-item definition (mc.score_item) and a textbook full forward, on the tiny model with made-up
and real task items, and on SmolLM2 (marked `model`).

Tolerance: per-item log-likelihoods agree to 1e-5 relative (|Δ| ≤ 1e-5·|lp|). An absolute 1e-5 is
below float32's own noise here: on SmolLM2 the per-item scorer differs from a plain full forward of
context + continuation by up to 1.7e-5 and from a float64 forward by 2.1e-5 (sums of ~20 nats), and
the batched scorer by up to 2.4e-5 (arc_easy) / 5.8e-5 (hellaswag, ~90 nats): 2e-6 relative at most.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import log_softmax

from silentzone import config, metrics, refstore
from silentzone.bench import batched, mc
from silentzone.data import items as bench_items
from silentzone.model import head as lm
from silentzone.model import load_reference

RTOL = 1e-5

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
LAMB = {"task": "lambada", "item_id": "t3", "kind": "greedy", "context": "The cat sat on the", "target": " mat"}


@pytest.fixture(scope="module")
def tiny():
    from tests.conftest import REPO

    params = config.validate(config.build_profile("tiny", REPO / "profiles"), "params.yaml")
    return load_reference(params)


def real_items(n: int = 3) -> list[dict]:
    """A few real items of each likelihood task (shared contexts, own contexts, long, greedy)."""
    return [it for task in ("arc_easy", "winogrande", "hellaswag", "piqa", "lambada") for it in bench_items.load_task(task)[:n]]


def full_forward(model, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].double().numpy()


def assert_matches_score_item(model, tokenizer, items, batch_tokens):
    results = batched.score(model, [mc.request(tokenizer, it) for it in items], None, batch_tokens)
    assert len(results) == len(items)
    for item, res in zip(items, results):
        as_mc = item if item["kind"] == "mc" else {**item, "contexts": [item["context"]], "continuations": [item["target"]]}
        old = mc.score_item(model, tokenizer, as_mc, None)
        np.testing.assert_allclose(res.logprobs, old.logprobs, rtol=RTOL, atol=0, err_msg=item["item_id"])
        assert res.tokens == old.tokens
        for k in range(len(old.tokens)):
            assert res.paths[k].shape == old.paths[k].shape == (len(old.tokens[k]) - 1, model.config.hidden_size)
            torch.testing.assert_close(res.paths[k], old.paths[k], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("batch_tokens", [16, 256, 1 << 16], ids=["one-row-batches", "some-rows", "one-batch"])
def test_batched_equals_score_item_on_made_up_items(tiny, batch_tokens):
    model, tokenizer = tiny
    assert_matches_score_item(model, tokenizer, [ARC, WINO, LAMB, ARC], batch_tokens)


def test_batched_equals_score_item_on_real_items(tiny):
    model, tokenizer = tiny
    assert_matches_score_item(model, tokenizer, real_items(), 1024)


def assert_matches_full_forward(model, tokenizer, cap):
    """Each continuation as if it followed its context alone: log-probs and greedy tokens of one plain
    forward of context + continuation (float64 log-softmax)."""
    items = [ARC, WINO, LAMB]
    for item, res in zip(items, batched.score(model, [mc.request(tokenizer, it) for it in items], cap, 4096)):
        req = mc.request(tokenizer, item)
        for k, (ctx, cont) in enumerate(zip(req.contexts, req.conts)):
            logits = full_forward(model, ctx + cont)
            rows = range(len(ctx) - 1, len(ctx) + len(cont) - 1)
            logp = log_softmax(logits, axis=-1)
            assert res.logprobs[k] == pytest.approx(sum(logp[r, t] for r, t in zip(rows, cont)), rel=RTOL)
            assert res.greedy[k] == [int(np.argmax(logits[r])) for r in rows]


def test_against_textbook_full_forward(tiny):
    """Each continuation as if it followed its context alone: log-probs and greedy tokens of one plain
    forward of context + continuation (float64 log-softmax)."""
    model, tokenizer = tiny
    assert_matches_full_forward(model, tokenizer, None)


def test_pack_layout():
    req = batched.Request(contexts=[[1, 2, 3], [1, 2, 3], [9]], conts=[[4, 5], [6], [7, 8]])
    tokens, positions, block, part, spans = batched.pack(req)
    assert tokens == [1, 2, 3, 4, 5, 6, 9, 7, 8]  # a shared context once, then its continuations
    assert positions == [0, 1, 2, 3, 4, 3, 0, 1, 2]  # each continuation right after its own context
    assert block == [0, 0, 0, 0, 0, 0, 1, 1, 1] and part == [-1, -1, -1, 0, 0, 1, -1, 2, 2]
    assert spans == [(0, 3, 3, 2), (0, 3, 5, 1), (6, 1, 7, 2)]
    assert batched.packed_length(req) == len(tokens)
    assert batched.batches([5, 1, 3, 3], 6) == [[1, 2], [3], [0]]  # sorted by length; rows x width <= 6; too long alone


def test_answer_by_metric_and_greedy_divergence():
    lps, conts = [-10.0, -12.0, -30.0], [" a", " bbbbb", " cccccccccccccccccccccccccccccccccc"]
    assert mc.answer("raw", lps, conts, [1, 1, 1]) == 0
    assert mc.answer("per_char", lps, conts, [1, 1, 1]) == 2  # -30/35 beats -12/6 and -10/2
    assert mc.answer("per_token", lps, conts, [1, 3, 2]) == 1  # -4 beats -10 and -15
    assert mc.answer("raw", [-1.0, -1.0], conts[:2], [1, 1]) == 0  # first on ties
    assert mc.greedy_divergence([5, 6, 7], [5, 6, 7]) is None
    assert mc.greedy_divergence([5, 6, 7], [5, 9, 7]) == 1


def test_prompt_klds_equals_prompt_kld_per_prompt(tiny, tmp_path):
    model, tokenizer = tiny
    refstore.write_head(tmp_path, *lm.head_arrays(model, tokenizer, "reference"))
    head = refstore.read_head(tmp_path)
    res = batched.score(model, [mc.request(tokenizer, it) for it in (ARC, WINO, LAMB)], None, 4096)
    hidden_R = [r.paths[0].float().numpy() for r in res]
    shift = torch.linspace(-1, 1, model.config.hidden_size)
    hidden_q = [r.paths[0] + shift for r in res]  # another model's hidden states
    quant_logits = lambda h: lm.lm_logits(model, h, None)  # noqa: E731
    with torch.inference_mode():
        per_prompt = [metrics.prompt_kld(head, hR, quant_logits(hq)) for hR, hq in zip(hidden_R, hidden_q)]
        joined = metrics.prompt_klds(head, hidden_R, torch.cat(hidden_q), quant_logits)
        own = metrics.prompt_klds(head, hidden_R, torch.cat([r.paths[0] for r in res]), quant_logits)
    assert min(per_prompt) > 1e-4
    np.testing.assert_allclose(joined, per_prompt, rtol=1e-6)
    np.testing.assert_allclose(own, 0.0, atol=1e-9)


@pytest.mark.model
def test_smollm2_batched_equals_score_item(smollm2_cache_dir):
    from tests.conftest import REPO

    params = config.validate(config.build_profile("default", REPO / "profiles"), "params.yaml")
    model, tokenizer = load_reference(params, cache_dir=smollm2_cache_dir)
    assert_matches_score_item(model, tokenizer, real_items(2), params.bench.batch_tokens)


def test_sliding_window_model_matches_its_own_forward():
    """A model with sliding-window layers (Gemma 3 layout, window 4 « the sequences) and a final logit
    softcap: packed rows get the window on the same positions, so log-probs and greedy tokens equal a
    plain forward of context + continuation."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from silentzone.model.load import build_byte_tokenizer

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(
        vocab_size=300,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        final_logit_softcapping=5.0,
        attn_implementation="sdpa",
    )
    model = Gemma3ForCausalLM(cfg).eval()
    tokenizer = build_byte_tokenizer(300)
    cap = lm.softcap_of(model)
    assert cap == 5.0
    assert_matches_full_forward(model, tokenizer, cap)
