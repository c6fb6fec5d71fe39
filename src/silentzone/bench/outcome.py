"""The signed outcome of an item: the log-probability a model gives the gold answer.

Accuracy is binary: near the reference most items flip in neither direction, so a quant's score moves
by whole items and its spread across near-baseline quants is mostly noise. The log-probability of the
gold answer moves on every item, in either direction, so its paired change against the reference
(quant minus reference, item by item) is a signed, continuous outcome on the very same items:

  greedy (LAMBADA)   the target's log-likelihood given the context (the sum over its tokens);
  mc                 the gold choice's log-probability among the choices, under the normalisation the
                     task's metric decides with: log softmax over the choices' scores, a score being the
                     summed log-probability (raw) or that sum per character of the continuation
                     (per_char), so the outcome rises exactly when the metric's margin for the gold
                     choice does;
  code               none: a program passes or fails its tests, and no log-probability of a gold
                     program exists (HumanEval's canonical solution is one of many); NaN.

Pure numpy on what every engine's bench stage writes (`choice_logprobs`) and the prepared items.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import SilentzoneError


def gold_logprob(kind: str, metric: str, logprobs, item: dict) -> float:
    """The gold answer's log-probability for one item (see the module docstring); NaN for code."""
    if kind == "code":
        return math.nan
    lp = np.asarray(logprobs, dtype=np.float64)
    if kind == "greedy":
        if lp.shape != (1,):
            raise SilentzoneError(f"item {item.get('item_id')!r}: a greedy item has one target log-probability, got {lp.size}")
        return float(lp[0])
    continuations, label = item["continuations"], int(item["label"])
    if lp.shape != (len(continuations),):
        raise SilentzoneError(
            f"item {item.get('item_id')!r}: {lp.size} choice log-probabilities for {len(continuations)} choices"
        )
    if metric == "raw":
        scores = lp
    elif metric == "per_char":
        scores = lp / np.array([len(c) for c in continuations], dtype=np.float64)
    else:
        raise SilentzoneError(f"metric {metric!r}: the gold log-probability is defined for raw and per_char choices only")
    top = scores.max()
    return float(scores[label] - top - math.log(np.exp(scores - top).sum()))
