"""The dependency direction of docs/design.md, checked on the code: nothing imports the cli; a stage
is reached only from the cli or an engine (silentzone.engines runs the capture stages), stages never
import each other, the analysis side (configuration included) never reaches the capture side (engines
included), and no module imports itself back through others — lazy imports inside functions count as
imports everywhere here."""

from __future__ import annotations

import pytest

from silentzone import provenance

PACKAGE = provenance.SRC / "silentzone"
MODULES = sorted(
    ".".join(p.relative_to(provenance.SRC).with_suffix("").parts).removesuffix(".__init__") for p in PACKAGE.rglob("*.py")
)
STAGES = [m for m in MODULES if m.startswith("silentzone.stages.")]
# What every command loads, and the analysis side: none of it may reach capture code.
SHARED = [
    "silentzone.config",
    "silentzone.layout",
    "silentzone.errors",
    "silentzone.io",
    "silentzone.schema",
    "silentzone.provenance",
    "silentzone.task_registry",
]
ENGINES = [m for m in MODULES if m.startswith("silentzone.engines")]
ANALYSIS = [
    "silentzone.stats",
    "silentzone.zone",
    "silentzone.noise",
    "silentzone.analyses",
    "silentzone.verdicts",
    "silentzone.formatting",
    "silentzone.plots",
    "silentzone.published",
    "silentzone.reports",
    "silentzone.paper",
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


@pytest.mark.parametrize("module", SHARED + ANALYSIS)
def test_the_analysis_side_never_reaches_the_capture_side(module):
    reached = provenance.closure([module])  # the whole closure: configuration is not exempt
    assert not [m for m in reached if m.startswith(tuple(CAPTURE))], f"{module} reaches capture-side code"


def import_cycles() -> list[list[str]]:
    """Every strongly connected group of modules in the import graph (function-level imports included)."""
    graph = {m: sorted(provenance.imports_of(m)) for m in MODULES}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, []):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, []):
                cycles.append(sorted(group))

    for module in MODULES:
        if module not in index:
            visit(module)
    return cycles


def test_no_import_cycle_module_level_or_lazy():
    assert import_cycles() == []


def test_the_cycle_finder_sees_a_lazy_cycle(monkeypatch):
    real = provenance.imports_of
    monkeypatch.setattr(
        provenance, "imports_of", lambda m: real(m) | ({"silentzone.noise"} if m == "silentzone.stats" else set())
    )
    assert any({"silentzone.noise", "silentzone.stats"} <= set(group) for group in import_cycles())  # noise imports stats


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
