"""Quants as recipes: the reference weights, round-tripped in memory through ggml block formats.

    from silentzone.quant.load import load_quant
    model, tokenizer, report = load_quant(params, "q4_0")

No quantized model file is stored: a quant is built from params `cohort` deterministically (same
params -> identical weights), and its quantized tensors are cached once per recipe and reference
(load.py), so later loads decode them instead of quantizing again. See formats.py for the formats and recipes.py for the recipe
language; docs/quant.md for the cohort.
"""
