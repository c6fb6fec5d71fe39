"""The scripts under benchmarks/ are run by hand (they measure; tests never time anything), so
nothing else notices when one stops running at all: each that defines main() must call it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def _calls_main_when_run(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test):
            return any("main(" in ast.unparse(stmt) for stmt in node.body)
    return False


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_a_benchmark_script_with_a_main_runs_it(script):
    tree = ast.parse(script.read_text(encoding="utf-8"))
    if any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body):
        assert _calls_main_when_run(tree), f"{script.name}: defines main() but running it does nothing"


def test_the_check_sees_a_missing_guard():
    assert not _calls_main_when_run(ast.parse("def main():\n    pass\n"))
    assert _calls_main_when_run(ast.parse("def main():\n    pass\nif __name__ == '__main__':\n    raise SystemExit(main())\n"))
