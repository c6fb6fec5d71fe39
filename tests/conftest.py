"""Shared fixtures. Tests use the `tiny` profile (a random llama built in code) unless marked `model`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
LLAMACPP_FIXTURES = FIXTURES / "llamacpp"  # real llama.cpp runs; provenance in its PROVENANCE.md

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def tiny_params():
    """Full tiny-profile parameters, built from profiles/ (no params.yaml needed)."""
    from silentzone import config

    return config.validate(config.build_profile("tiny", REPO / "profiles"), "params.yaml")


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
    for every test that only reads them: (params, model, tokenizer, layout)."""
    from silentzone import config
    from silentzone.layout import Layout
    from silentzone.model import load_reference
    from silentzone.stages import prepare, reference

    params = config.validate(config.build_profile("tiny", REPO / "profiles"), "params.yaml")
    layout = Layout(tmp_path_factory.mktemp("tiny-reference"))
    model, tokenizer = load_reference(params)
    prepare.run(params, layout)
    reference.run(params, layout, model, tokenizer)
    return params, model, tokenizer, layout


def run_dvc(*args, cwd, check=True):
    """`dvc ARGS` in a run folder with this venv's tools on PATH; its output in the assertion on failure."""
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([str(bin_dir / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory):
    """The tiny profile through the real `dvc repro paper-inputs`, once per session, in a run folder
    shaped like a clean checkout (code and profiles linked, pipeline files copied). Tests that change
    it must restore it; the render test adds `dvc repro paper` on top."""
    import shutil
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("tiny-pipeline")
    for name in ["dvc.yaml", "notebooks", "paper", "data/external"]:
        src, dst = REPO / name, root / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(
                src,
                dst,
                ignore=shutil.ignore_patterns(
                    "_output", "_variables.yml", "figures", "tables", "notebooks", "published", ".quarto"
                ),
            )
        else:
            shutil.copy2(src, dst)
    # the committed runs, as a checkout has them: the tiny paper sets their variables beside its own, and
    # `paper inputs` executes the lesson on the default run's tables
    if (REPO / "data" / "published").is_dir():
        shutil.copytree(REPO / "data" / "published", root / "data" / "published")
    (root / "profiles").symlink_to(REPO / "profiles")
    (root / "src").symlink_to(REPO / "src")
    subprocess.run(
        [str(Path(sys.executable).parent / "silentzone"), "profile", "tiny"], cwd=root, check=True, capture_output=True
    )
    run_dvc("init", "--no-scm", "-q", cwd=root)
    run_dvc("repro", "paper-inputs", cwd=root)
    return root
