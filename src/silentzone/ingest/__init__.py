"""External measurements into the cohort and item tables.

llama.cpp `llama-perplexity --kl-divergence` logs (llamacpp_log) and its reference-logits file
(llamacpp_kld), lm-evaluation-harness `--log_samples` files (lm_eval), LiveCodeBench
`eval_all.json` (livecodebench), published cohort CSVs (cohort_csv, read by silentzone.published),
and a manifest that joins per-quant files into data/processed/{cohort,items}.parquet (manifest).
Every table follows silentzone.schema's names. No torch here.
"""

from ..schema import ITEM_KEYS

# The item table's leading columns; each reader adds its task-specific extras after them.
ITEM_COLUMNS = [*ITEM_KEYS, "correct", "prompt_kld", "n_prompt_tokens"]

# The study's variant registry (silentzone.variants.STANDARD): an ingested cohort has every variant
# column a collected one has.
from ..variants import IDENTITY as METRIC_IDENTITY  # noqa: E402
from ..variants import STANDARD as VARIANT_METRICS  # noqa: E402

VARIANTS = list(VARIANT_METRICS)


def identity(variant: str) -> float:
    return METRIC_IDENTITY[VARIANT_METRICS[variant]]
