"""Commit-ready copy of a finished pipeline run: what a reader inspects without rerunning it.

    python scripts/publish_run.py RUN_DIR [--paper]

RUN_DIR is a checkout where `dvc repro` ran to the end (params.yaml names the profile). Writes
data/published/<profile>/ in this checkout:

  cohort.parquet, items.parquet   the processed tables (items: model, task, item_id, correct, per-prompt KLD, ...)
  numbers/*.json                  results/numbers: every number the paper prints
  tables/<notebook>/*.csv         results/tables
  figures/<notebook>/*.csv        the data behind every figure (results/figures, CSVs only)
  _variables.yml                  the paper's variables as `silentzone paper inputs` wrote them
  params.yaml, dvc.lock           what ran, and the hash of every stage's inputs and outputs
  SHA256SUMS                      sha256 of every output of the run (scripts/hash_outputs.py): a rerun
                                  matches when `python scripts/hash_outputs.py | diff - data/published/<profile>/SHA256SUMS` is empty

With --paper, also paper/published/ = the run's rendered paper (paper/_output: index.html with its
assets and notebook pages, index.pdf), without Quarto's by-products (PAPER_SKIP), and
paper/published/families/<other profile>.yml = the committed variables its side-by-side table showed
(a profile republished later differs from them until the paper is rerendered); a render whose files
name the run's absolute folder is refused. Nothing is written unless the run is complete.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from fnmatch import fnmatch
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import hash_outputs  # noqa: E402

ITEM_COLUMNS = ["model", "task", "item_id", "correct", "prompt_kld"]
# Quarto's intermediates and by-products beside the paper, not part of what a reader opens: the article's
# source and its notebook renderings (index-preview.html embeds the render folder's absolute paths), and
# each notebook's .out.ipynb (the pages link the .ipynb itself for download)
PAPER_SKIP = ("index.qmd", "index.embed.ipynb", "index.out.ipynb", "index-preview.html", "*.out.ipynb")
TEXT_SUFFIXES = {".html", ".ipynb", ".json", ".md", ".csv", ".yml", ".txt", ".js", ".css"}


def check_complete(run: Path, paper: bool) -> str:
    params = yaml.safe_load((run / "params.yaml").read_text())
    profile = params.get("profile")
    needed = [
        run / "data/processed/cohort.parquet",
        run / "data/processed/items.parquet",
        run / "results/numbers",
        run / "paper/_variables.yml",
        run / "dvc.lock",
    ]
    if paper:
        needed += [run / "paper/_output/index.html", run / "paper/_output/index.pdf"]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise SystemExit(f"{run}: the run is not complete ({', '.join(missing)} missing); finish `dvc repro` first")
    items = pd.read_parquet(run / "data/processed/items.parquet")
    lacking = [c for c in ITEM_COLUMNS if c not in items.columns]
    if lacking:
        raise SystemExit(f"{run}/data/processed/items.parquet: no column {', '.join(lacking)}")
    cohort = pd.read_parquet(run / "data/processed/cohort.parquet")
    n_quants = len(params.get("cohort") or {})
    if len(cohort) != n_quants + 1:
        raise SystemExit(f"{run}: cohort.parquet has {len(cohort)} rows, params.yaml {n_quants} quants + the reference")
    return str(profile)


def copy_tree(source: Path, dest: Path, pattern: str = "*", skip: tuple[str, ...] = ()) -> int:
    n = 0
    for path in sorted(source.rglob(pattern)):
        if path.is_file() and not any(fnmatch(path.name, p) for p in skip) and ".ipynb_checkpoints" not in path.parts:
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            n += 1
    return n


def publish(run: Path, paper: bool, into: Path = REPO) -> None:
    profile = check_complete(run, paper)
    dest = into / "data" / "published" / profile
    staging = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("cohort.parquet", "items.parquet"):
        shutil.copy2(run / "data/processed" / name, staging / name)
    copy_tree(run / "results/numbers", staging / "numbers")
    copy_tree(run / "results/tables", staging / "tables")
    copy_tree(run / "results/figures", staging / "figures", "*.csv")
    for name in ("params.yaml", "dvc.lock"):
        shutil.copy2(run / name, staging / name)
    shutil.copy2(run / "paper/_variables.yml", staging / "_variables.yml")
    sums = [f"{hash_outputs.sha256(p)}  {p.relative_to(run).as_posix()}" for p in hash_outputs.output_files(run)]
    (staging / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    print(f"{dest}: {sum(1 for p in dest.rglob('*') if p.is_file())} files, {len(sums)} output hashes")
    if paper:
        target = into / "paper" / "published"
        staged = target.with_name(target.name + ".tmp")
        shutil.rmtree(staged, ignore_errors=True)
        n = copy_tree(run / "paper/_output", staged, skip=PAPER_SKIP)
        record_families(run, profile, staged)
        leaks = machine_paths(staged, run)
        if leaks:
            shutil.rmtree(staged)
            raise SystemExit(
                f"{leaks[0]}: names the render's folder {run} (and {len(leaks) - 1} more files); a published paper must "
                "name no path of the machine that made it: rerender with this checkout's `silentzone paper inputs` and "
                "`silentzone paper render`"
            )
        shutil.rmtree(target, ignore_errors=True)
        staged.rename(target)
        print(f"{target}: {n} files (index.html, index.pdf, notebooks, assets)")


def record_families(run: Path, profile: str, paper_dir: Path) -> None:
    """The other profiles' committed variables the render set beside its own (`Committed run: NAME`),
    as families/NAME.yml: a profile republished later no longer matches the paper until it is rerendered,
    and this says which numbers the paper's columns are."""
    for path in sorted((run / "data" / "published").glob("*/_variables.yml")):
        if path.parent.name != profile:
            (paper_dir / "families").mkdir(exist_ok=True)
            shutil.copy2(path, paper_dir / "families" / f"{path.parent.name}.yml")


def machine_paths(folder: Path, run: Path) -> list[str]:
    """The text files under `folder` that name the run's absolute folder."""
    needles = {str(run), str(run.resolve())}
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in TEXT_SUFFIXES:
            text = path.read_text(encoding="utf-8", errors="replace")
            if any(needle in text for needle in needles):
                found.append(str(path.relative_to(folder)))
    return found


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="a checkout where `dvc repro` ran to the end")
    ap.add_argument("--paper", action="store_true", help="also copy its rendered paper to paper/published/")
    ap.add_argument("--into", type=Path, default=REPO, help="the checkout to write into (default: this one)")
    args = ap.parse_args(argv)
    publish(args.run.resolve(), args.paper, args.into.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
