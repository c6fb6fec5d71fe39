"""Per-prompt KLD: mean token KL(p_R || p_q) over the prompt plus the reference's answer, teacher-
forced so both models see the same tokens (MC: context + the reference's chosen continuation;
code: prompt + the reference's greedy completion).

`silentzone bench reference` stores, per task, the token ids of each item's sequence and the
reference's final hidden states (after the final norm) at every position that predicts a next
token; the reference lm_head is stored once. A quant recomputes reference logits = h @ W^T (then
the model's logit softcap, if any), as the fidelity store does (silentzone.store), and compares them
with its own logits at the same positions.

Layout under data/reference/bench/:
  head/     the reference lm_head (silentzone.store.write_head format)
  <task>/   tokens.npy (all items' ids, int32, concatenated), offsets.npy (int64, n_items + 1),
            hidden.npy (float32, sum of (len - 1) rows x hidden), manifest.json (item_ids, chosen,
            the fingerprint of the prepared items, sha256 of every file)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import config, io, store
from ..errors import SilentzoneError

RERUN = "run `silentzone bench reference` first"


def root(reference_dir: str | Path | None = None) -> Path:
    return Path(reference_dir or config.PATHS["reference"]) / "bench"


def write_head(model, tokenizer, reference_dir: str | Path | None = None) -> None:
    from ..reference import softcap_of, vocab_fingerprint

    head = model.get_output_embeddings()
    bias = head.bias.detach().float().cpu().numpy() if getattr(head, "bias", None) is not None else None
    meta = {"model": "reference", "softcap": softcap_of(model), "vocab_fingerprint": vocab_fingerprint(tokenizer)}
    store.write_head(root(reference_dir) / "head", head.weight.detach().float().cpu().numpy(), bias, meta)


class ReferenceHead:
    """Reference logits from stored hidden states."""

    def __init__(self, reference_dir: str | Path | None = None):
        import torch

        folder = root(reference_dir) / "head"
        if not (folder / store.MANIFEST).exists():
            raise SilentzoneError(f"{folder}: reference bench store missing; {RERUN}")
        weight, bias, self.manifest = store.read_head(folder)
        self.weight = torch.from_numpy(weight)
        self.bias = None if bias is None else torch.from_numpy(bias)
        self.cap = self.manifest.get("softcap")

    def __call__(self, hidden):
        import torch

        logits = torch.nn.functional.linear(hidden, self.weight, self.bias)
        return logits if not self.cap else torch.tanh(logits / self.cap) * self.cap


def write_task(task: str, entries: list[dict], fingerprint: str, reference_dir: str | Path | None = None) -> None:
    """entries: per item {item_id, chosen, tokens (list), hidden (float32 [len - 1, H])}, in item order."""
    lengths = [len(e["tokens"]) for e in entries]
    if any(h["hidden"].shape[0] != n - 1 for h, n in zip(entries, lengths)):
        raise RuntimeError("reference bench store: hidden rows must be len(tokens) - 1 per item")
    with io.atomic_dir(root(reference_dir) / task) as tmp:
        _save(tmp / "tokens.npy", np.concatenate([np.asarray(e["tokens"], dtype=np.int32) for e in entries]))
        _save(tmp / "offsets.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
        _save(tmp / "hidden.npy", np.concatenate([np.asarray(e["hidden"], dtype=np.float32) for e in entries]))
        files = {p.name: io.sha256_file(p) for p in sorted(tmp.glob("*.npy"))}
        meta = {"task": task, "item_ids": [e["item_id"] for e in entries], "chosen": [int(e["chosen"]) for e in entries],
                "fingerprint": fingerprint, "files": files}
        io.write_json(tmp / store.MANIFEST, meta)


def _save(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def task_fingerprint(task: str, reference_dir: str | Path | None = None) -> str | None:
    path = root(reference_dir) / task / store.MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("fingerprint")


class TaskStore:
    """The reference's sequences and hidden states of one task, checksum-verified on open."""

    def __init__(self, task: str, reference_dir: str | Path | None = None):
        folder = root(reference_dir) / task
        if not (folder / store.MANIFEST).exists():
            raise SilentzoneError(f"{folder}: reference bench store for task {task!r} missing; {RERUN}")
        self.meta = store.read_manifest(folder)
        self.tokens = np.load(folder / "tokens.npy")
        self.offsets = np.load(folder / "offsets.npy")
        self.hidden = np.load(folder / "hidden.npy", mmap_mode="r")
        self.index = {item_id: i for i, item_id in enumerate(self.meta["item_ids"])}

    def get(self, item_id: str) -> tuple[int, list[int], np.ndarray]:
        """(reference's chosen choice (-1 for code), token ids, hidden [len - 1, H]) of one item."""
        if item_id not in self.index:
            raise SilentzoneError(f"reference bench store for task {self.meta['task']!r} has no item {item_id!r}; rerun `silentzone bench reference`")
        i = self.index[item_id]
        start, stop = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.meta["chosen"][i], self.tokens[start:stop].tolist(), np.array(self.hidden[start - i : stop - i - 1])


def mean_kld(head: ReferenceHead, hidden_ref: np.ndarray, logits_q) -> float:
    """Mean over positions of KL(p_R || p_q), full vocabulary, in float64."""
    import torch

    logp_r = torch.log_softmax(head(torch.from_numpy(hidden_ref)).double(), dim=-1)
    logp_q = torch.log_softmax(logits_q.double(), dim=-1)
    return float((logp_r.exp() * (logp_r - logp_q)).sum(-1).mean())
