"""dvc.yaml's dependencies are derived, not trusted: for every stage, the silentzone modules its
command imports (transitively, function-level imports included; notebooks' imports for `analyze`)
and the params sections its code reads (`params.<section>` anywhere in those modules) must be
listed, or a change there would leave its outputs silently stale."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from silentzone import provenance

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
PACKAGE = SRC / "silentzone"

ENTRIES = {stage: list(entries) for stage, entries in provenance.ENTRIES.items()}  # the one list (provenance)
ALWAYS = list(provenance.ALWAYS)  # what the cli's handlers import first
# Params methods and the sections they read (config.Params).
# Sections a stage's code touches but that cannot change its outputs, with the reason.
ENGINE_REACH = "reached through silentzone.engines, whose engine modules run every capture stage; never read by this one"
EXEMPT = {
    "collect": {
        "bench": "read by data.items' subset drawing, which collect never runs: it reads the prepared items (a data dependency)",
        "seed": "the same: the subsets' seed, which made the prepared items collect reads",
    },
    "reference": {
        "bench": ENGINE_REACH,
        "variants": ENGINE_REACH,
        "cohort": "the reference is no cohort member: quant.load.check_name only checks the name `reference`",
    },
    "fidelity": {"bench": ENGINE_REACH},
    "bench": {"variants": ENGINE_REACH},
    "bench-reference": {
        "variants": ENGINE_REACH,
        "cohort": "the reference is no cohort member: its fingerprint reads cohort.get('reference'), always None",
        "corpora": "read only to build a llama-quantize member's importance matrix, never for the reference",
        "fidelity": "fidelity.ctx: the importance matrix's window, never for the reference",
    },
}
# Params attributes that are no section: where params came from, and provenance's dump of the sections it names.
NOT_SECTIONS = {"source", "model_dump"}
METHODS = {
    "quant_names": {"cohort"},
    "task_names": {"bench"},
    "composite_tasks": {"bench"},
    "store_specs": {"fidelity"},
    "stats_settings": {"seed", "stats", "verdicts"},
}


module_path, closure = provenance.module_path, provenance.closure


def params_read(modules: set[str]) -> set[str]:
    sections = set()
    for name in modules:
        for node in ast.walk(ast.parse(module_path(name).read_text())):
            # params["section"] and params.get("section") on the plain-data form (paper.py)
            if (
                isinstance(node, ast.Subscript)
                and isinstance(node.value, ast.Name)
                and node.value.id == "params"
                and isinstance(node.slice, ast.Constant)
                and isinstance(node.slice.value, str)
            ):
                sections.add(node.slice.value)
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "params"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                sections.add(node.args[0].value)
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "params"
                and node.attr != "get"
            ):
                sections |= METHODS.get(
                    node.attr, {node.attr} if not node.attr.startswith("_") and node.attr not in NOT_SECTIONS else set()
                )
    return sections


LESSON = "lesson-metric-validity"  # executed by `paper inputs`, not by an analyze stage


def notebook_modules(stems=None) -> list[str]:
    """The silentzone modules the analysis notebooks import (or the notebooks `stems` name)."""
    names = set()
    for nb in (REPO / "notebooks").glob("*.ipynb"):
        if (nb.stem == LESSON) if stems is None else (nb.stem not in stems):
            continue
        for cell in json.loads(nb.read_text())["cells"]:
            text = "".join(cell["source"]) if cell["cell_type"] == "code" else ""
            names |= {
                f"silentzone.{m.strip()}"
                for group in re.findall(r"from silentzone import ([\w, ]+)", text)
                for m in group.split(",")
            }
    return sorted(n for n in names if module_path(n).exists())


def stage_spec(stage: str) -> dict:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    return spec.get("do", spec)


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(REPO).as_posix()
    return any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)


def code_deps(stage: str) -> list[str]:
    return [d for d in stage_spec(stage)["deps"] if d.startswith("src/")]


@pytest.mark.parametrize("stage", sorted(ENTRIES))
def test_stage_depends_on_exactly_the_code_its_command_executes(stage):
    """Derived, not hand-listed: every module the command imports, one file each, nothing else — no cli.py
    (a help-text edit must not invalidate a two-hour run) and no empty file (DVC warns about each)."""
    derived = [p.relative_to(REPO).as_posix() for p in provenance.stage_modules(stage)]
    assert code_deps(stage) == derived, f"dvc.yaml stage {stage!r}: run `python scripts/sync_dvc_deps.py`"
    assert "src/silentzone/cli.py" not in code_deps(stage)


def test_the_notebooks_import_only_what_the_analyze_stage_depends_on():
    reached = closure(ENTRIES["analyze"] + ALWAYS)
    assert set(notebook_modules()) <= reached


def test_the_lesson_imports_only_what_the_paper_inputs_stage_depends_on():
    used = set(notebook_modules({LESSON}))
    assert {"silentzone.lesson", "silentzone.noise", "silentzone.stats"} <= used
    assert used <= closure(ENTRIES["paper-inputs"] + ALWAYS)
    deps = stage_spec("paper-inputs")["deps"]
    assert f"notebooks/{LESSON}.ipynb" in deps and "data/published" in deps


def test_the_sync_script_repairs_a_stale_list(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("sync_dvc_deps", REPO / "scripts" / "sync_dvc_deps.py")
    sync = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync)
    text = (REPO / "dvc.yaml").read_text()
    assert sync.synced(text) == (text, [])
    stale = text.replace("      - src/silentzone/metrics.py\n", "      - src/silentzone/cli.py\n", 1)
    repaired, changed = sync.synced(stale)
    assert repaired == text and changed


@pytest.mark.parametrize("stage", sorted(ENTRIES))
def test_stage_lists_every_params_section_its_code_reads(stage):
    entries = ENTRIES[stage]
    listed = {re.sub(r"\.\$\{key\}$", "", str(p)).split(".")[0] for p in stage_spec(stage).get("params", [])}
    missing = sorted(params_read(closure(entries)) - listed - set(EXEMPT.get(stage.removesuffix("-also"), {})))
    assert not missing, f"dvc.yaml stage {stage!r} reads params {missing} but does not list them"


def test_the_derivation_sees_what_it_must():
    """The scanner itself: the fidelity stage reaches the metrics and the quant formats, and reads fidelity."""
    mods = closure(ENTRIES["fidelity"])
    assert {"silentzone.metrics", "silentzone.quant.formats", "silentzone.refstore", "silentzone.model.head"} <= mods
    assert {"fidelity", "cohort", "variants"} <= params_read(mods)


@pytest.mark.parametrize("stage", sorted(provenance.STAGES))
def test_stamps_and_dvc_name_the_same_params_and_entries(stage):
    """Provenance stamps hash exactly the params DVC tracks, and the same entry modules the test derives from."""
    entries, sections = provenance.STAGES[stage]
    listed = [str(p).replace("${key}", "{name}") for p in stage_spec(stage).get("params", [])]
    assert sorted(listed) == sorted(s for s in sections if s not in provenance.OPTIONAL)
    assert set(entries) <= set(ENTRIES[stage])
