"""Code tasks: greedy generation from a chat prompt, first ```python block, run against the tests.

The assistant turn is prefilled with "```python\n" plus the item's `prefill` (empty for HumanEval
and MBPP), so the model writes code straight away and the code block is opened by us; the block
ends at the first closing ``` the model writes. The program run is the item's `prefix` (HumanEval:
the problem text, for its imports and helpers), the code block, then the tests. Generation stops per
sequence on that fence or on EOS (a cheap StoppingCriteria on the tail of the new tokens; the
`stop_strings` of transformers costs ~2 s per call), in left-padded batches sorted by prompt length.

test_status: passed | failed | timeout (from the sandbox) | unclosed (the block never closed within
bench.max_new_tokens: recorded as a failure, not run).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import sandbox

FENCE = "```"
OPEN = "```python\n"


@dataclass
class Generated:
    prompt_ids: list[int]
    new_ids: list[int]  # up to and including the token that closed the block (or EOS)
    text: str  # decoded new tokens (special tokens dropped; invalid UTF-8 as U+FFFD)
    closed: bool


def prompt_ids(tokenizer, item: dict) -> list[int]:
    messages = [{"role": "user", "content": item["prompt"]}]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:  # ChatML, for tokenizers built without a template (the tiny test model)
        text = f"<|im_start|>user\n{item['prompt']}<|im_end|>\n<|im_start|>assistant\n"
    return tokenizer(text + OPEN + item["prefill"], add_special_tokens=False).input_ids


def stop_index(tokenizer, new_ids: list[int], eos_ids: set[int]) -> tuple[int, bool]:
    """(number of new tokens to keep, whether a closing fence was written)."""
    for k, tok in enumerate(new_ids):
        if tok in eos_ids:
            return k + 1, False
        if _fence_at(tokenizer, new_ids, k):
            return k + 1, True
    return len(new_ids), False


def _fence_at(tokenizer, ids, k: int) -> bool:
    # A fence is at most 3 characters, hence at most 3 tokens, plus one for a merged neighbour.
    return FENCE in tokenizer.decode(ids[max(0, k - 3) : k + 1], skip_special_tokens=True)


def _fence_criteria(tokenizer, start: int):
    import torch
    from transformers import StoppingCriteria

    class FenceStop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            k = input_ids.shape[1] - start - 1
            return torch.tensor([_fence_at(tokenizer, row[start:].tolist(), k) for row in input_ids], device=input_ids.device)

    return FenceStop()


def eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id if model.generation_config is not None else None
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def generate(model, tokenizer, items: list[dict], max_new_tokens: int, batch_size: int, progress=None) -> list[Generated]:
    """Greedy completions of every item, in item order."""
    import torch
    from transformers import GenerationConfig, StoppingCriteriaList

    prompts = [prompt_ids(tokenizer, it) for it in items]
    stops = eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops)
    gen_config = GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad, eos_token_id=sorted(stops)
    )
    order = sorted(range(len(items)), key=lambda i: (len(prompts[i]), i))
    results: list[Generated | None] = [None] * len(items)
    for b in range(0, len(order), batch_size):
        batch = order[b : b + batch_size]
        width = max(len(prompts[i]) for i in batch)
        ids = torch.tensor([[pad] * (width - len(prompts[i])) + prompts[i] for i in batch], device=model.device)
        mask = torch.tensor([[0] * (width - len(prompts[i])) + [1] * len(prompts[i]) for i in batch], device=model.device)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=gen_config,
                stopping_criteria=StoppingCriteriaList([_fence_criteria(tokenizer, width)]),
            )
        for row, i in enumerate(batch):
            new = out[row, width:].tolist()
            keep, closed = stop_index(tokenizer, new, stops)
            text = tokenizer.decode(new[:keep], skip_special_tokens=True)
            results[i] = Generated(prompts[i], new[:keep], text, closed)
        if progress is not None:
            progress.update(len(batch))
    return results


def extract_code(item: dict, gen: Generated) -> str | None:
    """The first code block: our prefill plus the generation up to its closing fence (None if open)."""
    if not gen.closed or FENCE not in gen.text:
        return None
    return item["prefill"] + gen.text[: gen.text.index(FENCE)]


def run_tests(item: dict, gen: Generated, limits: sandbox.Limits, allow_weak: bool = False) -> str:
    code = extract_code(item, gen)
    if code is None:
        return "unclosed"
    return sandbox.run_program(item["prefix"] + "\n" + code + "\n\n" + item["tests"], limits, allow_weak=allow_weak).status
