"""Progress of the analyses' long loops (a bootstrap per quant, a routing pass per pair of quants):
a tqdm bar on a terminal, nothing in a notebook or a log, so an executed notebook's outputs never
carry a bar's timings. SILENTZONE_PROGRESS=1 shows the bars wherever stderr goes (benchmarks/
analysis_scale.py's logs); =0 hides them everywhere."""

from __future__ import annotations

import os


def progress(iterable, desc: str, total: int | None = None, unit: str = "it"):
    """`iterable`, with a progress bar where one can be seen."""
    from tqdm import tqdm

    forced = os.environ.get("SILENTZONE_PROGRESS")
    disable = None if forced is None else forced != "1"  # None: tqdm shows it on a terminal only
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, leave=False, mininterval=1.0)
