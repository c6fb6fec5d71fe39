from pathlib import Path

import pytest

from silentzone import cli, config
from silentzone.errors import SilentzoneError

REPO = Path(__file__).resolve().parents[1]


def test_deep_merge_overrides_leaves_and_keeps_siblings():
    base = {"a": {"x": 1, "y": 2}, "b": [1, 2]}
    out = config.deep_merge(base, {"a": {"y": 3}, "b": [9]})
    assert out == {"a": {"x": 1, "y": 3}, "b": [9]}
    assert base["a"]["y"] == 2  # the base is not mutated


def test_every_profile_builds_and_names_itself():
    default_seed = config.build_profile("default", REPO / "profiles")["seed"]
    for name in ["tiny", "quick", "default", "gemma"]:
        raw = config.build_profile(name, REPO / "profiles")
        assert raw["profile"] == name
        assert raw["seed"] == default_seed
        params = config.validate(raw, "params.yaml")
        assert params.profile == name and params.seed == default_seed


def test_validation_names_key_and_type():
    """A wrong type or a missing key is one line naming the file and the dotted key (was config.get)."""
    raw = config.build_profile("tiny", REPO / "profiles")
    raw["fidelity"]["ctx"] = "512"
    with pytest.raises(SilentzoneError, match=r"^p.yaml: `fidelity.ctx`: Input should be a valid integer, got '512'$"):
        config.validate(raw, "p.yaml")
    raw = config.build_profile("tiny", REPO / "profiles")
    del raw["fidelity"]["topk"]
    with pytest.raises(SilentzoneError, match=r"^p.yaml: missing key `fidelity.topk`"):
        config.validate(raw, "p.yaml")


def test_profile_command_roundtrip(workdir, capsys):
    assert cli.main(["profile", "tiny"]) == 0
    assert cli.main(["profile", "--show"]) == 0
    assert capsys.readouterr().out.strip().endswith("tiny")
    fresh = config.build_profile("tiny")
    assert config.read_yaml("params.yaml") == fresh
    loaded = config.load("params.yaml")
    assert loaded == config.validate(fresh, "params.yaml")
    assert loaded.source == "params.yaml" and loaded.profile == "tiny" and loaded.fidelity.ctx == 64


def test_unknown_profile_is_one_clear_line(workdir, capsys):
    assert cli.main(["profile", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "profile 'nope' not found" in err and "tiny" in err


def test_committed_params_yaml_is_its_profile_regenerated():
    """params.yaml is generated; a profile edit without `silentzone profile NAME` leaves it stale."""
    committed = config.load(REPO / "params.yaml")
    fresh = config.build_profile(committed.profile, REPO / "profiles")
    assert config.read_yaml(REPO / "params.yaml") == fresh, "run `silentzone profile quick` and commit params.yaml"
    assert committed == config.validate(fresh, str(REPO / "params.yaml"))


def test_debug_flag_adds_the_traceback(workdir, capsys):
    assert cli.main(["--debug", "profile", "nope"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "SilentzoneError" in err
    assert err.strip().splitlines()[-1].startswith("silentzone profile: error: profile 'nope' not found")


def test_python_dash_m_runs_the_cli(workdir):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "silentzone", "profile", "tiny"], cwd=workdir, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert config.read_yaml(workdir / "params.yaml") == config.build_profile("tiny")
    bad = subprocess.run(
        [sys.executable, "-m", "silentzone", "--params", "missing.yaml", "collect"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "missing.yaml: not found" in bad.stderr
