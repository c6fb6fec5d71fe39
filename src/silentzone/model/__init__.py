"""The reference model and its lm head: loading (load.py) and final hidden state → logits (head.py)."""

from .load import build_tiny, load_reference, resolve_source

__all__ = ["build_tiny", "load_reference", "resolve_source"]
