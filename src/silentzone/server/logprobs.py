"""What an OpenAI-compatible server returns for a prompt's tokens, read into arrays and checked.

A prompt of n token ids gives n − 1 *rows*: row i is the model's distribution at position i, which
predicts token i + 1 (the per-token tables' `pos`). Per row: the log-probability and rank of the
token that follows, and the server's top-k (ids and log-probabilities, in rank order).

Two response formats:
  - vLLM's `prompt_logprobs` extension of /v1/completions: a list of n entries, the first None, entry
    j a mapping {token id: {logprob, rank, decoded_token}} holding the top-k and prompt token j (which
    may lie outside the top-k). Entry j is row j − 1.
  - the OpenAI legacy `echo` + `logprobs` format (llama-cpp-python's server): `logprobs.tokens` (text
    pieces), `token_logprobs`, `top_logprobs` keyed by token *text*. Only used to detect and explain
    that server's quirk: it returns each prompt token's log-probability one position early (the
    prediction of the next token), see `echo_alignment`.

Anything malformed — a missing entry, a prompt token absent from its own entry (ids that did not
round-trip), fewer than k entries, a non-finite or positive log-probability, top-k not in rank
order — is one ServerError naming the server, the prompt and the row, before anything is written.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import SilentzoneError

# A log-probability may read a hair above 0 (float rounding of a near-certain token), never more.
LOGPROB_SLACK = 1e-4
# vLLM's cap on log-probabilities per position: "Requested prompt logprobs of 30, which is greater than max allowed: 20"
CAP_MESSAGE = re.compile(r"prompt logprobs of (\d+), which is greater than max allowed: (\d+)")


class ServerError(SilentzoneError):
    """A server that errs, times out, or returns data we cannot trust: one line naming it and the fix."""


@dataclass
class PromptLogprobs:
    tokens: np.ndarray  # int64 [n]: the prompt
    logprob: np.ndarray  # float64 [n − 1]: log p(tokens[i + 1] | tokens[: i + 1])
    rank: np.ndarray  # int64 [n − 1]: that token's rank (1 = the argmax)
    top_ids: np.ndarray  # int64 [n − 1, k]: the k most likely next tokens, in rank order
    top_logprobs: np.ndarray  # float64 [n − 1, k]

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[1])

    def __len__(self) -> int:
        return len(self.logprob)


def parse_prompt_logprobs(body: dict, prompt: list[int], k: int, where: str) -> PromptLogprobs:
    """One /v1/completions response (a single prompt) in vLLM's `prompt_logprobs` format."""
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        raise ServerError(f"{where}: response has no single `choices` entry (not an OpenAI completions response)")
    entries = choices[0].get("prompt_logprobs")
    if entries is None:
        hint = (
            " (it returned echo logprobs instead: llama-cpp-python's server, whose echo logprobs are shifted by one "
            "position — use vLLM, see docs/server.md)"
            if isinstance(choices[0].get("logprobs"), dict) and choices[0]["logprobs"].get("token_logprobs")
            else ""
        )
        raise ServerError(
            f"{where}: no `prompt_logprobs` in the response: the server lacks vLLM's prompt_logprobs extension{hint}"
        )
    returned = choices[0].get("prompt_token_ids")
    if returned is not None and list(returned) != list(prompt):
        raise ServerError(
            f"{where}: the server's prompt token ids differ from the ones sent (it re-tokenized the prompt); {_ROUND_TRIP}"
        )
    if not isinstance(entries, list) or len(entries) != len(prompt):
        got = len(entries) if isinstance(entries, list) else type(entries).__name__
        raise ServerError(f"{where}: `prompt_logprobs` has {got} entries for a {len(prompt)}-token prompt (malformed response)")
    n = len(prompt) - 1
    logprob, rank = np.empty(n, np.float64), np.empty(n, np.int64)
    top_ids, top_lp = np.empty((n, k), np.int64), np.empty((n, k), np.float64)
    for i in range(n):
        logprob[i], rank[i], top_ids[i], top_lp[i] = _row(entries[i + 1], prompt[i + 1], k, f"{where}, row {i}")
    return PromptLogprobs(np.asarray(prompt, np.int64), logprob, rank, top_ids, top_lp)


_ROUND_TRIP = "token ids must round-trip: send token-id prompts to a server that keeps them (vLLM does)"


def _row(entry, token: int, k: int, where: str):
    if not isinstance(entry, dict):
        raise ServerError(f"{where}: entry is {type(entry).__name__}, not a mapping of token ids (malformed response)")
    parsed = []
    for key, value in entry.items():
        try:
            tid, lp = int(key), float(value["logprob"])
            rk = int(value["rank"]) if value.get("rank") is not None else None
        except (TypeError, ValueError, KeyError):
            raise ServerError(f"{where}: entry {key!r}: {value!r} is not {{logprob, rank}} (malformed response)") from None
        if not math.isfinite(lp) or lp > LOGPROB_SLACK:
            raise ServerError(f"{where}: token {tid} has log-probability {lp!r}, impossible (malformed response)")
        parsed.append((rk if rk is not None else 1 << 62, -lp, tid, lp))
    own = [p for p in parsed if p[2] == token]
    if not own:
        raise ServerError(f"{where}: the prompt's token {token} is not in its own entry; {_ROUND_TRIP}")
    top = sorted(p for p in parsed if p[0] <= k)[:k]
    if len(top) < k:
        raise ServerError(
            f"{where}: {len(top)} log-probabilities in the top {k} where {k} were asked: the server caps them below "
            f"fidelity.topk; restart it with --max-logprobs {k} or lower fidelity.topk"
        )
    lps = np.array([p[3] for p in top])
    if np.any(np.diff(lps) > LOGPROB_SLACK):
        raise ServerError(f"{where}: top-{k} log-probabilities are not in rank order (malformed response)")
    rk = own[0][0]
    if rk == 1 << 62:
        raise ServerError(f"{where}: no `rank` for the prompt's token (not vLLM's prompt_logprobs format)")
    return own[0][3], rk, [p[2] for p in top], lps


def cap_from_error(status: int, text: str) -> int | None:
    """The server's cap on log-probabilities per position, read from its HTTP 400, if that is what it says."""
    found = CAP_MESSAGE.search(text or "") if status == 400 else None
    return int(found.group(2)) if found else None


# ------------------------------------------------------------------- the OpenAI echo format


def echo_alignment(body: dict) -> str:
    """How a server's `echo` + `logprobs` answer lines up with the prompt: 'aligned' when entry j is
    the distribution that predicts token j (OpenAI's definition: token_logprobs[j] = log p(token j |
    tokens before it)); 'shifted' when entry j is the distribution that predicts token j + 1
    (llama-cpp-python's server, which then reports token j's log-probability under it). Both forms
    are internally consistent (each entry's own token sits in its top list with its value), so the
    vote is on what each entry's most likely token is: the token at j, or the token at j + 1. On a
    predictable probe (ECHO_PROBE: counting) the true next token is the argmax almost everywhere."""
    lp = body["choices"][0]["logprobs"]
    tokens, tops = lp["tokens"], lp["top_logprobs"]
    votes = {"aligned": 0, "shifted": 0}
    for j, top in enumerate(tops):
        if not isinstance(top, dict) or not top:
            continue
        best = max(top, key=top.get)
        votes["aligned"] += best == tokens[j]
        votes["shifted"] += j + 1 < len(tokens) and best == tokens[j + 1]
    if max(votes.values()) < 3 or votes["aligned"] == votes["shifted"]:
        return "unknown"
    return max(votes, key=votes.get)
