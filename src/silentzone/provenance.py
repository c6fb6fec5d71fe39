"""What made each stage output: the params it read, its code, and its own bytes.

Every stage output carries a stamp: the stage, the command that regenerates it, the sha256 of the
params sections the stage reads (STAGES below, the one list; dvc.yaml's `params:` must name the same,
tests/test_dvc_deps.py checks it), the sha256 of the source of every silentzone module its command
imports (derived from the code by `closure`, the same derivation the test holds dvc.yaml's `deps:`
to), and the sha256 of each file it wrote. A stage that reads another stage's output checks that
stamp first, so a stale or damaged input is one line naming the file and the command that remakes
it — also when the stages are run by hand, outside DVC.
"""

from __future__ import annotations

import ast
import hashlib
import json
from functools import cache
from pathlib import Path

from . import io
from .errors import SilentzoneError

SRC = Path(__file__).resolve().parent.parent
# What every command imports before its stage runs (the cli handler's first step: config.load).
ALWAYS = ("silentzone.config", "silentzone.layout", "silentzone.errors")

# stage -> (entry modules of its command, params sections it reads; "{name}" = the stage's item)
# Capture stages run through silentzone.engines (any engine; one stamp per stage whichever engine
# made it): they hash `engine.name` and every engine's settings section (engine.llamacpp), not
# `engine.also`, so adding a further engine leaves the run's own outputs current.
ENGINE_KEYS = ("engine.name", "engine.llamacpp")
STAGES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "prepare": (("silentzone.stages.prepare",), ("seed", "corpora", "bench.tasks")),
    "reference": (("silentzone.engines",), ("seed", "model", "threads", "corpora", "fidelity", *ENGINE_KEYS)),
    "fidelity": (
        ("silentzone.engines",),
        (
            "seed",
            "model",
            "threads",
            "corpora",
            "fidelity",
            "variants",
            "cohort.{name}",
            *ENGINE_KEYS,
            "engine.server.members.{name}",
        ),
    ),
    "bench-reference": (("silentzone.engines",), ("seed", "model", "threads", "bench", *ENGINE_KEYS)),
    "bench": (
        ("silentzone.engines",),
        (
            "seed",
            "model",
            "threads",
            "corpora",
            "fidelity.ctx",
            "bench",
            "cohort.{name}",
            *ENGINE_KEYS,
            "engine.server.members.{name}",
        ),
    ),
    "collect": (("silentzone.stages.collect",), ("cohort", "variants", "fidelity", "bench.composite")),
    "compare-engines": (("silentzone.stages.compare",), ("cohort", "variants", "engine.name")),
}
# Keys hashed only when params set them: a member's server (engine server). A member without one keeps
# the stamp bytes it had before servers existed, and DVC (which fails on a params key a file lacks)
# does not list them: a served member's outputs are kept current by their stamps (collect refuses stale ones).
OPTIONAL = {"engine.server.members.{name}"}
# Every DVC stage's command -> the modules it enters (the cli handler's imports; the cli itself is the
# composition root that imports every stage lazily, so it is no stage's dependency). dvc.yaml's code
# dependencies are exactly `stage_modules(stage)` (scripts/sync_dvc_deps.py writes them; tests/test_dvc_deps.py
# checks them).
ENTRIES: dict[str, tuple[str, ...]] = {
    **{stage: entries for stage, (entries, _) in STAGES.items()},
    "analyze": ("silentzone.stages.analyze", "silentzone.reports"),
    "verdicts": ("silentzone.stages.verdicts",),
    # a further engine's stages (engine.also) run the same commands with --engine
    **{
        f"{stage}-also": entries
        for stage, (entries, _) in STAGES.items()
        if stage in ("reference", "fidelity", "bench-reference", "bench", "collect")
    },
    "verdicts-also": ("silentzone.stages.verdicts",),
    # paper inputs also executes the lesson notebook, which runs noise and stats on a committed run
    "paper-inputs": ("silentzone.paper", "silentzone.lesson", "silentzone.noise", "silentzone.stats"),
    "paper": ("silentzone.stages.render",),
}
COMMANDS = {
    "prepare": "silentzone prepare",
    "reference": "silentzone reference",
    "fidelity": "silentzone fidelity {name}",
    "bench-reference": "silentzone bench reference",
    "bench": "silentzone bench {name}",
    "collect": "silentzone collect",
    "compare-engines": "silentzone compare-engines {name}",
}


# --------------------------------------------------------------------------- module closure


def module_path(name: str) -> Path:
    rel = Path(*name.split("."))
    as_pkg = SRC / rel / "__init__.py"
    return as_pkg if as_pkg.exists() else (SRC / rel).with_suffix(".py")


@cache
def imports_of(name: str) -> frozenset[str]:
    """silentzone modules a module imports, function-level imports included (parsed once per process:
    a stage's command derives two closures, its inputs' and its own, over mostly the same modules)."""
    path = module_path(name)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("silentzone")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            if base.startswith("silentzone"):
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.add(candidate if module_path(candidate).exists() else base)
    return frozenset(m for m in found if module_path(m).exists())


def closure(entries) -> set[str]:
    """Every silentzone module reachable from `entries` (packages' __init__ included)."""
    seen, todo = set(), list(entries)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(2, len(parts)) if module_path(".".join(parts[:i])).exists()]
        todo += sorted(imports_of(name) - seen)
    return seen


def stage_modules(stage: str) -> list[Path]:
    """The source files a DVC stage's command executes: its entries' closure and what every command
    loads first, without empty files (an empty __init__.py changes nothing; DVC warns about each)."""
    names = closure((*ENTRIES[stage], *ALWAYS))
    paths = {module_path(n) for n in names}
    return sorted(p for p in paths if p.stat().st_size > 0)


@cache
def code_sha256(stage: str) -> str:
    entries, _ = STAGES[stage]
    h = hashlib.sha256()
    for name in sorted(closure((*entries, *ALWAYS))):
        h.update(name.encode() + b"\0" + module_path(name).read_bytes() + b"\0")
    return h.hexdigest()


# ------------------------------------------------------------------------------- params


def params_sha256(params, stage: str, name: str | None = None) -> str:
    raw = params.model_dump(by_alias=True)
    picked = {}
    for spec in STAGES[stage][1]:
        key = spec.format(name=name)
        node = raw
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None or spec not in OPTIONAL:
            picked[key] = node
    return hashlib.sha256(json.dumps(picked, sort_keys=True, default=str).encode()).hexdigest()


def command(stage: str, name: str | None = None) -> str:
    return COMMANDS[stage].format(name=name)


# -------------------------------------------------------------------------------- stamps


def stamp(params, stage: str, files: list[Path], name: str | None = None) -> dict:
    """The stamp of outputs just written (their sha256 by file name)."""
    return {
        "stage": stage,
        "command": command(stage, name),
        "params_sha256": params_sha256(params, stage, name),
        "code_sha256": code_sha256(stage),
        "files": {Path(f).name: io.sha256_file(f) for f in files},
    }


def write_stamp(path: Path, params, stage: str, files: list[Path], name: str | None = None) -> None:
    io.write_json(path, stamp(params, stage, files, name))


def read_stamp(path: Path, stage: str, name: str | None = None) -> dict:
    rerun = f"rerun `{command(stage, name)}`"
    if not Path(path).exists():
        raise SilentzoneError(f"{path}: missing (its outputs have no provenance stamp); {rerun}")
    try:
        found = json.loads(Path(path).read_text(encoding="utf-8"))
        dict(found["files"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
        raise SilentzoneError(f"{path}: damaged provenance stamp; {rerun}") from None
    return found


def made_by(params, stage: str, name: str | None = None) -> dict:
    """The params and code digests of a stage, for outputs that carry their own file checksums."""
    return {"stage": stage, "params_sha256": params_sha256(params, stage, name), "code_sha256": code_sha256(stage)}


def verify_made_by(meta: dict, where: Path, params, stage: str, name: str | None = None) -> None:
    verify({**meta.get("provenance", {}), "files": {}}, where, params, stage, Path(where).parent, name)


def verify(found: dict, where: Path, params, stage: str, folder: Path, name: str | None = None) -> None:
    """One line when the outputs a stamp describes are damaged or were made by other params or code."""
    rerun = f"rerun `{command(stage, name)}`"
    for file, digest in found["files"].items():
        path = Path(folder) / file
        if not path.exists():
            raise SilentzoneError(f"{path}: missing; {rerun}")
        if io.sha256_file(path) != digest:
            raise SilentzoneError(f"{path}: its sha256 differs from the one stamped in {where} (damaged or replaced); {rerun}")
    if found.get("params_sha256") != params_sha256(params, stage, name):
        keys = ", ".join(k.format(name=name) for k in STAGES[stage][1])
        raise SilentzoneError(f"{where}: stale, made with other params ({keys}) than {params.source}; {rerun}")
    if found.get("code_sha256") != code_sha256(stage):
        raise SilentzoneError(f"{where}: stale, made by other silentzone code than this checkout's; {rerun}")


# ---------------------------------------------------------------------- ingested cohorts


def write_ingest_stamp(folder: Path, names: list[str]) -> None:
    """The stamp of tables `silentzone ingest cohort` wrote: measured elsewhere, so no params or code
    to compare, only the bytes (a damaged or hand-edited table is still refused)."""
    io.write_json(
        Path(folder) / "stamp.json",
        {
            "stage": "ingest",
            "command": "silentzone ingest cohort MANIFEST --out FOLDER",
            "files": {n: io.sha256_file(Path(folder) / n) for n in names},
        },
    )


def verify_processed(folder: Path, params) -> None:
    """The cohort and item tables the analyses read: made by `collect` from these params and code,
    or by `ingest cohort` (then only their bytes are checked)."""
    where = Path(folder) / "stamp.json"
    found = read_stamp(where, "collect")
    if found.get("stage") == "ingest":
        for name, digest in found["files"].items():
            path = Path(folder) / name
            if not path.exists() or io.sha256_file(path) != digest:
                raise SilentzoneError(
                    f"{path}: missing, or its sha256 differs from {where} (damaged or edited); rerun `{found['command']}`"
                )
        return
    verify(found, where, params, "collect", folder)
