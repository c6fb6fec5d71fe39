"""Write each dvc.yaml stage's code dependencies from the code itself: the silentzone modules its command
executes (silentzone.provenance.stage_modules — imports followed transitively, function-level ones
included), one file each, so editing a module reruns exactly the stages that run it.

    python scripts/sync_dvc_deps.py          # rewrite dvc.yaml's `src/silentzone/...` deps in place
    python scripts/sync_dvc_deps.py --check  # exit 1 and name the stages whose deps differ

Only the `- src/silentzone/...` lines of each stage's `deps:` are replaced; commands, data dependencies,
params, outs, metrics and plots stay as written. tests/test_dvc_deps.py runs the check.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from silentzone import provenance  # noqa: E402

STAGE = re.compile(r"^  ([\w-]+):\s*$")
CODE_DEP = re.compile(r"^(\s+)- src/silentzone(?:/\S+)?\s*$")
DEPS = re.compile(r"^(\s+)deps:\s*$")


def derived(stage: str) -> list[str]:
    return [p.relative_to(REPO / "src").parent.joinpath(p.name).as_posix() for p in provenance.stage_modules(stage)]


def synced(text: str) -> tuple[str, list[str]]:
    """dvc.yaml's text with every stage's code deps derived, and the stages whose deps changed."""
    lines, out, changed = text.splitlines(keepends=True), [], []
    stage, i = None, 0
    while i < len(lines):
        line = lines[i]
        if match := STAGE.match(line):
            stage = match.group(1)
        if (deps := DEPS.match(line)) and stage in provenance.ENTRIES:
            out.append(line)
            i += 1
            indent, old = deps.group(1) + "  ", []
            while i < len(lines) and lines[i].startswith(indent + "- "):
                if CODE_DEP.match(lines[i]):
                    old.append(lines[i].strip()[2:])
                else:
                    out.append(lines[i])
                i += 1
            new = ["src/" + path for path in derived(stage)]
            out.extend(f"{indent}- {path}\n" for path in new)
            if old != new:
                changed.append(stage)
            continue
        out.append(line)
        i += 1
    return "".join(out), changed


def main(argv: list[str]) -> int:
    path = REPO / "dvc.yaml"
    text, changed = synced(path.read_text(encoding="utf-8"))
    if "--check" in argv:
        if changed:
            print(f"dvc.yaml: the code deps of {', '.join(changed)} differ from the code; run `python scripts/sync_dvc_deps.py`")
            return 1
        return 0
    path.write_text(text, encoding="utf-8")
    print(f"dvc.yaml: code deps of {', '.join(changed) or 'no stage'} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
