"""Quants as recipes: the reference weights, round-tripped in memory through ggml block formats.

    from silentzone.quant.load import load_quant
    model, tokenizer, report = load_quant(params, "q4_0")

No quantized file is stored: a quant is rebuilt from params `cohort` on every load, deterministically
(same params -> identical weights). See formats.py for the formats and recipes.py for the recipe
language; docs/quant.md for the cohort.
"""
