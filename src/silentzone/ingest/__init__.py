"""External measurements into the cohort and item tables.

llama.cpp `llama-perplexity --kl-divergence` logs (llamacpp_log) and its reference-logits file
(llamacpp_kld), lm-evaluation-harness `--log_samples` files (lm_eval), LiveCodeBench
`eval_all.json` (livecodebench), published cohort CSVs (cohort_csv), and a manifest that joins
per-quant files into data/processed/{cohort,items}.parquet (manifest). No torch here.
"""

# The item table's fixed columns (see DESIGN.md); each reader adds its task-specific extras after them.
ITEM_COLUMNS = ["model", "task", "item_id", "correct", "prompt_kld", "n_prompt_tokens"]
