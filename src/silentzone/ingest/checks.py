"""Physical sanity of every number `silentzone ingest` takes in, and reading files as text.

A value that cannot be what its column says (a negative KL divergence, a perplexity below 1, a
share above 100 %, NaN where a number must be) is refused with one line naming the file, the line or
field, and the fix, before anything is written: an ingested table never carries a silent wrong number.

Tolerance on KLD ≥ 0: llama.cpp stores the base log-probabilities as uint16 steps of at most
16/65535 ≈ 2.44e-4 nats (the row's range is clamped to 16 nats) and sums KLD over those rounded
values, so a KLD it prints (or that we recompute from two `.kld` files) may read below zero by up to
half a step per file: the reference measured against itself prints minimum KLD −0.000049
(tests/fixtures/llamacpp/logs/kld-Q4_1_self.log). We allow one full step, KLD ≥ −KLD_TOLERANCE
= −16/65535 (silentzone.schema.KLD_TOLERANCE); anything lower is not rounding. silentzone.published
applies the same tolerance to published tables.
"""

from __future__ import annotations

import math

from .. import io
from ..errors import SilentzoneError
from ..schema import KLD_TOLERANCE  # noqa: F401 (re-exported: the readers take it from here)

read_text = io.read_text
MAX_BPW = 64.0  # no ggml type stores more than 64 bits per weight (F64)

# Our cohort columns and what each may hold (silentzone.variants.STANDARD's metrics): KLD variants
# are ≥ 0, perplexities ≥ 1, ratios > 0, shares within [0, 1].
SHARES = ("top1_disagree", "rms_dp", "same_top_p")


def finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def domain(column: str) -> tuple[float, float, str] | None:
    """(low, high, what) for one of our cohort columns (inclusive bounds), or None if unbounded."""
    from . import VARIANT_METRICS

    metric = VARIANT_METRICS.get(column)
    if column == "bpw":
        return (1e-9, MAX_BPW, f"bits per weight lie in (0, {MAX_BPW:g}]")
    if metric in ("kld", "kld_topk", "rkld"):
        return (
            -KLD_TOLERANCE,
            math.inf,
            f"a KL divergence is ≥ 0 (tolerance {KLD_TOLERANCE:.3g}, one uint16 step of llama.cpp's log-probs)",
        )
    if column == "ppl" or metric == "ppl_greedy":
        return (1.0, math.inf, "a perplexity is ≥ 1")
    if metric == "ppl_ratio":
        return (1e-300, math.inf, "a perplexity ratio is > 0")
    if metric == "abs_dln_ppl":
        return (0.0, math.inf, "|ln PPL ratio| is ≥ 0")
    if column in SHARES or metric in SHARES or column.startswith("score_"):
        return (0.0, 1.0, "a share lies in [0, 1]")
    return None


def check_value(column: str, value: float, where: str, fix: str) -> None:
    """Refuse a value outside its column's domain; NaN (a missing value) is the caller's business."""
    if isinstance(value, float) and math.isnan(value):
        return
    if not finite(value):
        raise SilentzoneError(f"{where}: {column} = {value!r} is not finite; {fix}")
    bounds = domain(column)
    if bounds and not bounds[0] <= value <= bounds[1]:
        raise SilentzoneError(f"{where}: {column} = {value!r} is impossible ({bounds[2]}); {fix}")
