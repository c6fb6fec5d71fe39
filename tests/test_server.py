"""The server engine (silentzone.server): parsing real vLLM responses, the known quirks, retries and
order, Eq. 5 from a top-k list, and fidelity/bench through a server against the in-process engine.

Three kinds of server: responses recorded from vLLM 0.32 (tests/fixtures/server, made by
scripts/record_server_fixtures.py); an exact implementation of vLLM's prompt_logprobs protocol on the
tiny model (`TinyServer`: the same numbers as in-process, so the served tables must match the
in-process ones); and, when SILENTZONE_VLLM_URL names one, a real vLLM server (docs/server.md)."""

from __future__ import annotations

import json
import os

import httpx
import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES

from silentzone import metrics
from silentzone.errors import SilentzoneError
from silentzone.server import client
from silentzone.server.logprobs import ServerError, echo_alignment, parse_prompt_logprobs

SERVER = FIXTURES / "server"
EP = client.Endpoint("http://test/v1", "m", timeout_s=5, retries=2, concurrency=3)


def served(params, *names):
    """params with `names` served at EP (engine.server), as a params.yaml would give them."""
    from silentzone import config

    raw = params.model_dump(by_alias=True)
    raw["engine"]["server"] = {
        "members": {n: {"url": EP.url, "model": EP.model, "bpw": 8.5} for n in names},
        "timeout_s": EP.timeout_s,
        "retries": EP.retries,
        "concurrency": EP.concurrency,
    }
    return config.validate(raw, "params.yaml")


def recorded(name):
    return json.loads((SERVER / f"vllm_{name}.json").read_text())


@pytest.fixture
def transport(monkeypatch):
    """Route the client through an httpx.MockTransport whose handler the test sets."""
    state = {}

    def handler(request):
        return state["handler"](request)

    monkeypatch.setattr(client, "TRANSPORT", httpx.MockTransport(handler))
    monkeypatch.setattr(client, "BACKOFF_S", 0.001)
    client._local.clients = {}
    yield state
    client._local.clients = {}


# ------------------------------------------------------------------- recorded vLLM responses


def test_recorded_vllm_window_parses_with_every_row_checked():
    rec = recorded("window_k20")
    prompt = rec["request"]["json"]["prompt"]
    lp = parse_prompt_logprobs(rec["body"], prompt, 20, "fixture")
    assert len(lp) == len(prompt) - 1 == 47 and lp.k == 20
    entries = rec["body"]["choices"][0]["prompt_logprobs"]
    for i in (0, 10, 46):
        entry = entries[i + 1]
        assert lp.logprob[i] == entry[str(prompt[i + 1])]["logprob"] and lp.rank[i] == entry[str(prompt[i + 1])]["rank"]
        assert [entry[str(t)]["rank"] for t in lp.top_ids[i]] == list(range(1, 21))
    assert np.all(np.diff(lp.top_logprobs, axis=1) <= 0) and np.all(lp.top_logprobs <= 0)
    assert np.all((lp.rank == 1) == (lp.top_ids[:, 0] == np.array(prompt[1:])))


def test_recorded_cap_refusal_names_the_server_flag(transport):
    """Quirk: the top-k cap (vLLM's --max-logprobs): HTTP 400 above it, read and turned into the fix."""
    rec = recorded("window_k30")
    assert rec["status"] == 400
    transport["handler"] = lambda request: httpx.Response(400, json=rec["body"])
    with pytest.raises(ServerError, match=r"caps log-probabilities at 20 .*--max-logprobs 30, or lower fidelity.topk to 20"):
        client.prompt_logprobs(EP, [rec["request"]["json"]["prompt"]], 30, "test")


def test_recorded_responses_replayed_through_the_client(transport):
    rec = recorded("window_k20")
    seen = []

    def handler(request):
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=rec["body"])

    transport["handler"] = handler
    prompt = rec["request"]["json"]["prompt"]
    [lp] = client.prompt_logprobs(EP, [prompt], 20, "test")
    assert seen[0]["prompt"] == prompt and seen[0]["prompt_logprobs"] == 20 and seen[0]["max_tokens"] == 1
    assert len(lp) == 47


def test_recorded_mc_item_scores_like_the_definition():
    """choice_logprobs of a served arc_easy item = the sum of the continuation's recorded log-probabilities."""
    rec = recorded("arc_easy_item")
    sums = []
    for choice in rec["choices"]:
        prompt = choice["request"]["json"]["prompt"]
        lp = parse_prompt_logprobs(choice["body"], prompt, 1, "fixture")
        sums.append(lp)
    assert len(sums) == len(rec["item"]["continuations"])


# ------------------------------------------------------------------------------ quirks


LLAMACPP = "llamacpp_python_0.3.36"  # llama-cpp-python[server] 0.3.36 on the reference's Q4_1 GGUF


def real(name):
    return json.loads((SERVER / f"{name}.json").read_text())


@pytest.mark.parametrize("text", ["echo_probe", "echo_wiki"])
def test_shifted_echo_logprobs_are_detected_on_real_answers(text):
    """Quirk: llama-cpp-python's echo logprobs are read one position early (entry j is the prediction
    of token j + 1); vLLM's echo logprobs are aligned as OpenAI defines them. Both recorded."""
    assert echo_alignment(real(LLAMACPP)[text]["body"]) == "shifted"
    assert echo_alignment(real("vllm_echo")[text]["body"]) == "aligned"


def test_a_llamacpp_python_server_is_refused_for_text_only_prompts(transport):
    """Quirk: text-only prompts. llama-cpp-python answers a token-id prompt with HTTP 500 (its request
    validation); the probe asks once with text, and refuses: token ids must round-trip."""
    rec = real(LLAMACPP)

    def handler(request):
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        if isinstance(json.loads(request.content)["prompt"], list):
            return httpx.Response(rec["token_ids"]["status"], json=rec["token_ids"]["body"])
        return httpx.Response(200, json=rec["echo_probe"]["body"])

    transport["handler"] = handler
    with pytest.raises(ServerError, match="accepts text prompts only; token ids must round-trip"):
        client.probe(EP, [4518, 14733, 3935, 738], 5)


def test_a_server_without_prompt_logprobs_is_refused_with_its_echo_alignment(transport):
    """A server that takes token ids but ignores prompt_logprobs (returns only echo logprobs, here
    llama-cpp-python's recorded shifted ones) is refused, and the line says they are shifted."""
    rec = real(LLAMACPP)

    def handler(request):
        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": "m"}]})
        if json.loads(request.content).get("echo"):
            return httpx.Response(200, json=rec["echo_probe"]["body"])
        return httpx.Response(200, json={"choices": [{"text": "x", "logprobs": None}]})

    transport["handler"] = handler
    with pytest.raises(ServerError, match="no prompt_logprobs.*one position early.*llama-cpp-python"):
        client.probe(EP, [1, 2, 3], 20)


def test_token_ids_must_round_trip():
    rec = recorded("window_k20")
    prompt = rec["request"]["json"]["prompt"]
    body = json.loads(json.dumps(rec["body"]))
    body["choices"][0]["prompt_token_ids"] = [prompt[0] + 1, *prompt[1:]]
    with pytest.raises(ServerError, match="re-tokenized the prompt"):
        parse_prompt_logprobs(body, prompt, 20, "fixture")
    other = [prompt[0], prompt[1] + 1, *prompt[2:]]  # a prompt token missing from its own entry
    body = json.loads(json.dumps(rec["body"]))
    body["choices"][0].pop("prompt_token_ids")
    with pytest.raises(ServerError, match="row 0: the prompt's token .* is not in its own entry; token ids must round-trip"):
        parse_prompt_logprobs(body, other, 20, "fixture")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b.pop("choices"), "no single `choices`"),
        (lambda b: b["choices"][0]["prompt_logprobs"].pop(), "entries for a 48-token prompt"),
        (lambda b: next(iter(b["choices"][0]["prompt_logprobs"][5].values())).update(logprob=float("nan")), "impossible"),
        (lambda b: next(iter(b["choices"][0]["prompt_logprobs"][5].values())).update(logprob=0.5), "impossible"),
        (lambda b: b["choices"][0]["prompt_logprobs"].__setitem__(3, "x"), "not a mapping"),
    ],
)
def test_malformed_responses_are_one_line(damage, message):
    rec = recorded("window_k20")
    body = json.loads(json.dumps(rec["body"]))
    damage(body)
    with pytest.raises(ServerError, match=message):
        parse_prompt_logprobs(body, rec["request"]["json"]["prompt"], 20, "fixture")


def test_fewer_than_k_per_row_names_the_cap():
    rec = recorded("window_k20")
    with pytest.raises(ServerError, match="19 log-probabilities in the top 20 .*--max-logprobs 20"):
        body = json.loads(json.dumps(rec["body"]))
        entry = body["choices"][0]["prompt_logprobs"][2]
        del entry[next(k for k, v in entry.items() if v["rank"] == 20)]
        parse_prompt_logprobs(body, rec["request"]["json"]["prompt"], 20, "fixture")


# ---------------------------------------------------------------------- retries and order


def test_transient_failures_are_retried_and_persistent_ones_are_one_line(transport):
    rec = recorded("window_k20")
    calls = {"n": 0}

    def flaky(request):
        calls["n"] += 1
        if calls["n"] <= 2:
            return httpx.Response(503, json={"error": {"message": "busy"}})
        return httpx.Response(200, json=rec["body"])

    transport["handler"] = flaky
    [lp] = client.prompt_logprobs(EP, [rec["request"]["json"]["prompt"]], 20, "test")
    assert calls["n"] == 3 and len(lp) == 47

    def down(request):
        raise httpx.ConnectError("connection refused")

    transport["handler"] = down
    with pytest.raises(ServerError, match=r"cannot reach it .* after 3 tries; is the server up"):
        client.prompt_logprobs(EP, [[1, 2]], 20, "test")
    transport["handler"] = lambda request: httpx.Response(200, text="<html>proxy</html>")
    with pytest.raises(ServerError, match="not JSON"):
        client.prompt_logprobs(EP, [[1, 2]], 20, "test")


def test_results_come_back_in_request_order_whatever_finishes_first():
    import random
    import time

    rng = random.Random(0)
    out = client.map_ordered(EP, lambda job: (time.sleep(rng.random() / 50), job)[1], list(range(40)))
    assert out == list(range(40))


# ------------------------------------------------------------------ Eq. 5 from a top-k list


def test_topk_metrics_equal_the_full_distribution_ones_given_the_true_top_k():
    """An exact identity: fed the quant's true top-k log-probabilities, Eq. 5 from the list equals
    token_metrics' kld_topk (and top1, nll_q, nll_R, dp); kld and rkld are NaN."""
    import torch

    gen = torch.Generator().manual_seed(3)
    zR = torch.randn(37, 500, generator=gen) * 3
    zq = zR + torch.randn(37, 500, generator=gen) * 0.7
    y = torch.randint(0, 500, (37,), generator=gen).numpy()
    full = metrics.token_metrics(zR, zq, y, 20, -27.6, "float64")
    lq = torch.log_softmax(zq.double(), -1)
    top_lp, top_ids = lq.topk(20, -1)
    part = metrics.topk_metrics(
        zR, top_ids.numpy(), top_lp.numpy(), lq.gather(-1, torch.as_tensor(y)[:, None])[:, 0].numpy(), y, 20, -27.6, "float64"
    )
    for name in ("kld_topk", "nll_q", "nll_R", "dp"):
        np.testing.assert_allclose(part[name], full[name], rtol=0, atol=1e-10)
    assert (part["top1"] == full["top1"]).all() and np.isnan(part["kld"]).all() and np.isnan(part["rkld"]).all()
    known = ~np.isnan(part["nll_q_greedy"])
    np.testing.assert_allclose(part["nll_q_greedy"][known], full["nll_q_greedy"][known], atol=1e-10)


# ------------------------------------------------------- the tiny model behind an exact server


class TinyServer:
    """vLLM's /v1/completions protocol (prompt_logprobs, return_token_ids, greedy generation) computed
    on an in-process model: the same numbers as the torch engine, so served tables must equal in-process ones."""

    def __init__(self, model, name):
        self.model, self.name = model, name

    def __call__(self, request):
        import torch

        if request.url.path.endswith("/models"):
            return httpx.Response(200, json={"data": [{"id": self.name}]})
        body = json.loads(request.content)
        prompt = body["prompt"]
        with torch.inference_mode():
            logp = torch.log_softmax(self.model(torch.tensor([prompt])).logits[0].float(), -1)
        if body.get("prompt_logprobs") is None:  # greedy generation
            ids = list(prompt)
            for _ in range(body["max_tokens"]):
                with torch.inference_mode():
                    ids.append(int(self.model(torch.tensor([ids])).logits[0, -1].argmax()))
            return httpx.Response(200, json={"choices": [{"token_ids": ids[len(prompt) :], "finish_reason": "length"}]})
        k = body["prompt_logprobs"]
        entries = [None]
        for j in range(1, len(prompt)):
            row = logp[j - 1]
            top_lp, top_ids = row.topk(k)
            entry = {str(int(t)): {"logprob": float(v), "rank": r + 1} for r, (t, v) in enumerate(zip(top_ids, top_lp))}
            own = prompt[j]
            if str(own) not in entry:
                entry[str(own)] = {"logprob": float(row[own]), "rank": int((row > row[own]).sum()) + 1}
            entries.append(entry)
        return httpx.Response(200, json={"choices": [{"prompt_logprobs": entries, "prompt_token_ids": prompt}]})


def test_fidelity_through_a_server_equals_in_process(tiny_reference, transport):
    """The served path (requests, parsing, Eq. 5 from the list, the table) against the in-process
    table of the same quant: kld_topk, nll_q, dp within float32 noise, top1 and the rows identical."""
    from silentzone.quant.load import load_quant
    from silentzone.server import fidelity as served
    from silentzone.stages import fidelity

    params, _, tokenizer, layout = tiny_reference
    model, tok, _ = load_quant(params, "q4_0")
    inproc = fidelity.window_batch_metrics  # noqa: F841 (the in-process path below)
    table_in = fidelity.per_token_table(params, layout, "q4_0", model.eval(), tok)
    transport["handler"] = TinyServer(model, "q4_0")
    table_srv = served.per_token_table(params, layout, "q4_0", EP)
    keys = ["corpus", "ctx", "window", "pos", "token"]
    pd.testing.assert_frame_equal(table_in[keys], table_srv[keys])
    for col in ("kld_topk", "nll_q", "nll_R", "dp"):
        np.testing.assert_allclose(table_srv[col], table_in[col], rtol=0, atol=2e-5)
    assert (table_srv["top1"] == table_in["top1"]).mean() > 0.99
    assert table_srv["kld"].isna().all() and table_srv["rkld"].isna().all()


def test_a_failing_server_leaves_nothing_written(tiny_reference, transport, tmp_path):
    import shutil

    from silentzone.engines import server as engine
    from silentzone.layout import Layout

    params, _, _, layout = tiny_reference
    run = Layout(tmp_path)
    shutil.copytree(layout.reference, run.reference)
    calls = {"n": 0}

    def dies_midway(request):
        calls["n"] += 1
        if calls["n"] > 3:
            return httpx.Response(500, json={"error": {"message": "engine dead"}})
        return TinyServer(__import__("silentzone.quant.load", fromlist=["x"]).load_quant(params, "q8_0")[0], "m")(request)

    transport["handler"] = dies_midway
    with pytest.raises(ServerError, match="HTTP 500: engine dead after 3 tries"):
        engine.fidelity(served(params, "q8_0"), run, "q8_0")  # the probe passes, the windows die midway
    assert not run.fidelity.exists() or not any(run.fidelity.iterdir())


@pytest.mark.skipif(
    not os.environ.get("SILENTZONE_VLLM_URL"), reason="no real vLLM server (SILENTZONE_VLLM_URL, `make vllm-serve`)"
)
def test_a_real_vllm_server_answers_as_recorded():
    """Against a live vLLM serving the reference (make vllm-serve): the probe passes and the recorded
    window comes back with the same tokens and log-probabilities (float rounding)."""
    endpoint = client.Endpoint(os.environ["SILENTZONE_VLLM_URL"], os.environ.get("SILENTZONE_VLLM_MODEL", "reference"))
    rec = recorded("window_k20")
    prompt = rec["request"]["json"]["prompt"]
    assert client.probe(endpoint, prompt[:16], 20)["k"] == 20
    [live] = client.prompt_logprobs(endpoint, [prompt], 20, "live")
    old = parse_prompt_logprobs(rec["body"], prompt, 20, "fixture")
    np.testing.assert_allclose(live.logprob, old.logprob, atol=1e-4)
    assert (live.top_ids[:, 0] == old.top_ids[:, 0]).all()
    with pytest.raises(SilentzoneError, match="caps log-probabilities"):
        client.prompt_logprobs(endpoint, [prompt], 10_000, "live")


def test_bench_through_a_server_equals_in_process(tiny_reference, transport, tmp_path):
    """Served bench of the tiny quant (one request per choice, gold-continuation log-probabilities;
    code generated on the server) against the in-process item table: same outcomes and choices,
    choice_logprobs within float32 noise, prompt_kld NaN and the server in the stamp; collect takes it."""
    import shutil

    from silentzone.layout import Layout
    from silentzone.quant.load import load_quant
    from silentzone.stages import bench

    params, _, _, layout = tiny_reference
    run = Layout(tmp_path)
    shutil.copytree(layout.prepared, run.prepared)
    shutil.copytree(layout.reference, run.reference)
    bench.run(params, run, "reference", lambda: load_quant(params, "reference")[:2])
    inproc = bench.run(params, run, "q4_0", lambda: load_quant(params, "q4_0")[:2])
    model = load_quant(params, "q4_0")[0].eval()
    transport["handler"] = TinyServer(model, "m")
    shutil.rmtree(run.bench_parts("q4_0"))
    from silentzone.engines import server as engine

    served_table = engine.bench(served(params, "q4_0"), run, "q4_0")
    same = ["model", "task", "item_id", "correct", "chosen", "chosen_norm", "n_prompt_tokens", "test_status"]
    pd.testing.assert_frame_equal(inproc[same], served_table[same])
    mc = inproc["choice_logprobs"].notna()
    for a, b in zip(inproc.loc[mc, "choice_logprobs"], served_table.loc[mc, "choice_logprobs"]):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4)
    assert served_table["prompt_kld"].isna().all()
    assert json.loads(run.bench_stamp("q4_0").read_text())["engine"] == {"kind": "server", "url": "http://test/v1", "model": "m"}


def test_collect_accepts_what_a_server_cannot_give_and_nothing_else():
    from silentzone.schema import TOKEN_COLUMNS
    from silentzone.stages.collect import check_per_token

    row = {c: 0.5 for c in TOKEN_COLUMNS} | {"corpus": "wiki", "ctx": 8, "window": 0, "pos": 4, "token": 1, "top1": True}
    table = pd.DataFrame([row | {"kld": float("nan"), "rkld": float("nan")}])
    check_per_token(table, "t.parquet", served=True)
    with pytest.raises(SilentzoneError, match=r"`kld` = .*nan.* is impossible"):
        check_per_token(table, "t.parquet")
    with pytest.raises(SilentzoneError, match=r"`nll_q` = .*nan.* is impossible"):
        check_per_token(pd.DataFrame([row | {"nll_q": float("nan")}]), "t.parquet", served=True)
