"""Shared fixtures. Tests use the `tiny` profile (a random llama built in code) unless marked `model`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
LLAMACPP_FIXTURES = SHARED / "data" / "llamacpp"

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_params():
    """Full tiny-profile parameters, built from profiles/ (no params.yaml needed)."""
    from silentzone import config

    params = config.build_profile("tiny", REPO / "profiles")
    params["_source"] = "params.yaml"
    return params


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """Run in a fresh directory with profiles/ available, like a clean checkout's root."""
    (tmp_path / "profiles").symlink_to(REPO / "profiles")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def smollm2_cache_dir(tmp_path_factory):
    """Where the real reference's fp32 cache lives for tests: the repo's own cache if it was built
    already (a developer machine), else one per test session (CI builds it once, ~40 s)."""
    local = REPO / "data" / "models"
    if (local / "smollm2-135m-instruct" / "silentzone_cache.json").exists():
        return local
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory):
    """Tiny params, reference model and tokenizer, and a prepared + referenced data folder, built once
    for every test that only reads them: (params, model, tokenizer, root, store folders)."""
    from silentzone import config, corpora, models, reference

    params = config.build_profile("tiny", REPO / "profiles")
    params["_source"] = "params.yaml"
    root = tmp_path_factory.mktemp("tiny-reference")
    model, tokenizer = models.load_reference(params)
    corpora.prepare(params, root / "prepared")
    folders = reference.build(params, model, tokenizer, root / "reference", root / "prepared")
    return params, model, tokenizer, root, folders
