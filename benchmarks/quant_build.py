"""Time to get a recipe quant's weights: built (empty quant cache) vs read from the quant cache.

    .venv/bin/python benchmarks/quant_build.py [--quants q8_0,q4_0,mxfp4] [--rounds 3] [--threads 2]

Each measurement is `silentzone.quant.load.load_quant` of the default profile's SmolLM2 in a fresh
process, alternating built / cached (A B A B ...): "built" runs with a quant cache folder that is
empty (a new one per round, the fp32 reference cache linked in), "cached" with the folder the
previous built run filled. The seconds are those of load_quant as a whole (reference load included)
and of the quant step alone (`quant_s`: reference sha256, cache read and verify, decode or
quantize, from the line load_quant prints). Prints one JSON line per quant, then a JSON summary.
Run it on an older checkout (no quant cache) to get the "before" numbers of `built`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPES = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "mxfp4": "MXFP4"}
MODEL = "smollm2-135m-instruct"

CHILD = """
import sys, time, json
sys.path.insert(0, {src!r})
from silentzone import config
from silentzone.quant.load import load_quant
raw = config.build_profile("default", {profiles!r})
raw["threads"] = {threads}
raw["cohort"] = {{{quant!r}: {recipe!r}}}
params = config.validate(raw, "benchmark")
t = time.perf_counter()
load_quant(params, {quant!r}, cache_dir={cache!r})
print(json.dumps({{"load_quant_s": time.perf_counter() - t}}))
"""


def run(quant: str, cache: Path, threads: int) -> dict:
    code = CHILD.format(
        src=str(REPO / "src"),
        profiles=str(REPO / "profiles"),
        threads=threads,
        quant=quant,
        recipe=RECIPES[quant],
        cache=str(cache),
    )
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(proc.stderr.strip().splitlines()[-1])
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    found = re.findall(r"quant \S+: (built and cached|read from its cache) in ([0-9.]+) s", proc.stderr)
    out["quant_s"] = float(found[-1][1]) if found else None
    out["what"] = found[-1][0] if found else "built (no quant cache in this checkout)"
    return out


def fresh_cache(root: Path, source: Path) -> Path:
    """A cache folder holding links to the fp32 reference cache's files and no quants."""
    cache = Path(tempfile.mkdtemp(dir=root))
    (cache / MODEL).mkdir()
    for f in source.iterdir():
        if f.is_file():
            (cache / MODEL / f.name).symlink_to(f.resolve())
    return cache


def stats(xs):
    xs = [x for x in xs if x is not None]
    return [round(min(xs), 3), round(statistics.median(xs), 3), round(max(xs), 3)] if xs else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quants", default="q8_0,mxfp4")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", type=Path, default=REPO / "data" / "models", help="folder holding the fp32 reference cache")
    args = ap.parse_args(argv)
    source = args.models / MODEL
    if not (source / "silentzone_cache.json").exists():
        raise SystemExit(f"{source}: no fp32 reference cache; run `silentzone reference` (or any stage) once first")
    root = Path(tempfile.mkdtemp(prefix="quant_build."))
    load_start = os.getloadavg()[0]
    summary = {}
    try:
        for quant in args.quants.split(","):
            rows = {"built": [], "cached": []}
            for _ in range(args.rounds):
                cache = fresh_cache(root, source)
                rows["built"].append(run(quant, cache, args.threads))
                rows["cached"].append(run(quant, cache, args.threads))
                shutil.rmtree(cache)
            entry = {
                kind: {
                    "load_quant_s": stats([r["load_quant_s"] for r in rs]),
                    "quant_s": stats([r["quant_s"] for r in rs]),
                    "what": rs[-1]["what"],
                }
                for kind, rs in rows.items()
            }
            summary[quant] = entry
            print(json.dumps({"quant": quant, **entry}), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        json.dumps(
            {
                "quants": summary,
                "rounds": args.rounds,
                "threads": args.threads,
                "load_avg": [round(load_start, 2), round(os.getloadavg()[0], 2)],
                "time": time.strftime("%H:%M"),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
