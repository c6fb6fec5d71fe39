"""The measurement variants: one number per quant from its per-token fidelity table.

A variant = metric × aggregation × corpus × ctx, named in params `variants:` (14 by default; see
config.Variant for what a metric and an aggregation may be). Each is oriented so that larger =
further from the reference. The fidelity stage, `collect` and ingest all evaluate variants here.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .errors import SilentzoneError

# The study's 14 variants (name -> metric), as profiles/default.yaml defines them (a test checks the
# two agree): what tables made without a params.yaml (silentzone ingest) carry as columns.
STANDARD = {
    "kld_mean": "kld",
    "kld_median": "kld",
    "kld_p90": "kld",
    "kld_p99": "kld",
    "kld_p99_9": "kld",
    "kld_topk_mean": "kld_topk",
    "ppl_ratio": "ppl_ratio",
    "abs_dln_ppl": "abs_dln_ppl",
    "ppl_greedy": "ppl_greedy",
    "top1_disagree": "top1_disagree",
    "rms_dp": "rms_dp",
    "kld_mean_fiction": "kld",
    "kld_mean_code": "kld",
    "kld_mean_ctx128": "kld",
}
# percentiles interpolate linearly between order statistics, as llama.cpp's perplexity tool does
AGGREGATIONS = {"mean": np.mean, "median": np.median, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}
# the value of each metric when a model is compared with itself; ppl_greedy has none
IDENTITY = {
    "kld": 0.0,
    "rkld": 0.0,
    "kld_topk": 0.0,
    "ppl_ratio": 1.0,
    "abs_dln_ppl": 0.0,
    "top1_disagree": 0.0,
    "rms_dp": 0.0,
    "ppl_greedy": math.nan,
}

# Metrics a member measured through an inference server cannot have (it returns its top-k
# log-probabilities only, silentzone.server), with the reason its fidelity report records.
TOPK_UNAVAILABLE = {
    "kld": "needs the quant's full distribution; a server returns its top-k log-probabilities only",
    "rkld": "needs the quant's full distribution; a server returns its top-k log-probabilities only",
    "ppl_greedy": "needs p_q of the reference's argmax, which a server returns only where it lies in the quant's top-k",
}


def aggregate(values: np.ndarray, agg: str) -> float:
    how = AGGREGATIONS[agg]
    return float(how(values)) if callable(how) else float(np.percentile(values, how, method="linear"))


def metric_value(rows: pd.DataFrame, metric: str, agg: str | None) -> float:
    if metric in ("kld", "kld_topk", "rkld"):
        return aggregate(rows[metric].to_numpy(np.float64), agg or "mean")
    dln = rows["nll_q"].mean() - rows["nll_R"].mean()  # ln PPL(q) − ln PPL(R)
    value = {
        "ppl_ratio": lambda: math.exp(dln),
        "abs_dln_ppl": lambda: abs(dln),
        "ppl_greedy": lambda: math.exp(rows["nll_q_greedy"].mean()),
        "top1_disagree": lambda: 1.0 - rows["top1"].mean(),
        "rms_dp": lambda: math.sqrt((rows["dp"].to_numpy(np.float64) ** 2).mean()),
    }[metric]
    return float(value())


def unavailable(params, topk_only: bool) -> dict[str, str]:
    """The variants of params `variants:` a member cannot have, with the reason (none in-process)."""
    if not topk_only:
        return {}
    return {name: TOPK_UNAVAILABLE[spec.metric] for name, spec in params.variants.items() if spec.metric in TOPK_UNAVAILABLE}


def compute(per_token: pd.DataFrame, params, skip=()) -> dict[str, float]:
    """Every variant of params `variants:` on one quant's per-token table (but those in `skip`)."""
    f = params.fidelity
    out = {}
    for name, spec in params.variants.items():
        if name in skip:
            continue
        corpus = spec.corpus or f.primary_corpus
        ctx = f.ctx_alt if spec.ctx == "alt" else (spec.ctx or f.ctx)
        rows = per_token[(per_token["corpus"] == corpus) & (per_token["ctx"] == ctx)]
        if rows.empty:
            raise SilentzoneError(
                f"fidelity table: no tokens for variant {name!r} (corpus {corpus!r}, ctx {ctx}); "
                "rerun `silentzone reference` and `silentzone fidelity` with that corpus/ctx"
            )
        out[name] = metric_value(rows, spec.metric, spec.agg)
    return out


def reference_values(params) -> dict[str, float]:
    """The variants of the reference compared with itself."""
    return {name: IDENTITY[spec.metric] for name, spec in params.variants.items()}
