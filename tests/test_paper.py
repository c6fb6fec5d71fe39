"""The manuscript and notebooks, checked without Quarto and without running the pipeline."""

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

from silentzone import config, paper, reports
from silentzone.errors import SilentzoneError
from silentzone.stages import analyze

REPO = Path(__file__).resolve().parents[1]
QMD = REPO / "paper" / "index.qmd"


def _parameters_cell(nb_path: Path) -> list[dict]:
    nb = json.loads(nb_path.read_text())
    return [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]


def test_committed_notebooks_carry_no_outputs():
    for nb_path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb_path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [] and cell.get("execution_count") is None, nb_path.name


def test_every_notebook_has_a_stage_and_every_stage_a_notebook():
    on_disk = {p.stem for p in (REPO / "notebooks").glob("*.ipynb")}
    in_params = set(config.build_profile("default", REPO / "profiles")["notebooks"])
    assert on_disk == in_params and len(on_disk) == 6


def test_parameters_cell_matches_what_the_stage_passes():
    params = config.validate(config.build_profile("default", REPO / "profiles"), "params.yaml")
    for nb_path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = _parameters_cell(nb_path)
        assert len(cells) == 1, f"{nb_path.name}: exactly one cell tagged `parameters`"
        tree = ast.parse("".join(cells[0]["source"]))
        declared = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
        passed = analyze.notebook_parameters(params, nb_path.stem)
        assert declared == set(passed), nb_path.name
        assert passed["figures_dir"] == f"results/figures/{nb_path.stem}" and passed["processed_dir"] == "data/processed"
    assert analyze.notebook_parameters(params, "04-routing")["options"] == {"min_disagreements": 5}


def _code_cells(nb_path: Path) -> list[str]:
    return ["".join(c["source"]) for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "code"]


def test_notebooks_compute_in_one_reports_call_and_only_display_after_it():
    labels = []
    for nb_path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = _code_cells(nb_path)[1:]  # after the parameters cell
        call = ast.parse(cells[0])
        imports = {alias.name if isinstance(node, ast.Import) else node.module
                   for node in call.body if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
        assert imports <= {"IPython.display", "silentzone"}, nb_path.name  # no command module, no pandas
        called = [n.func.attr for n in ast.walk(call) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                  and isinstance(n.func.value, ast.Name) and n.func.value.id == "reports"]
        assert len(called) == 1 and callable(getattr(reports, called[0])), nb_path.name
        for source in cells[1:]:
            body = ast.parse(source).body
            # one expression: out[...] or Image(filename=out["figures"][...]); no assignment, no call into pandas
            assert len(body) == 1 and isinstance(body[0], ast.Expr), (nb_path.name, source)
            expr = body[0].value
            assert isinstance(expr, ast.Subscript) or (isinstance(expr, ast.Call) and ast.unparse(expr.func) == "Image"), (nb_path.name, source)
            labels += re.findall(r"^#\| label: ((?:fig|tbl)-[a-z0-9-]+)$", source, flags=re.M)
            if "Image(" in source:
                assert re.search(r"^#\| label: fig-", source, flags=re.M), (nb_path.name, source)
    assert len(labels) == len(set(labels)) == 16


def test_numbers_namespace_and_formatting():
    assert paper.numbers_namespace("01-fidelity-vs-score") == "fidelity_vs_score"
    assert paper.format_value(-0.7213) == "-0.721"
    assert paper.format_value(0.00004) == "4.0e-05"
    assert paper.format_value(None) == "n/a"
    assert paper.format_value(float("nan")) == "n/a"
    assert paper.format_value({"a": 3, "b": [0.5, 0.25]}) == {"a": 3, "b": "0.500, 0.250"}


def _results_sections(text: str) -> str:
    body = text.split("\n# Results", 1)[1]
    return body.split("\n# Limitations", 1)[0]


# Integers that are part of the prose, not results: the CI level and "one half" style numbers.
ALLOWED_NUMBERS = {"95"}


def hand_typed_numbers(text: str) -> list[str]:
    text = re.sub(r"\{\{<.*?>\}\}", " ", text)          # shortcodes: var, include
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", " ", text)     # images (paths carry digits)
    text = re.sub(r"\{#[^}]*\}", " ", text)                # cross-reference labels
    text = re.sub(r"\[@[^\]]*\]", " ", text)               # citations
    text = re.sub(r"`[^`]*`", " ", text)                   # code
    text = re.sub(r"^#+ .*$", " ", text, flags=re.M)       # headings
    # A number glued to letters or a hyphen is part of a name (top-1, Qwen3.6-35B), not a result.
    found = re.findall(r"(?<![\w.\-])[-+−]?\d+(?:\.\d+)?%?(?![\w\-])", text)
    return [n for n in found if n.strip("+-−%") not in ALLOWED_NUMBERS]


def test_results_sections_contain_no_hand_typed_numbers():
    assert hand_typed_numbers(_results_sections(QMD.read_text())) == []


def test_the_number_check_can_fail():
    assert hand_typed_numbers("ρ = -0.72 over {{< var a.b >}} quants, 28 of them") == ["-0.72", "28"]


def test_render_without_quarto_says_so_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(paper.shutil, "which", lambda name: None)
    with pytest.raises(SilentzoneError) as err:
        paper.render(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "quarto" in message and "quarto.org" in message


def test_published_values_match_the_paper_notes():
    published = yaml.safe_load((REPO / "paper" / "published.yml").read_text())
    notes = (REPO.parent / "shared" / "paper-notes.md")
    assert published["qwen"]["rho_full"] == -0.72 and published["devstral"]["rho_full"] == -0.86
    assert published["devstral"]["rho_silent"] == -0.24 and published["qwen"]["rho_volume_silent"] == 0.94
    if notes.exists():
        text = notes.read_text()
        for value in ["−0.72", "−0.86", "−0.24", "+0.94", "+0.55", "1.08", "1.22", "42.3", "49.4"]:
            assert value in text
