"""`silentzone paper render`: Quarto renders paper/ (HTML, and PDF through Typst) into paper/_output;
its errors become one line each (Quarto's own message, without stack lines)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

from ..errors import SilentzoneError

PAPER_DIR = Path("paper")

QUARTO_MIN = (1, 4)  # manuscript projects and Typst PDF
QUARTO_HELP = (
    "install Quarto >= 1.4 with `make paper-tools` (conda-forge `quarto` into an active conda env, else "
    "the Linux tarball from quarto.org) or an installer from https://quarto.org/docs/get-started/, "
    "then rerun `dvc repro paper`"
)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_STOP = ("stack traceback:", "Stack trace:")
_NEW_RECORD = ("WARN", "ERROR", "Error", "Rendering", "Output created", "[")


def _error_start(line: str) -> str | None:
    """The message of a line that opens an error: Quarto's "ERROR: ...", pandoc/Lua's "Error ...",
    Typst's "error: ..." (Quarto prints it after "[typst]: Compiling ...")."""
    text = line.strip()
    if text.startswith(("ERROR", "Error")):
        return re.sub(r"^(?:ERROR|Error)(?:\[[^\]]*\])?:\s*", "", text)
    match = re.search(r"\berror(?:\[[^\]]*\])?:\s*(.*)", text)
    return match.group(1) if match else None


def _is_stack(text: str) -> bool:
    return (
        text.startswith(("at ", "[C]:", "(...tail calls...)"))
        or "│" in text
        or bool(re.search(r"\.(?:lua|ts|js):\d+:? in ", text))
    )


def quarto_error(output: str) -> str:
    """Quarto's own error message from its output, as one line: each error line with the lines that
    continue it, without stack lines and without the path of Quarto's own filters."""
    lines = [_ANSI.sub("", line).rstrip() for line in output.splitlines()]
    messages, i = [], 0
    while i < len(lines):
        first = _error_start(lines[i])
        if first is None:
            i += 1
            continue
        parts, j = [first], i + 1
        while j < len(lines):
            text = lines[j].strip()
            if not text or text in _STOP or text.startswith(_NEW_RECORD):
                break
            if not _is_stack(text):
                location = re.match(r"┌─\s*(\S+)", text)
                parts.append(f"(at {location.group(1)})" if location else text)
            j += 1
        messages.append(" ".join(p for p in parts if p))
        i = j
    if not messages:
        rest = [s for s in (line.strip() for line in lines) if s and not _is_stack(s) and s not in _STOP]
        messages = rest[-1:] or ["(no output)"]
    text = "; ".join(dict.fromkeys(messages))
    text = re.sub(r"\S*/resources/filters/\S*?([\w.-]+\.lua)", r"\1", text)
    return text if len(text) <= 600 else text[:597] + "..."


def quarto_version(quarto: str) -> tuple[int, ...]:
    proc = subprocess.run([quarto, "--version"], capture_output=True, text=True)
    match = re.match(r"(\d+)\.(\d+)", proc.stdout.strip())
    return tuple(int(x) for x in match.groups()) if match else (0, 0)


def move_notebook_figures(paper_dir: Path, out: Path | None) -> None:
    """Quarto extracts each embedded notebook's figures to paper/notebooks/NAME_files/, beside the
    notebook, while its rendered page (_output/notebooks/NAME-preview.html) links them relative to
    itself: move them there, so the notebook pages show their figures and paper/notebooks/ holds
    exactly what `paper inputs` wrote (its DVC hash stays valid after a render)."""
    for extracted in sorted((paper_dir / "notebooks").glob("*_files")):
        if out is None:
            shutil.rmtree(extracted)
            continue
        target = out / "notebooks" / extracted.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(extracted), str(target))


def run(paper_dir: Path = PAPER_DIR) -> None:
    paper_dir = Path(paper_dir)
    quarto = shutil.which("quarto")
    if quarto is None:
        raise SilentzoneError(
            f"quarto: not installed, so {paper_dir}/ was not rendered (all other stages completed); {QUARTO_HELP}"
        )
    version = quarto_version(quarto)
    if version < QUARTO_MIN:
        raise SilentzoneError(
            f"quarto {'.'.join(map(str, version))} is too old for {paper_dir}/ (manuscript projects and "
            f"Typst PDF need >= {'.'.join(map(str, QUARTO_MIN))}); {QUARTO_HELP}"
        )
    start = time.perf_counter()
    out = paper_dir / "_output"
    try:
        proc = subprocess.run([quarto, "render", str(paper_dir)], capture_output=True, text=True)
    finally:
        move_notebook_figures(paper_dir, out if out.is_dir() else None)
    if proc.returncode != 0:
        raise SilentzoneError(f"quarto render {paper_dir} failed: {quarto_error(proc.stderr + proc.stdout)}")
    made = [p.name for p in (out / "index.html", out / "index.pdf") if p.exists()]
    if len(made) < 2:
        raise SilentzoneError(
            f"quarto render {paper_dir}: no {'index.html' if 'index.html' not in made else 'index.pdf'} "
            f"in {out}; check the formats in {paper_dir}/_quarto.yml (html and typst)"
        )
    print(f"{out}: {', '.join(made)} ({time.perf_counter() - start:.1f} s)")
