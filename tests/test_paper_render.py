"""The tiny profile's manuscript as a reader sees it: `dvc repro paper` renders it with Quarto (HTML,
and PDF through Typst); the HTML is opened in headless Chromium at 1280 px and the PDF read back
with pdftotext. Skipped only where Quarto is absent; every other missing tool fails with its fix."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QMD = REPO / "paper" / "index.qmd"
EMBED = re.compile(r"\{\{< embed notebooks/([\w-]+)\.ipynb#(fig-[\w-]+) >\}\}")
VIEWPORT = (1280, 900)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEBIAN_TOOLS = "apt-get install chromium chromium-driver poppler-utils"

pytestmark = [
    pytest.mark.pipeline,
    pytest.mark.skipif(
        shutil.which("quarto") is None, reason="Quarto is not on PATH: `make paper-tools` installs it (CI: .ci/run sets it up)"
    ),
]


def _env():
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def _run(args, cwd):
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, args))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name}: not installed; the rendered-paper checks need it (Debian: {DEBIAN_TOOLS})")
    return path


@pytest.fixture(scope="module")
def rendered(tiny_pipeline):
    """The tiny profile's pipeline (conftest, shared with test_pipeline.py) plus `dvc repro paper`
    (the render is the stage itself); the seconds the render took are written to render_seconds.txt."""
    root = tiny_pipeline
    start = time.perf_counter()
    _run([str(BIN / "dvc"), "repro", "paper"], root)
    (root / "render_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return root / "paper"


@pytest.fixture(scope="module")
def browser(rendered):
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium: not installed; it is in the dev extra (`pip install -e '.[dev]'`, or `make install`)")

    options = webdriver.ChromeOptions()
    options.binary_location = _tool("chromium")
    for flag in CHROMIUM_FLAGS + [
        f"--window-size={VIEWPORT[0]},{VIEWPORT[1]}",
        f"--user-data-dir={rendered.parent / 'chromium-profile'}",
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(_tool("chromedriver")), options=options)
    try:
        driver.get((rendered / "_output" / "index.html").as_uri())
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def pdf_text(rendered):
    proc = subprocess.run(
        [_tool("pdftotext"), "-enc", "UTF-8", str(rendered / "_output" / "index.pdf"), "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    return re.sub(r"\s+", " ", proc.stdout)


def headings(qmd_text: str) -> list[str]:
    """Level-1 and level-2 headings of the manuscript, as printed (no attributes, no markup)."""
    found = re.findall(r"^#{1,2} (.+?)(?:\s*\{[^}]*\})?\s*$", qmd_text, flags=re.M)
    return [re.sub(r"[*_`]", "", h).strip() for h in found]


def test_the_paper_stage_renders_html_and_pdf(rendered):
    out = rendered / "_output"
    assert (out / "index.html").stat().st_size > 10_000 and (out / "index.pdf").stat().st_size > 10_000
    # the table snippets are includes, not pages of their own
    assert not list(out.rglob("tables/**/*.html"))
    seconds = float((rendered.parent / "render_seconds.txt").read_text())
    assert 0 < seconds < 300, seconds


def test_visible_text_has_no_raw_shortcodes_missing_values_or_broken_references(browser):
    text = browser.execute_script("return document.body.innerText")
    assert len(text) > 5000
    for bad in ["{{<", "?var", "?meta", "n/a", "?@fig-", "?@tbl-", "?@sec-"]:
        assert bad not in text, f"{bad!r} in the rendered HTML: ...{text[max(0, text.find(bad) - 80) : text.find(bad) + 80]}..."
    assert re.findall(r"\(?\w+\d{4}\w*\?\)", text) == []  # pandoc's mark of an unknown citation key
    # the sidebar lists the analysis notebooks the figures come from, never the table snippets
    pages = browser.execute_script("return [...document.querySelectorAll('a[href$=\".html\"]')].map(a => a.getAttribute('href'))")
    assert pages and all(re.fullmatch(r"notebooks/\d\d-[\w-]+-preview\.html|index-preview\.html", p) for p in pages), pages


def test_every_image_loaded(browser):
    images = browser.execute_script("return [...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
    expected = len(EMBED.findall(QMD.read_text()))
    figures = [i for i in images if i[0].startswith("index_files/figure-html/notebooks-")]
    assert len(figures) == expected and expected >= 7, images
    assert all(complete and width > 0 for _, complete, width in images), [i for i in images if not (i[1] and i[2] > 0)]


def test_every_figure_links_to_the_cell_of_the_executed_notebook_that_made_it(browser, rendered):
    links = set(
        browser.execute_script("return [...document.querySelectorAll('a.quarto-notebook-link')].map(a => a.getAttribute('href'))")
    )
    embeds = EMBED.findall(QMD.read_text())
    assert len(embeds) >= 7
    for notebook, label in embeds:
        assert f"notebooks/{notebook}-preview.html#cell-{label}" in links, (notebook, label)
        page = (rendered / "_output" / "notebooks" / f"{notebook}-preview.html").read_text()
        assert f'id="cell-{label}"' in page
        # the notebook's own page shows its figures too (paper render moves them beside it)
        images = [src for src in re.findall(r'<img[^>]*src="([^"]+)"', page) if not src.startswith(("http", "data:"))]
        assert images and all((rendered / "_output" / "notebooks" / src).is_file() for src in images), images
    assert not list((rendered / "notebooks").glob("*_files"))  # paper/notebooks is as `paper inputs` wrote it


def test_every_cross_reference_resolves(browser):
    xrefs = browser.execute_script("return [...document.querySelectorAll('a.quarto-xref')].map(a => a.getAttribute('href'))")
    missing = browser.execute_script(
        "return [...document.querySelectorAll('a.quarto-xref')].map(a => a.getAttribute('href'))"
        ".filter(h => !h.startsWith('#') || !document.getElementById(decodeURIComponent(h.slice(1))))"
    )
    assert missing == []
    labels = set(re.findall(r"#((?:fig|tbl)-[\w-]+)", QMD.read_text()))
    assert labels and labels <= {h.lstrip("#") for h in xrefs}, sorted(labels - {h.lstrip("#") for h in xrefs})


def test_nothing_is_wider_than_the_viewport_and_tables_fit_the_column(browser):
    width = browser.execute_script("return window.innerWidth")
    assert width == VIEWPORT[0]
    overflow = browser.execute_script("""
        const vw = document.documentElement.clientWidth, out = [];
        for (const el of document.body.querySelectorAll('*')) {
          const r = el.getBoundingClientRect();
          if (r.width > 0 && r.height > 0 && (r.right > vw + 1 || r.left < -1))
            out.push(`${el.tagName}#${el.id}.${el.className}: ${Math.round(r.left)}..${Math.round(r.right)} > ${vw}`);
        }
        if (document.documentElement.scrollWidth > vw) out.push(`page: ${document.documentElement.scrollWidth} > ${vw}`);
        return out;""")
    assert overflow == []
    tables = browser.execute_script("""
        const column = document.querySelector('main').getBoundingClientRect().width;
        return [...document.querySelectorAll('main table')].map(t => [t.closest('[id]') ? t.closest('[id]').id : '',
                                                                     t.getBoundingClientRect().width, column]);""")
    assert len(tables) >= 12
    assert [t for t in tables if t[1] > t[2] + 1] == []


def test_pdf_has_every_glyph_and_section_heading(pdf_text):
    assert "ρ" in pdf_text and "−" in pdf_text
    missing = [h for h in headings(QMD.read_text()) if re.sub(r"\s+", " ", h) not in pdf_text]
    assert missing == []
    for bad in ["{{<", "?var", "n/a", "?@"]:
        assert bad not in pdf_text, bad


def test_the_headings_the_pdf_check_uses():
    found = headings(QMD.read_text())
    assert "Discussion" in found and "Claim 1: fidelity ranks the full cohort but not the silent zone" in found
    assert headings("# Methods {#sec-methods}\n## Decision rules {#sec-rules}\n") == ["Methods", "Decision rules"]


def test_a_quarto_failure_is_one_line_with_quartos_own_message(rendered, tmp_path):
    broken = tmp_path / "paper"
    shutil.copytree(rendered, broken, ignore=shutil.ignore_patterns("_output", ".quarto"))
    qmd = broken / "index.qmd"
    qmd.write_text(qmd.read_text() + "\n{{< include tables/main/no-such-table.md >}}\n")
    (tmp_path / "params.yaml").symlink_to(rendered.parent / "params.yaml")
    proc = subprocess.run([str(BIN / "silentzone"), "paper", "render"], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "quarto render paper failed: Include directive failed" in lines[0] and "no-such-table.md" in lines[0]
    assert "\x1b[" not in lines[0] and "Stack trace" not in lines[0] and " at " not in lines[0]


def test_the_html_prints_every_number_its_variables_hold(rendered):
    """The check the committed paper/published/ paper gets (tests/test_published.py), here with teeth
    on the tiny paper: every `{{< var >}}` of a visible block is printed, and a changed number is caught."""
    import yaml

    from silentzone import paper

    variables = yaml.safe_load((rendered / "_variables.yml").read_text())
    html = (rendered / "_output" / "index.html").read_text()
    visible = paper.visible_variables(QMD.read_text(), variables)
    assert len(visible) > 50
    assert paper.numbers_missing_from_html(QMD.read_text(), variables, html) == []
    key = next(k for k, v in visible if v.startswith("ρ = "))
    node = variables
    for part in key.split(".")[:-1]:
        node = node[part]
    node[key.split(".")[-1]] = "ρ = −0.999"
    assert paper.numbers_missing_from_html(QMD.read_text(), variables, html) == [f"{key} = 'ρ = −0.999'"]
