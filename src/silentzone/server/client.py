"""An OpenAI-compatible server as an engine: requests, concurrency, retries, and the quirk probe.

One `Endpoint` is a base URL (…/v1) plus the model name it serves. Requests go out `concurrency` at
a time (httpx, one connection pool shared by the threads) and come back in request order, so the
tables built from them do not depend on which request finished first. A transport error, a timeout,
HTTP 429 or 5xx is retried (tenacity, exponential back-off) up to `retries` times; HTTP 4xx is not
(our request is wrong, or the server refuses it: its message is in the error). Anything that still
fails is one ServerError naming the server and what to check; callers write nothing before every
request of a unit has succeeded.

`probe` checks, before any real work, what the server is: that it serves the model, that it takes
token-id prompts and gives them back unchanged, that it has vLLM's `prompt_logprobs` (and not only
the OpenAI echo logprobs, which llama-cpp-python's server returns one position early), and that its
cap on log-probabilities per position (vLLM's --max-logprobs) reaches k.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .logprobs import PromptLogprobs, ServerError, cap_from_error, echo_alignment, parse_prompt_logprobs

RETRY_STATUS = {408, 429, 500, 502, 503, 504}
BACKOFF_S = 0.5  # first wait between tries; doubles each try, at most 8 s


@dataclass(frozen=True)
class Endpoint:
    url: str  # base URL of the OpenAI-compatible API, e.g. http://127.0.0.1:8000/v1
    model: str  # the name the server serves the model under (vLLM: --served-model-name)
    timeout_s: float = 600.0
    retries: int = 3
    concurrency: int = 4

    @property
    def base(self) -> str:
        return self.url.rstrip("/")


def endpoint_of(params, name: str) -> Endpoint | None:
    """The server params give for a member (params `engine.server.members`), or None."""
    found = params.engine.server.members.get(name)
    if found is None:
        return None
    s = params.engine.server
    return Endpoint(found.url, found.model, timeout_s=s.timeout_s, retries=s.retries, concurrency=s.concurrency)


class _Retry(Exception):
    """A failure worth another try (transport error, timeout, 429/5xx)."""


_local = threading.local()
TRANSPORT = None  # an httpx transport to use instead of the network (tests replay recorded responses through it)


def _client(endpoint: Endpoint):
    import httpx

    clients = getattr(_local, "clients", None)
    if clients is None:
        clients = _local.clients = {}
    key = (endpoint.base, endpoint.timeout_s, id(TRANSPORT))
    if key not in clients:
        timeout = httpx.Timeout(endpoint.timeout_s, connect=min(30.0, endpoint.timeout_s))
        clients[key] = httpx.Client(timeout=timeout, transport=TRANSPORT)
    return clients[key]


def request(endpoint: Endpoint, method: str, path: str, payload: dict | None = None) -> dict:
    """One JSON request with retries; the decoded body, or one ServerError."""
    import httpx
    from tenacity import RetryError, retry, retry_if_exception_type, stop_after_attempt, wait_exponential

    url = f"{endpoint.base}{path}"

    @retry(
        retry=retry_if_exception_type(_Retry),
        stop=stop_after_attempt(endpoint.retries + 1),
        wait=wait_exponential(multiplier=BACKOFF_S, max=8.0),
    )
    def once():
        try:
            response = _client(endpoint).request(method, url, json=payload)
        except httpx.TimeoutException as exc:
            raise _Retry(f"no answer within {endpoint.timeout_s:g} s ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retry(f"cannot reach it ({type(exc).__name__}: {exc})") from None
        if response.status_code in RETRY_STATUS:
            raise _Retry(f"HTTP {response.status_code}: {_message(response.text)}")
        return response

    try:
        response = once()
    except RetryError as exc:
        cause = exc.last_attempt.exception()
        raise ServerError(
            f"{url}: {cause} after {endpoint.retries + 1} tries; is the server up (`curl {endpoint.base}/models`)? "
            "raise server.timeout_s or server.retries if it is only slow"
        ) from None
    if response.status_code != 200:
        raise _refusal(endpoint, url, response.status_code, response.text, payload)
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ServerError(
            f"{url}: HTTP 200 but the body is not JSON ({response.text[:80]!r}…); not an OpenAI-compatible server"
        ) from None


def _message(text: str) -> str:
    try:
        body = json.loads(text)
        found = body.get("error", body) if isinstance(body, dict) else body
        found = found.get("message", found) if isinstance(found, dict) else found
        return " ".join(str(found).split())[:300]
    except (json.JSONDecodeError, TypeError):
        return " ".join(text.split())[:300]


def _refusal(endpoint: Endpoint, url: str, status: int, text: str, payload: dict | None) -> ServerError:
    cap = cap_from_error(status, text)
    if cap is not None:
        asked = (payload or {}).get("prompt_logprobs")
        return ServerError(
            f"{url}: the server caps log-probabilities at {cap} per position (vLLM's --max-logprobs) but {asked} were asked; "
            f"restart it with --max-logprobs {asked}, or lower fidelity.topk to {cap}"
        )
    if status == 404 and payload is not None:
        return ServerError(
            f"{url}: HTTP 404 ({_message(text)}); does it serve model {endpoint.model!r} (`curl {endpoint.base}/models`)?"
        )
    return ServerError(f"{url}: HTTP {status}: {_message(text)}")


def map_ordered(endpoint: Endpoint, fn, jobs: list, progress=None) -> list:
    """fn(job) for every job, `concurrency` at a time, results in job order. The first failure
    cancels what has not started and is raised (the caller has written nothing)."""
    if endpoint.concurrency <= 1 or len(jobs) <= 1:
        out = []
        for job in jobs:
            out.append(fn(job))
            if progress is not None:
                progress.update(1)
        return out
    results = [None] * len(jobs)
    with ThreadPoolExecutor(max_workers=endpoint.concurrency) as pool:
        futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
        try:
            from concurrent.futures import FIRST_EXCEPTION, wait

            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    results[futures[future]] = future.result()  # raises the first failure
                    if progress is not None:
                        progress.update(1)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results


def completion_payload(endpoint: Endpoint, prompt: list[int], k: int) -> dict:
    """vLLM's prompt_logprobs request: the prompt as token ids, one throwaway token generated."""
    return {
        "model": endpoint.model,
        "prompt": [int(t) for t in prompt],
        "max_tokens": 1,
        "temperature": 0.0,
        "prompt_logprobs": int(k),
        "return_token_ids": True,
    }


def prompt_logprobs(endpoint: Endpoint, prompts: list[list[int]], k: int, what: str, progress=None) -> list[PromptLogprobs]:
    """The server's log-probabilities over each prompt (top-k and the prompt's own tokens), in order."""

    def one(job):
        i, prompt = job
        body = request(endpoint, "POST", "/completions", completion_payload(endpoint, prompt, k))
        return parse_prompt_logprobs(body, prompt, k, f"{endpoint.base} ({endpoint.model}), {what} prompt {i}")

    return map_ordered(endpoint, one, list(enumerate(prompts)), progress)


def generate(endpoint: Endpoint, prompt: list[int], max_tokens: int, stop: list[str] | None = None) -> dict:
    """Greedy completion of a token-id prompt, ending at EOS, `max_tokens` or a `stop` string (kept
    in the output, as in-process generation keeps the token that closed the block); its token ids."""
    body = request(
        endpoint,
        "POST",
        "/completions",
        {
            "model": endpoint.model,
            "prompt": [int(t) for t in prompt],
            "max_tokens": int(max_tokens),
            "temperature": 0.0,
            "return_token_ids": True,
            "skip_special_tokens": False,
            **({"stop": stop, "include_stop_str_in_output": True} if stop else {}),
        },
    )
    try:
        choice = body["choices"][0]
        ids = [int(t) for t in choice["token_ids"]]
    except (KeyError, IndexError, TypeError, ValueError):
        raise ServerError(
            f"{endpoint.base} ({endpoint.model}): its completion has no `token_ids` (vLLM's return_token_ids); "
            "code tasks need the generated token ids"
        ) from None
    return {"token_ids": ids, "finish_reason": choice.get("finish_reason")}


# ------------------------------------------------------------------------------------- probe


def probe(endpoint: Endpoint, prompt: list[int], k: int) -> dict:
    """What the server is, checked on one small prompt before any real work; one ServerError for
    each known quirk (a server that refuses token-id prompts is asked once with text, to say why)."""
    models = request(endpoint, "GET", "/models")
    served = [m.get("id") for m in models.get("data", []) if isinstance(m, dict)] if isinstance(models, dict) else []
    if endpoint.model not in served:
        raise ServerError(
            f"{endpoint.base}: serves {served or 'no model'}, not {endpoint.model!r}; fix the member's `model` or the server's --served-model-name"
        )
    try:
        body = request(endpoint, "POST", "/completions", completion_payload(endpoint, prompt, k))
    except ServerError as exc:
        if "caps log-probabilities" not in str(exc) and _accepts_text_only(endpoint):
            raise ServerError(f"{endpoint.base} ({endpoint.model}): accepts text prompts only; {_text_only_reason()}") from None
        raise
    choice = (body.get("choices") or [{}])[0] if isinstance(body, dict) else {}
    if choice.get("prompt_logprobs") is None:
        try:
            where = echo_alignment_of(endpoint)
        except ServerError:
            where = "and no echo logprobs either"
        raise ServerError(
            f"{endpoint.base} ({endpoint.model}): no prompt_logprobs, only OpenAI echo logprobs ({where}); "
            "those are keyed by token text, not id, so they cannot be trusted for fidelity: serve the model with vLLM"
        )
    parsed = parse_prompt_logprobs(body, prompt, k, f"{endpoint.base} ({endpoint.model}), probe")
    return {"models": served, "k": parsed.k, "rows": len(parsed)}


def _text_only_reason() -> str:
    return "token ids must round-trip (a text prompt is re-tokenized by the server, which may split it otherwise); serve the model with vLLM"


def _accepts_text_only(endpoint: Endpoint) -> bool:
    try:
        request(endpoint, "POST", "/completions", {"model": endpoint.model, "prompt": "a", "max_tokens": 1, "temperature": 0.0})
    except ServerError:
        return False
    return True


def echo_alignment_of(endpoint: Endpoint) -> str:
    """Ask for echo logprobs over ECHO_PROBE (as text) and say how they line up."""
    body = request(
        endpoint,
        "POST",
        "/completions",
        {"model": endpoint.model, "prompt": ECHO_PROBE, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 5},
    )
    how = echo_alignment(body)
    return {
        "shifted": "each prompt token's log-probability is read one position early, from the prediction of the next token "
        "(llama-cpp-python's known quirk)",
        "aligned": "aligned as OpenAI defines them",
    }.get(how, "their alignment could not be determined")


PROBE_TOKENS = 32
# Text whose next token any language model predicts: the echo-alignment probe's votes come from it.
ECHO_PROBE = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24"


def checked_endpoint(params, name: str, layout=None) -> Endpoint:
    """The member's server (params `engine.server.members`), probed on the first tokens of the primary
    fidelity store before any work: one ServerError per known quirk (see `probe`)."""
    from .. import refstore
    from ..layout import DEFAULT

    endpoint = endpoint_of(params, name)
    segment = refstore.open_fidelity((layout or DEFAULT).reference, params.fidelity.primary_corpus, params.fidelity.ctx)
    probe(endpoint, segment.windows()[0, :PROBE_TOKENS].tolist(), params.fidelity.topk)
    return endpoint
