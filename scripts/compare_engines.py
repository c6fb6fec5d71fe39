"""Top-k KLD of members measured in-process and through a server, side by side (docs/server.md).

    python scripts/compare_engines.py IN_PROCESS_FIDELITY_DIR SERVED_FIDELITY_DIR [MEMBER ...]
    (e.g. data/fidelity data/engines/server/fidelity)

Per member: the largest and mean per-token |Δ kld_topk| (and nll_q, dp), top-1 agreement, and
kld_topk_mean both ways. Exits 1 when a per-token difference exceeds TOLERANCE (docs/server.md says why 1e-4).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

TOLERANCE = 1e-4
KEYS = ["corpus", "ctx", "window", "pos", "token"]


def main(argv: list[str]) -> int:
    a_root, b_root, members = Path(argv[0]), Path(argv[1]), argv[2:]
    worst = 0.0
    for m in members:
        a_path, b_path = a_root / f"{m}.parquet", b_root / f"{m}.parquet"
        if not a_path.exists() or not b_path.exists():
            print(f"{m}: no table in {a_path if not a_path.exists() else b_path}; skipped")
            continue
        a, b = pd.read_parquet(a_path), pd.read_parquet(b_path)
        for path, table in ((a_path, a), (b_path, b)):
            if not set(KEYS) <= set(table.columns):
                print(f"{m}: {path} is not a fidelity table (no {', '.join(KEYS)} columns)")
                return 1
        if not a[KEYS].equals(b[KEYS]):
            print(f"{m}: the two tables score different tokens")
            return 1
        d = {c: (a[c] - b[c]).abs() for c in ("kld_topk", "nll_q", "dp")}
        va = json.loads((a_root / f"{m}.report.json").read_text())["variants"]["kld_topk_mean"]
        vb = json.loads((b_root / f"{m}.report.json").read_text())["variants"]["kld_topk_mean"]
        worst = max(worst, *(x.max() for x in d.values()))
        print(
            f"{m}: kld_topk_mean {va:.6f} in-process, {vb:.6f} served (Δ {vb - va:+.2e}); per token max |Δ| "
            + ", ".join(f"{c} {x.max():.1e}" for c, x in d.items())
            + f"; top-1 agreement {(a['top1'] == b['top1']).mean():.4f}"
        )
    print(f"largest per-token difference {worst:.1e} ({'within' if worst <= TOLERANCE else 'OVER'} the tolerance {TOLERANCE:g})")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
