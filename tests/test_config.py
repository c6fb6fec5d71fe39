from pathlib import Path

import pytest

from silentzone import cli, config
from silentzone.errors import SilentzoneError


def test_deep_merge_overrides_leaves_and_keeps_siblings():
    base = {"a": {"x": 1, "y": 2}, "b": [1, 2]}
    out = config.deep_merge(base, {"a": {"y": 3}, "b": [9]})
    assert out == {"a": {"x": 1, "y": 3}, "b": [9]}
    assert base["a"]["y"] == 2  # the base is not mutated


def test_every_profile_builds_and_names_itself():
    for name in ["tiny", "quick", "default", "gemma"]:
        params = config.build_profile(name)
        assert params["profile"] == name
        assert params["seed"] == config.build_profile("default")["seed"]


def test_get_names_key_and_type():
    params = {"_source": "p.yaml", "fidelity": {"ctx": "512"}}
    with pytest.raises(SilentzoneError, match=r"p.yaml: `fidelity.ctx` must be int"):
        config.get(params, "fidelity.ctx", int)
    with pytest.raises(SilentzoneError, match=r"missing key `fidelity.topk`"):
        config.get(params, "fidelity.topk", int)


def test_profile_command_roundtrip(workdir, capsys):
    assert cli.main(["profile", "tiny"]) == 0
    assert cli.main(["profile", "--show"]) == 0
    assert capsys.readouterr().out.strip().endswith("tiny")
    assert config.load("params.yaml") == {**config.build_profile("tiny"), "_source": "params.yaml"}


def test_unknown_profile_is_one_clear_line(workdir, capsys):
    assert cli.main(["profile", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "profile 'nope' not found" in err and "tiny" in err


def test_committed_params_yaml_is_its_profile_regenerated():
    """params.yaml is generated; a profile edit without `silentzone profile NAME` leaves it stale."""
    repo = Path(__file__).resolve().parents[1]
    committed = config.load(repo / "params.yaml")
    fresh = config.build_profile(committed["profile"], repo / "profiles")
    assert {k: v for k, v in committed.items() if k != "_source"} == fresh, "run `silentzone profile quick` and commit params.yaml"
