"""From a model's final hidden states (after the final norm: the input of lm_head) to logits.

The reference store keeps the reference's final hidden states and its lm_head once, so reference
logits are recomputed as h @ W^T (+ bias), then the model's final logit softcapping, if any: the same
arithmetic the reference performs. A quant's logits come from its own lm_head the same way. One
softcap, one vocabulary fingerprint, one head class, on whatever device the quant runs.
"""

from __future__ import annotations

import hashlib
import json

from ..errors import SilentzoneError


def final_hidden(model, input_ids):
    """Final hidden states (after the final norm) for a batch of token id rows."""
    return model.get_decoder()(input_ids=input_ids).last_hidden_state


def softcap_of(model) -> float | None:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    cap = getattr(cfg, "final_logit_softcapping", None)
    return float(cap) if cap else None


def softcap(logits, cap: float | None):
    import torch

    return logits if not cap else torch.tanh(logits / cap) * cap


def lm_logits(model, hidden, cap: float | None):
    """A model's own float32 logits for some final hidden states (its lm_head, then its softcap)."""
    head = model.get_output_embeddings()
    return softcap(head(hidden.to(head.weight.dtype)).float(), cap)


def vocab_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's (token, id) pairs: quants must share the reference's vocabulary."""
    pairs = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(pairs, ensure_ascii=False).encode("utf-8")).hexdigest()


def head_arrays(model, tokenizer, name: str):
    """(weight, bias or None, meta) of a model's lm_head as float32 numpy, for the reference store."""
    head = model.get_output_embeddings()
    bias = head.bias.detach().float().cpu().numpy() if getattr(head, "bias", None) is not None else None
    meta = {"model": name, "softcap": softcap_of(model), "vocab_fingerprint": vocab_fingerprint(tokenizer)}
    return head.weight.detach().float().cpu().numpy(), bias, meta


class ReferenceHead:
    """The reference's lm_head, loaded from the reference store, on the device the quant runs on."""

    def __init__(self, weight, bias, manifest: dict, device: str = "cpu"):
        import torch

        self.weight = torch.from_numpy(weight).to(device)
        self.bias = None if bias is None else torch.from_numpy(bias).to(device)
        self.manifest = manifest
        self.cap = manifest.get("softcap")

    @property
    def vocab_size(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, hidden):
        import torch

        return softcap(torch.nn.functional.linear(hidden.to(self.weight.device), self.weight, self.bias), self.cap)

    def check_vocab(self, quant: str, model, tokenizer) -> None:
        """A quant must share the reference's tokenizer and logit count; one line otherwise."""
        n_q = model.get_output_embeddings().weight.shape[0]
        mine, theirs = vocab_fingerprint(tokenizer), self.manifest["vocab_fingerprint"]
        if n_q != self.vocab_size or mine != theirs:
            raise SilentzoneError(
                f"quant {quant!r}: its vocabulary ({n_q} logits, tokenizer {mine[:12]}) differs from the reference's "
                f"({self.vocab_size} logits, tokenizer {theirs[:12]}); a quant must share the reference's tokenizer"
            )
