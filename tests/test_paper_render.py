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
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))  # each a page of the site, the lesson included
LESSON = "lesson-metric-validity"

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
    # the sidebar lists every analysis notebook and the lesson, never the table snippets nor the article as a notebook
    pages = browser.execute_script("return [...document.querySelectorAll('a[href$=\".html\"]')].map(a => a.getAttribute('href'))")
    assert pages and all(re.fullmatch(r"notebooks/(\d\d-[\w-]+|lesson-metric-validity)-preview\.html", p) for p in pages), pages
    assert set(pages) == {f"notebooks/{nb.stem}-preview.html" for nb in NOTEBOOKS}


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


def test_the_table_of_contents_lists_every_section_the_appendix_and_the_lesson(browser):
    toc = browser.execute_script(
        "return [...document.querySelectorAll('nav#TOC a')].map(a => [a.textContent.trim(), a.getAttribute('href')])"
    )
    entries = {href: text for text, href in toc}
    assert entries.get("#sec-appendix", "").endswith("Appendix: full tables"), toc
    assert "#sec-limitations" in entries and "#sec-discussion" in entries
    notebooks = browser.execute_script(
        "return [...document.querySelectorAll('a[href$=\"-preview.html\"]')].map(a => [a.textContent.trim(), a.getAttribute('href')])"
    )
    lesson = [text for text, href in notebooks if href == f"notebooks/{LESSON}-preview.html"]
    assert lesson and lesson[0].endswith("Lesson: when can a correlation with a benchmark be trusted?"), notebooks


def test_every_section_opens_on_a_rule(browser):
    rules = browser.execute_script(
        "return [...document.querySelectorAll('main h1:not(.title), main h2')].map(h => [h.textContent.trim(), getComputedStyle(h).borderBottomStyle])"
    )
    assert len(rules) >= 15 and [h for h, style in rules if style != "solid"] == []


def _pages(rendered):
    return [rendered / "_output" / "notebooks" / f"{nb.stem}-preview.html" for nb in NOTEBOOKS]


def test_every_notebook_page_loads_its_figures_fits_the_page_and_decorates_each_cell_once(browser, rendered):
    try:
        for page in _pages(rendered):
            assert page.is_file(), page
            browser.get(page.as_uri())
            images = browser.execute_script(
                "return [...document.images].map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
            )
            assert [i for i in images if not (i[1] and i[2] > 0)] == [], (page.name, images)
            # a table fits the page, or scrolls inside a box that does (a notebook's wide data frame)
            wide = browser.execute_script("""
                const w = document.documentElement.clientWidth;
                const box = t => { for (let e = t; e; e = e.parentElement)
                                     if (['auto', 'scroll'].includes(getComputedStyle(e).overflowX)) return e;
                                   return t; };
                const out = [...document.querySelectorAll('main table')].filter(t => box(t).getBoundingClientRect().right > w + 1);
                return [out.length, document.documentElement.scrollWidth - w];""")
            assert wide[0] == 0 and wide[1] <= 0, (page.name, wide)
            shown = browser.execute_script(
                "return [...document.querySelectorAll('.cell-decorator')].filter(d => d.offsetParent !== null).map(d => d.textContent.trim())"
            )
            assert len(shown) == len(set(shown)), (page.name, shown)  # "In [4]: In [4]:" was one cell decorated twice
        browser.get((rendered / "_output" / "notebooks" / f"{LESSON}-preview.html").as_uri())
        folded = browser.execute_script(
            "return [...document.querySelectorAll('details')].map(d => [d.querySelector('summary').textContent.trim(), d.open])"
        )
        answers = [f for f in folded if f[0].startswith("Answer")]
        assert len(answers) >= 4 and not any(is_open for _, is_open in answers), folded
        images = browser.execute_script("return [...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
        assert images >= 1  # the lesson's simulation figure, executed by `paper inputs`
    finally:
        browser.get((rendered / "_output" / "index.html").as_uri())


def test_the_rendered_site_names_no_path_of_the_machine_that_made_it(rendered):
    out = rendered / "_output"
    assert not (out / "index-preview.html").exists()  # the article is not rendered as a notebook
    root = str(rendered.parent)
    leaks = [
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and p.suffix in {".html", ".ipynb", ".json", ".md"} and root in p.read_text(errors="replace")
    ]
    assert leaks == []


# --- the PDF, page by page ----------------------------------------------------------------------

WORD = re.compile(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">([^<]*)</word>')
PAGE = re.compile(r'<page width="([\d.]+)" height="([\d.]+)">(.*?)</page>', re.S)
LONG_P = re.compile(r"(?<![\d.])0\.0000\d|\bp(?: \(binomial\))?\s*[=<]\s*0\.\d{5,}")


def pdf_pages(pdf: Path) -> list[dict]:
    """Every page's words with their boxes (pdftotext -bbox), and the page's size in points."""
    proc = subprocess.run(
        [_tool("pdftotext"), "-bbox", "-enc", "UTF-8", str(pdf), "-"], capture_output=True, text=True, check=True
    )
    pages = []
    for width, height, body in PAGE.findall(proc.stdout):
        words = [(float(a), float(b), float(c), float(d), w) for a, b, c, d, w in WORD.findall(body)]
        pages.append({"width": float(width), "height": float(height), "words": words})
    return pages


def overprinted(page: dict, share: float = 0.3) -> list[tuple[str, str]]:
    """Pairs of words whose boxes overlap by more than `share` of the smaller one (rows printed over rows,
    as the published 435-row table was at a page's foot), and words outside the page."""
    words = sorted(page["words"], key=lambda w: w[1])
    found = [(w[4], "off the page") for w in words if w[3] > page["height"] + 1 or w[2] > page["width"] + 1]
    for i, (x0, y0, x1, y1, text) in enumerate(words):
        for u0, v0, u1, v1, other in words[i + 1 :]:
            if v0 >= y1:
                break
            dx, dy = min(x1, u1) - max(x0, u0), min(y1, v1) - max(y0, v0)
            if dx > 0 and dy > 0 and dx * dy > share * min((x1 - x0) * (y1 - y0), (u1 - u0) * (v1 - v0)):
                found.append((text, other))
    return found


@pytest.fixture(scope="module")
def pdf_page_words(rendered):
    return pdf_pages(rendered / "_output" / "index.pdf")


def test_no_pdf_page_prints_rows_over_rows(pdf_page_words):
    assert len(pdf_page_words) >= 5
    bad = {n + 1: found[:3] for n, page in enumerate(pdf_page_words) if (found := overprinted(page))}
    assert bad == {}


def test_the_overprint_check_sees_rows_printed_over_rows():
    row = [(72.0, 700.0, 120.0, 710.0, "q4_0"), (130.0, 700.0, 160.0, 710.0, "0.33")]
    page = {"width": 595.0, "height": 842.0, "words": row}
    assert overprinted(page) == []
    shifted = [(x0 + 1, y0 + 2, x1 + 1, y1 + 2, "x") for x0, y0, x1, y1, _ in row]  # the next row, 2 pt lower
    assert len(overprinted({**page, "words": row + shifted})) == 2
    assert overprinted({**page, "words": [(72.0, 850.0, 90.0, 860.0, "lost")]}) == [("lost", "off the page")]


def test_no_pdf_page_shows_a_raw_shortcode_a_missing_value_or_a_long_p(pdf_page_words):
    for n, page in enumerate(pdf_page_words, start=1):
        text = " ".join(w[4] for w in page["words"])
        assert "{{<" not in text and "?var" not in text, n
        assert re.findall(r"\b(?:nan|NaN|None)\b", text) == [], (n, text[:300])
        assert LONG_P.findall(text) == [], (n, LONG_P.findall(text))


def test_the_long_p_check_sees_one():
    assert LONG_P.findall("p (binomial) 0.0000000000000000000008") and LONG_P.findall("p = 0.00004")
    assert not LONG_P.findall("p < 0.0001, p = 0.0002, 1.13×10⁻⁵, mean KLD 0.00123")
