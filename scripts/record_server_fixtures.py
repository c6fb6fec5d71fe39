"""Record real responses of a running vLLM server as test fixtures (tests/fixtures/server/).

    python scripts/record_server_fixtures.py URL MODEL [OUT_DIR]
    python scripts/record_server_fixtures.py --echo URL MODEL NAME   (echo logprobs: llama-cpp-python's server, vLLM)

The server serves the quick/default reference (SmolLM2-135M-Instruct's fp32 cache, `make vllm-serve`).
Records: /models; the first 48 tokens of the wiki store's first window with prompt_logprobs=20; the same
with 30 (above the --max-logprobs cap: HTTP 400); the first prepared arc_easy item's choices with
prompt_logprobs=1. Each file holds the request and the response, so tests replay them exactly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import numpy as np


def record(client, url, method, path, payload=None):
    response = client.request(method, f"{url}{path}", json=payload)
    return {"request": {"method": method, "path": path, "json": payload}, "status": response.status_code, "body": response.json()}


def main(argv):
    if argv and argv[0] == "--echo":  # record_server_fixtures.py --echo URL MODEL NAME
        return record_echo(argv[1].rstrip("/"), argv[2], argv[3])
    url, model = argv[0].rstrip("/"), argv[1]
    out = Path(argv[2] if len(argv) > 2 else "tests/fixtures/server")
    out.mkdir(parents=True, exist_ok=True)
    tokens = np.load("data/reference/fidelity/wiki_c512/tokens.npy")[:48].tolist()
    with httpx.Client(timeout=600) as client:
        found = {"models": record(client, url, "GET", "/models")}
        for k in (20, 30):
            payload = {
                "model": model,
                "prompt": tokens,
                "max_tokens": 1,
                "temperature": 0.0,
                "prompt_logprobs": k,
                "return_token_ids": True,
            }
            found[f"window_k{k}"] = record(client, url, "POST", "/completions", payload)
        from transformers import AutoTokenizer

        from silentzone.bench import mc

        tok = AutoTokenizer.from_pretrained("data/models/smollm2-135m-instruct")
        item = json.loads(Path("data/prepared/bench/arc_easy.jsonl").read_text().splitlines()[0])
        req = mc.request(tok, item)
        found["arc_easy_item"] = {"item": item, "choices": []}
        for ctx, cont in zip(req.contexts, req.conts):
            payload = {
                "model": model,
                "prompt": ctx + cont,
                "max_tokens": 1,
                "temperature": 0.0,
                "prompt_logprobs": 1,
                "return_token_ids": True,
            }
            found["arc_easy_item"]["choices"].append(record(client, url, "POST", "/completions", payload))
    for name, value in found.items():
        (out / f"vllm_{name}.json").write_text(json.dumps(value, indent=1, sort_keys=True) + "\n")
        print(out / f"vllm_{name}.json")


def record_echo(url: str, model: str, name: str, out: Path = Path("tests/fixtures/server")) -> None:
    """The OpenAI echo + logprobs answer of a server over the probe texts (llama-cpp-python's server,
    which takes text prompts only, and vLLM for the aligned form), and its answer to a token-id prompt."""
    from silentzone.server.client import ECHO_PROBE

    texts = {"probe": ECHO_PROBE, "wiki": Path("data/prepared/corpora/wiki.txt").read_text()[:200]}
    found = {}
    with httpx.Client(timeout=600) as client:
        for key, text in texts.items():
            payload = {"model": model, "prompt": text, "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 5}
            found[f"echo_{key}"] = record(client, url, "POST", "/completions", payload)
        payload = {"model": model, "prompt": [4518, 14733, 3935, 738], "max_tokens": 1, "prompt_logprobs": 5}
        found["token_ids"] = record(client, url, "POST", "/completions", payload)
    path = out / f"{name}.json"
    path.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    print(path)


if __name__ == "__main__":
    main(sys.argv[1:])
