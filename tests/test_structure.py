"""The dependency direction of docs/design.md, checked on the code: nothing imports the cli; a stage
is reached only from the cli or an engine (silentzone.engines runs the capture stages), stages never
import each other, and the analysis side never imports the capture side (engines included)."""

from __future__ import annotations

import pytest

from silentzone import provenance

PACKAGE = provenance.SRC / "silentzone"
MODULES = sorted(
    ".".join(p.relative_to(provenance.SRC).with_suffix("").parts).removesuffix(".__init__") for p in PACKAGE.rglob("*.py")
)
STAGES = [m for m in MODULES if m.startswith("silentzone.stages.")]
ENGINES = [m for m in MODULES if m.startswith("silentzone.engines")]
ANALYSIS = [
    "silentzone.stats",
    "silentzone.zone",
    "silentzone.noise",
    "silentzone.analyses",
    "silentzone.plots",
    "silentzone.published",
    "silentzone.reports",
]
CAPTURE = [
    "silentzone.model",
    "silentzone.quant",
    "silentzone.refstore",
    "silentzone.metrics",
    "silentzone.bench",
    "silentzone.data",
    "silentzone.engines",
]


@pytest.mark.parametrize("module", [m for m in MODULES if m not in ("silentzone.cli", "silentzone.__main__")])
def test_nothing_imports_the_cli_or_another_stage(module):
    imported = provenance.imports_of(module)
    assert "silentzone.cli" not in imported
    if module in ENGINES:  # an engine runs the capture stages with its models: it may import them
        return
    assert not [m for m in imported if m in STAGES and m != module], (
        f"{module} imports a stage: stages are reached only through the cli or an engine"
    )


@pytest.mark.parametrize("module", STAGES)
def test_no_stage_imports_an_engine(module):
    assert not [m for m in provenance.imports_of(module) if m in ENGINES], f"{module} imports an engine: engines call stages"


@pytest.mark.parametrize("module", ANALYSIS)
def test_the_analysis_side_never_reaches_the_capture_side(module):
    reached = provenance.closure([module]) - provenance.closure(provenance.ALWAYS)
    assert not [m for m in reached if m.startswith(tuple(CAPTURE))], f"{module} reaches capture-side code"


def test_the_module_list_is_what_the_design_document_describes():
    design = (provenance.SRC.parent / "docs" / "design.md").read_text()
    missing = [
        m
        for m in MODULES
        if m.count(".") >= 1
        and m.rsplit(".", 1)[-1] + ".py" not in design
        and m.rsplit(".", 1)[-1] + "/" not in design
        and m.rsplit(".", 1)[-1] != "__init__"
        and not m.endswith("__main__")
    ]
    assert not missing, f"docs/design.md does not describe {missing}"
