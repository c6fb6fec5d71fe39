"""The committed published run (data/published/<profile>/, paper/published/) against itself: the
paper a reader opens prints exactly the committed numbers, and the committed tables are the ones
the pipeline's schema defines. scripts/publish_run.py writes them from a finished run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from silentzone import paper

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "data" / "published"
PAPER = REPO / "paper" / "published"
PROFILES = sorted(p.name for p in PUBLISHED.iterdir() if (p / "numbers").is_dir()) if PUBLISHED.is_dir() else []
NOT_YET = "no published run is committed yet (scripts/publish_run.py writes data/published/<profile>/)"


@pytest.mark.skipif(not PROFILES, reason=NOT_YET)
@pytest.mark.parametrize("profile", PROFILES)
def test_committed_variables_are_the_committed_numbers_formatted(profile):
    run = PUBLISHED / profile
    committed = yaml.safe_load((run / "_variables.yml").read_text())
    min_n = yaml.safe_load((run / "params.yaml").read_text())["stats"]["min_n"]
    rebuilt = paper.build_variables(run, min_n=min_n)  # numbers/*.json -> printed values, as `paper inputs` does
    for namespace, values in rebuilt.items():
        if namespace != "paper":
            assert committed[namespace] == values, namespace


@pytest.mark.skipif(not PROFILES, reason=NOT_YET)
@pytest.mark.parametrize("profile", PROFILES)
def test_committed_tables_carry_the_item_contract(profile):
    run = PUBLISHED / profile
    items = pd.read_parquet(run / "items.parquet")
    assert {"model", "task", "item_id", "correct", "prompt_kld"} <= set(items.columns)
    params = yaml.safe_load((run / "params.yaml").read_text())
    assert params["profile"] == profile
    per_model = items.groupby("model").size()
    assert set(per_model) == {sum(params["bench"]["tasks"].values())}  # every model scored on every item
    cohort = pd.read_parquet(run / "cohort.parquet")
    assert len(cohort) == len(params["cohort"]) + 1 and set(cohort["model"]) == set(per_model.index)


@pytest.mark.skipif(
    not (PAPER / "index.html").exists() or "default" not in PROFILES,
    reason="the published paper (paper/published/, the default run's) is not committed yet",
)
def test_the_committed_paper_prints_exactly_the_committed_numbers():
    variables = yaml.safe_load((PUBLISHED / "default" / "_variables.yml").read_text())
    html = (PAPER / "index.html").read_text()
    qmd = (REPO / "paper" / "index.qmd").read_text()
    assert len(paper.visible_variables(qmd, variables)) > 50
    assert paper.numbers_missing_from_html(qmd, variables, html) == []
    assert (PAPER / "index.pdf").stat().st_size > 10_000


@pytest.mark.skipif(
    not (PAPER / "index.html").exists() or not {"default", "gemma"} <= set(PROFILES),
    reason="the published paper and both families' runs are not committed yet",
)
def test_the_committed_paper_sets_the_families_side_by_side():
    html = paper.html_text((PAPER / "index.html").read_text())
    start = html.rindex("Paper and reproduction side by side")  # the heading, not its table-of-contents entry
    section = html[start : html.index("Discussion", start)]
    # this run's own numbers, and the other family's as the render saw them (families/: republished since,
    # data/published/gemma differs from them until the paper is rerendered)
    for variables_path in (PUBLISHED / "default" / "_variables.yml", PAPER / "families" / "gemma.yml"):
        variables = yaml.safe_load(variables_path.read_text())
        profile = variables["run"]["profile"].strip("`")
        for dotted in ("run.model", "fidelity_vs_score.primary.full.rho", "noise_ceiling.reliability.full.reliability"):
            assert str(paper._lookup(variables, dotted)) in section, (profile, dotted)
    assert "Committed run: gemma" in section


def test_publish_refuses_an_unfinished_run(tmp_path):
    (tmp_path / "params.yaml").write_text("profile: tiny\ncohort: {}\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "publish_run.py"), str(tmp_path), "--into", str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "the run is not complete" in proc.stderr and "dvc repro" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_publish_copies_a_finished_run_and_its_hashes(tiny_pipeline, tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "publish_run.py"), str(tiny_pipeline), "--into", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "data" / "published" / "tiny"
    sums = (run / "SHA256SUMS").read_text()
    rerun = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "hash_outputs.py"), str(tiny_pipeline)], capture_output=True, text=True
    )
    assert sums == rerun.stdout and "data/processed/items.parquet" in sums and ".ipynb" not in sums
    assert (run / "items.parquet").read_bytes() == (tiny_pipeline / "data" / "processed" / "items.parquet").read_bytes()
    numbers = sorted(p.name for p in (run / "numbers").glob("*.json"))
    assert numbers == sorted(p.name for p in (tiny_pipeline / "results" / "numbers").glob("*.json"))
    assert json.loads((run / "numbers" / numbers[0]).read_text()) == json.loads(
        (tiny_pipeline / "results" / "numbers" / numbers[0]).read_text()
    )
    assert not list((run / "figures").rglob("*.png")) and list((run / "figures").rglob("*.csv"))
    committed = yaml.safe_load((run / "_variables.yml").read_text())
    rebuilt = paper.build_variables(run, min_n=yaml.safe_load((run / "params.yaml").read_text())["stats"]["min_n"])
    assert all(committed[ns] == values for ns, values in rebuilt.items() if ns != "paper")


def _finished_run(root: Path, page: str) -> Path:
    """The smallest run publish_run.py accepts: one quant, its tables, a rendered paper with `page` as
    index.html, and Quarto's by-products beside it."""
    root.mkdir(parents=True)
    (root / "params.yaml").write_text("profile: tiny\ncohort: {q8_0: Q8_0}\n")
    (root / "dvc.lock").write_text("schema: '2.0'\n")
    (root / "data" / "processed").mkdir(parents=True)
    pd.DataFrame({"model": ["reference", "q8_0"], "composite": [0.5, 0.5]}).to_parquet(root / "data/processed/cohort.parquet")
    items = pd.DataFrame(
        {"model": ["reference", "q8_0"], "task": "t", "item_id": "1", "correct": True, "prompt_kld": [None, 0.1]}
    )
    items.to_parquet(root / "data/processed/items.parquet")
    (root / "results" / "numbers").mkdir(parents=True)
    (root / "paper" / "_output" / "notebooks").mkdir(parents=True)
    (root / "paper" / "_variables.yml").write_text("run: {}\n")
    out = root / "paper" / "_output"
    (out / "index.html").write_text(page)
    (out / "index.pdf").write_bytes(b"%PDF-1.7\n")
    (out / "notebooks" / "01-x-preview.html").write_text("<p>a notebook page</p>")
    (out / "notebooks" / "01-x.ipynb").write_text("{}")
    for by_product in ("index-preview.html", "index.out.ipynb", "notebooks/01-x.out.ipynb"):
        (out / by_product).write_text(f'<div data-notebook="{root}/paper/notebooks/01-x.ipynb"></div>')
    return root


def test_publish_leaves_quartos_by_products_out_of_the_paper(tmp_path):
    run = _finished_run(tmp_path / "run", "<p>the paper</p>")
    for profile in ("tiny", "gemma"):  # the run's own profile and a family its side-by-side table showed
        (run / "data" / "published" / profile).mkdir(parents=True)
        (run / "data" / "published" / profile / "_variables.yml").write_text(f"run: {{profile: {profile}}}\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "publish_run.py"), str(run), "--paper", "--into", str(tmp_path / "into")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    published = tmp_path / "into" / "paper" / "published"
    files = sorted(p.relative_to(published).as_posix() for p in published.rglob("*") if p.is_file())
    assert files == ["families/gemma.yml", "index.html", "index.pdf", "notebooks/01-x-preview.html", "notebooks/01-x.ipynb"]
    assert (published / "families" / "gemma.yml").read_text() == "run: {profile: gemma}\n"


def test_publish_refuses_a_paper_that_names_the_render_folder(tmp_path):
    run = _finished_run(tmp_path / "run", "<p>the paper</p>")
    (run / "paper" / "_output" / "notebooks" / "01-x.ipynb").write_text(json.dumps({"output_path": f"{run}/results/x.ipynb"}))
    into = tmp_path / "into"
    (into / "paper" / "published").mkdir(parents=True)
    (into / "paper" / "published" / "index.html").write_text("the paper published before")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "publish_run.py"), str(run), "--paper", "--into", str(into)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("notebooks/01-x.ipynb: names the render's folder")
    # nothing half-written: the paper published before is still there, and no staging folder is left
    assert (into / "paper" / "published" / "index.html").read_text() == "the paper published before"
    assert not (into / "paper" / "published.tmp").exists()
