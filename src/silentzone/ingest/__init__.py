"""External measurements into the cohort and item tables.

llama.cpp `llama-perplexity --kl-divergence` logs (llamacpp_log) and its reference-logits file
(llamacpp_kld), lm-evaluation-harness `--log_samples` files (lm_eval), LiveCodeBench
`eval_all.json` (livecodebench), published cohort CSVs (cohort_csv, read by silentzone.published),
and a manifest that joins per-quant files into data/processed/{cohort,items}.parquet (manifest).
Every table follows silentzone.schema's names. No torch here.
"""

import math

from ..schema import ITEM_KEYS

# The item table's leading columns; each reader adds its task-specific extras after them.
ITEM_COLUMNS = [*ITEM_KEYS, "correct", "prompt_kld", "n_prompt_tokens"]

# profiles/default.yaml's variant registry (name -> metric), in its order, so an ingested cohort has
# every variant column a collected one has (a test checks the two agree). Ingest runs without a
# params.yaml, hence a copy here, until silentzone.variants owns the registry for both.
VARIANT_METRICS = {
    "kld_mean": "kld", "kld_median": "kld", "kld_p90": "kld", "kld_p99": "kld", "kld_p99_9": "kld", "kld_topk_mean": "kld_topk",
    "ppl_ratio": "ppl_ratio", "abs_dln_ppl": "abs_dln_ppl", "ppl_greedy": "ppl_greedy", "top1_disagree": "top1_disagree",
    "rms_dp": "rms_dp", "kld_mean_fiction": "kld", "kld_mean_code": "kld", "kld_mean_ctx128": "kld",
}
VARIANTS = list(VARIANT_METRICS)
# Each metric's value for a model compared with itself (as `silentzone collect` writes the reference); ppl_greedy has none.
METRIC_IDENTITY = {"kld": 0.0, "rkld": 0.0, "kld_topk": 0.0, "ppl_ratio": 1.0, "abs_dln_ppl": 0.0, "top1_disagree": 0.0, "rms_dp": 0.0,
                   "ppl_greedy": math.nan}


def identity(variant: str) -> float:
    return METRIC_IDENTITY[VARIANT_METRICS[variant]]
