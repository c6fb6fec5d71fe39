"""`silentzone paper inputs` gathers what the manuscript shows; `silentzone paper render` runs Quarto.

inputs writes, from results/ and params.yaml (none of it is typed by hand in paper/index.qmd):
  paper/_variables.yml  every number, formatted as the manuscript prints it (`{{< var ... >}}`), the
                        profile's facts (model, tasks, item counts, cohort), the paper's published
                        values, one verdict per claim, and `has.*` booleans that choose between
                        alternative sentences (`when-meta`); _quarto.yml also loads it as metadata
  paper/figures/        copies of results/figures
  paper/notebooks/      copies of the executed results/notebooks (the figures are embedded from them)
  paper/tables/         copies of the results/tables CSVs; `main/*.md`, the main text's tables
                        (readable columns), and `appendix/*.md`, the full tables
render runs `quarto render paper` (HTML, and PDF through Typst) into paper/_output.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import io
from .errors import SilentzoneError
from .layout import DEFAULT

PAPER_DIR = Path("paper")
PUBLISHED_DIR = Path("data/published")  # committed runs of each profile (scripts/publish_run.py)
SIDE_BY_SIDE_TABLE = "main/side-by-side"  # under paper/tables/, written from the variables, not from a results CSV
QUARTO_MIN = (1, 4)  # manuscript projects and Typst PDF
QUARTO_HELP = (
    "install Quarto >= 1.4 with `make paper-tools` (conda-forge `quarto` into an active conda env, else "
    "the Linux tarball from quarto.org) or an installer from https://quarto.org/docs/get-started/, "
    "then rerun `dvc repro paper`"
)
MINUS = "\u2212"
DASH = "\u2014"  # a value that does not exist (a refused correlation), never "n/a"
NOTE_SYMBOLS = ["†", "‡", "§", "¶", "‖", "††", "‡‡", "§§", "¶¶", "‖‖"]


def add_arguments(p):
    p.add_argument("action", choices=["inputs", "render"])


def numbers_namespace(notebook_stem: str) -> str:
    """'01-fidelity-vs-score' -> 'fidelity_vs_score' (the key under which its numbers appear)."""
    return re.sub(r"^\d+-", "", notebook_stem).replace("-", "_")


# --- numbers as the manuscript prints them -------------------------------------------------------

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _minus(text: str) -> str:
    return text.replace("-", MINUS)


def fmt_signed(x: float, digits: int = 2) -> str:
    """Correlations and their CIs: always signed, fixed decimals, a true minus ("+0.00", "−0.24")."""
    text = f"{x:+.{digits}f}"
    if float(text) == 0:
        text = "+" + text[1:]
    return _minus(text)


def fmt_p(p: float) -> str:
    """p-values: two decimals from 0.1, two significant digits from 0.01, one below (0.0002), never
    0 (permutation p > 0); a digit more where rounding would carry p across 0.05 (0.0495 must not
    print as 0.05)."""
    if p >= 0.0995:
        return f"{p:.2f}"
    if p <= 0:
        return "0"
    for digits in (2, 3, 4) if p >= 0.0095 else (1, 2):
        decimals = digits - 1 - math.floor(math.log10(p))
        text = f"{p:.{decimals}f}"
        if (float(text) < 0.05) == (p < 0.05):
            break
    return text


def fmt_pct(x: float) -> str:
    return _minus(f"{100 * x:.1f}%")


def fmt_points(x: float) -> str:
    """A difference of composites (shares of items) in percentage points, one decimal: "−11.1"."""
    text = f"{100 * x:.1f}"
    return _minus("0.0" if float(text) == 0 else text)


def fmt_sig(x: float, digits: int = 3) -> str:
    """Three significant digits; below 0.001 as m×10ⁿ (KLDs of near-lossless quants)."""
    if x == 0:
        return "0"
    if abs(x) < 0.001:
        exponent = math.floor(math.log10(abs(x)))
        mantissa = x / 10**exponent
        if f"{mantissa:.{digits - 1}f}".startswith(("10", "-10")):  # 9.996e-5 rounds to 1.00e-4
            mantissa, exponent = mantissa / 10, exponent + 1
        return _minus(f"{mantissa:.{digits - 1}f}") + "×10" + str(exponent).translate(_SUPERSCRIPT)
    text = f"{x:.{digits}g}"
    if "e" in text:  # >= 1000: plain digits
        text = f"{x:.0f}"
    return _minus(text)


def value_kind(key: str) -> str:
    """How a number is printed, by its key (the notebooks' numbers and published.yml share names)."""
    k = key.lower()
    if k in ("rho", "ci_low", "ci_high") or k.startswith(("rho", "ci_")) or "_rho" in k:
        return "rho"
    if k == "p" or k.startswith("p_"):
        return "p"
    if k.startswith(("accuracy", "routing_", "share_")) or "_accuracy" in k or k == "power":
        return "pct"
    if k.startswith(("gm_ratio", "auroc")):
        return "ratio"
    if k in ("delta", "se") or k.startswith(("mdd", "half_width")):
        return "points"  # composite differences (notebook 07): percentage points of items
    return "sig"


def format_value(value, key: str = "", min_n: int | None = None):
    """One value of results/numbers/*.json or published.yml as printed; None/NaN become "—". A dict
    with a correlation (rho, or rho_full) also gets `text`, the whole estimate as one phrase."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        kind = value_kind(key)
        if kind == "rho":
            return fmt_signed(value)
        if kind == "p":
            return fmt_p(value)
        if kind == "pct":
            return fmt_pct(value)
        if kind == "ratio":
            return f"{value:.2f}"
        if kind == "points":
            return fmt_points(value)
        if value.is_integer() and (key == "n" or key.startswith("n_")):
            return int(value)
        return fmt_sig(value)
    if isinstance(value, dict):
        out = {k: format_value(v, k, min_n) for k, v in value.items()}
        if "rho" in value:
            out["text"] = estimate_text(value, min_n)
        elif "rho_full" in value:  # notebook 06 names its full-cohort numbers with a suffix
            out["text"] = estimate_text({k.removesuffix("_full"): v for k, v in value.items() if k.endswith("_full")}, min_n)
        return out
    if isinstance(value, list):
        return ", ".join(str(format_value(v, key, min_n)) for v in value)
    return value


NBSP = "\u00a0"


def _ci(low, high, fmt=fmt_signed) -> str:
    """ " [−0.86, −0.51]": a line may break before the bracket, never inside it."""
    if low is None or high is None or any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return ""
    return f" [{fmt(low)},{NBSP}{fmt(high)}]"


def estimate_text(d: dict, min_n: int | None = None) -> str:
    """A correlation as one phrase: "ρ = −0.22 [−0.60, +0.19], p = 0.20", or why it is undefined."""
    rho = d.get("rho")
    if rho is None or (isinstance(rho, float) and math.isnan(rho)):
        reason = d.get("refused") or ""
        n = d.get("n")
        if not reason and isinstance(n, (int, float)) and min_n is not None and n < min_n:
            reason = f"n = {int(n)}, fewer than {min_n}"
        return f"undefined ({reason})" if reason else "undefined"
    text = f"ρ = {fmt_signed(rho)}{_ci(d.get('ci_low'), d.get('ci_high'))}"
    p = d.get("p_perm", d.get("p"))
    p = None if not _num(p) else p
    if p is not None:
        text += f", p = {fmt_p(p)}"
        if _num(d.get("p_holm")):
            text += f" (Holm {fmt_p(d['p_holm'])})"
    return text


def load_numbers(results_dir: Path) -> dict:
    numbers_dir = Path(results_dir) / "numbers"
    files = sorted(numbers_dir.glob("*.json"))
    if not files:
        raise SilentzoneError(f"{numbers_dir}: no numbers; run the analyze stages first (dvc repro)")
    raw = {}
    for path in files:
        try:
            raw[numbers_namespace(path.stem)] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise SilentzoneError(f"{path}: invalid JSON at line {exc.lineno}; rerun `silentzone analyze {path.stem}`") from None
    return raw


def build_variables(results_dir: Path, paper_dir: Path = PAPER_DIR, min_n: int | None = None) -> dict:
    """The formatted numbers of every notebook and the published values (no params needed)."""
    variables = {ns: format_value(v, min_n=min_n) for ns, v in load_numbers(results_dir).items()}
    published = Path(paper_dir) / "published.yml"
    if published.exists():
        variables["paper"] = format_value(yaml.safe_load(published.read_text()))
    return variables


def value_range(raw: dict, namespace: str, low: str, high: str) -> str:
    """ "0.82 to 1.09" from two numbers of a notebook, "—" when either is missing."""
    node = raw.get(namespace) or {}
    if not (_num(node.get(low)) and _num(node.get(high))):
        return DASH
    return f"{format_value(node[low], low)} to {format_value(node[high], high)}"


def need(raw: dict, namespace: str, dotted: str, source: str = "results/numbers"):
    """A number the verdicts or the prose cannot do without, with a one-line error naming it."""
    node = raw.get(namespace)
    if node is None:
        raise SilentzoneError(f"{source}/*-{namespace.replace('_', '-')}.json: missing; rerun its notebook (`dvc repro`)")
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise SilentzoneError(
                f"{source}/*-{namespace.replace('_', '-')}.json: no key `{dotted}`; "
                f"the notebook must write it (or src/silentzone/paper.py must stop reading it)"
            )
        node = node[part]
    return node


# --- the profile's facts, from params -------------------------------------------------------------

TASK_NAMES = {
    "arc_easy": "ARC-Easy",
    "arc_challenge": "ARC-Challenge",
    "hellaswag": "HellaSwag",
    "piqa": "PIQA",
    "winogrande": "Winogrande",
    "sciq": "SciQ",
    "openbookqa": "OpenBookQA",
    "humaneval": "HumanEval",
    "mbpp": "MBPP",
    "lambada": "LAMBADA",
}
# Citation keys of references.bib for models the profiles ship; others are described by their source.
MODEL_CITATIONS = {"smollm2-135m-instruct": "allal2025smollm2"}
FORMAT_PATTERN = re.compile(r"^(?:[A-Z]{1,3}\d[\w]*|MXFP4|BF16|F16|F32)$")


def task_name(name: str) -> str:
    return TASK_NAMES.get(name, name)


NUMBER_WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def count(n: int, noun: str, words: bool = False) -> str:
    """ "1 item", "8 items"; with words=True "no quant", "two quants" (prose below ten)."""
    number = NUMBER_WORDS[n] if words and 0 <= n < len(NUMBER_WORDS) else str(n)
    return f"{number} {noun if n == 1 or (words and n == 0) else noun + 's'}"


def join_words(items: list[str]) -> str:
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def cohort_formats(cohort: dict) -> list[str]:
    """Every ggml block format named anywhere in the cohort's recipes."""
    found = set()

    def walk(node):
        if isinstance(node, str) and FORMAT_PATTERN.match(node):
            found.add(node)
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(cohort)
    return sorted(found)


def variant_name(name: str, spec: dict, params: dict) -> str:
    """A measurement variant as a reader names it, from its spec (metric, agg, corpus, ctx)."""
    metric, agg = spec.get("metric", name), spec.get("agg")
    if metric == "kld":
        if agg in ("mean", "median"):
            text = f"{agg} KLD"
        elif agg and agg.startswith("p"):
            text = f"{agg[1:]}th-percentile KLD"
        else:
            text = f"KLD ({agg})" if agg else "KLD"
    elif metric == "kld_topk":
        k = (params.get("fidelity") or {}).get("topk")
        text = f"{agg or 'mean'} top-k KLD" + (f" (k = {k})" if k else "")
    else:
        text = {
            "ppl_ratio": "perplexity ratio",
            "abs_dln_ppl": "|Δ ln PPL|",
            "ppl_greedy": "perplexity on the reference's greedy tokens",
            "top1_disagree": "top-1 disagreement",
            "rms_dp": "RMS Δp",
        }.get(metric, metric)
    fidelity = params.get("fidelity") or {}
    corpus = spec.get("corpus")
    if corpus and corpus != fidelity.get("primary_corpus"):
        text += f" on the {corpus} corpus"
    if spec.get("ctx") == "alt":
        text += f" at context {fidelity.get('ctx_alt', 'alt')}"
    elif isinstance(spec.get("ctx"), int):
        text += f" at context {spec['ctx']}"
    return text


def variant_names(params: dict) -> dict:
    return {name: variant_name(name, spec or {}, params) for name, spec in (params.get("variants") or {}).items()}


def model_facts(params: dict) -> dict:
    """What the reference model is, in words, from model.source (not typed into the manuscript)."""
    model = params.get("model") or {}
    name = model["name"]
    source = str(model.get("source", ""))
    cite = MODEL_CITATIONS.get(name)
    quantized = ""
    if source == "tiny":
        tiny = model.get("tiny") or {}
        text = (
            f"a randomly initialised {tiny.get('num_hidden_layers', '?')}-layer llama built in code "
            f"(hidden size {tiny.get('hidden_size', '?')}, vocabulary {tiny.get('vocab_size', '?')}), "
            f"with no language ability: this profile exercises the pipeline, it cannot test the claims"
        )
    elif source.startswith(("package:", "gguf:")):
        path = source.split(":", 1)[1]
        file = path.rsplit("/", 1)[-1]
        match = re.search(r"[._-]((?:I?Q\d\w*?)|MXFP4|F16|BF16)(?:\.gguf)$", file, flags=re.I)
        quantized = match.group(1).upper() if match and match.group(1).upper() not in ("F16", "BF16") else ""
        where = f"the PyPI package `{path.split('/')[0]}`" if source.startswith("package:") else "a local file"
        text = f"`{name}`" + (f" [@{cite}]" if cite else "") + f", the GGUF `{file}` from {where}"
        if quantized:
            text += f", itself a {quantized} quant, dequantized to fp32 to serve as the reference"
    elif source.startswith("hf:"):
        text = f"`{name}`" + (f" [@{cite}]" if cite else "") + ", a Hugging Face model directory"
    else:
        text = f"`{name}`"
    return {
        "model": name,
        "model_text": text,
        "reference_format": quantized or DASH,
        "is_tiny": source == "tiny",
        "quantized_reference": bool(quantized),
    }


def run_facts(params: dict) -> dict:
    from .bench import registry

    tasks = (params.get("bench") or {}).get("tasks") or {}

    def of_kind(kind: str) -> list[str]:
        return [t for t in tasks if registry.TASKS.get(t) and registry.TASKS[t].kind == kind]

    mc = [f"{task_name(t)} ({int(tasks[t])})" for t in of_kind("mc")]
    code = [f"{task_name(t)} ({int(tasks[t])})" for t in of_kind("code")]
    greedy = [task_name(t) for t in of_kind("greedy")]
    fidelity = params.get("fidelity") or {}
    stats = params.get("stats") or {}
    names = variant_names(params)
    facts = {
        "profile": params.get("profile"),
        "n_quants": len(params.get("cohort") or {}),
        "n_tasks": len(tasks),
        "tasks_count_text": count(len(tasks), "task"),
        "n_items": sum(int(n) for n in tasks.values()),
        "tasks_text": join_words([f"{task_name(t)} ({count(int(n), 'item')})" for t, n in tasks.items()]),
        "mc_tasks_text": join_words(mc),
        "code_tasks_text": join_words(code),
        "greedy_tasks_text": join_words(greedy),
        "formats_text": join_words(cohort_formats(params.get("cohort") or {})),
        "n_variants": len(names),
        "variants_text": join_words(list(names.values())),
        "ctx": fidelity.get("ctx", DASH),
        "ctx_alt": fidelity.get("ctx_alt", DASH),
        "n_windows": fidelity.get("n_windows", DASH),
        "corpora_text": join_words(list(fidelity.get("corpora") or [])),
        "primary_corpus": fidelity.get("primary_corpus", DASH),
        "ci_pct": f"{100 * float(stats.get('ci', 0.95)):g}%",
        "n_bootstrap": stats.get("n_bootstrap", DASH),
        "n_resamples": stats.get("n_resamples", DASH),
        "min_n": stats.get("min_n", DASH),
        "has_mc": bool(mc),
        "has_code": bool(code),
        "has_greedy": bool(greedy),
    }
    facts.update(model_facts(params))
    return facts


# --- verdicts: one per claim, by the rules the Methods section states --------------------------------


@dataclass(frozen=True)
class Rules:
    """The thresholds of the decision rules; the Methods section prints them from _variables.yml."""

    alpha: float = 0.05  # 1 - stats.ci
    min_outside: int = 3  # quants the benchmark must tell from the reference for a ranking to exist
    paper_rho_full: float = 0.72  # the weaker of the paper's two full-cohort |rho| (Qwen)
    paper_rho_volume: float = 0.55  # the weaker of its two silent-zone |rho(KLD, volume)| (Devstral)
    auroc_useful: float = 0.70  # conventional "acceptable discrimination"
    min_prompts: int = 10  # failed and passed prompts a quant needs for its AUROC to count
    min_failure_quants: int = 3
    router_useful: float = 0.60  # a router right this often would be worth using
    min_routed: int = 1  # routed prompts a pair needs to count (notebook 04's min_disagreements)


@dataclass(frozen=True)
class Verdict:
    verdict: str  # holds | does not hold | undecided
    reason: str

    def as_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "reason": self.reason[:1].upper() + self.reason[1:],
            "holds": self.verdict == "holds",
            "fails": self.verdict == "does not hold",
            "undecided": self.verdict == "undecided",
        }


def distinct_texts(larger: float, smaller: float, decimals: int = 2) -> tuple[str, str]:
    """Both numbers at the fewest decimals (at least `decimals`, at most 6) that print them apart,
    so "0.553 ... more than 0.550" never reads as "0.55 ... more than 0.55"."""
    for d in range(decimals, 7):
        a, b = f"{larger:.{d}f}", f"{smaller:.{d}f}"
        if a != b:
            return a, b
    return a, b


def too_few_check(n: int, who: str, paper_rho: float, alpha: float) -> tuple[bool, str]:
    """A `_first_reason` pair: true when n quants cannot make the paper's |ρ| significant."""
    crit = critical_rho(n, alpha)
    crit_text, paper_text = distinct_texts(crit, paper_rho)
    return (crit > paper_rho, f"with {who} only |ρ| ≥ {crit_text} can reach significance, more than the paper's {paper_text}")


def critical_rho(n: int, alpha: float) -> float:
    """The smallest |Spearman ρ| that reaches two-sided significance at n (t approximation);
    1.0 when n is too small for any ρ to reach it."""
    from scipy import stats

    if n < 4:
        return 1.0
    t = stats.t.ppf(1 - alpha / 2, n - 2)
    return float(t / math.sqrt(n - 2 + t * t))


def _first_reason(*checks: tuple[bool, str]) -> str | None:
    """Power checks in order; the first that fails explains why a claim is undecided. A new power
    number (a power analysis, a noise ceiling) is one more (condition, reason) pair."""
    for failed, reason in checks:
        if failed:
            return reason
    return None


def _num(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def power_check(raw: dict) -> tuple[bool, str]:
    """The noise ceiling's verdict (notebook 07) as a `_first_reason` pair: a claim the benchmark
    was not powered to test is undecided, whatever its correlations say."""
    power = need(raw, "noise_ceiling", "power")
    return (not power.get("powered"), f"the benchmark is underpowered: {power.get('reason') or 'no reason recorded'}")


def verdict_claim1(raw: dict, rules: Rules) -> Verdict:
    full = need(raw, "fidelity_vs_score", "primary.full")
    silent = need(raw, "fidelity_vs_score", "primary.silent")
    n = int(need(raw, "fidelity_vs_score", "n_quants"))
    n_out = n - int(need(raw, "fidelity_vs_score", "n_silent"))
    why = _first_reason(
        (not _num(full.get("rho")), "the full-cohort ρ is undefined"),
        (
            n_out < rules.min_outside,
            f"the benchmark tells {'none' if n_out == 0 else f'only {n_out}'} of the {n} quants "
            f"from the reference (at least {rules.min_outside} needed), so there is no measured "
            f"quality spread to rank",
        ),
        too_few_check(n, f"{n} quants", rules.paper_rho_full, rules.alpha),
        power_check(raw),
    )
    if why:
        return Verdict("undecided", why)
    p_full = full.get("p_holm", full.get("p_perm"))
    p_silent = silent.get("p_holm", silent.get("p_perm"))
    ranks_full = full["rho"] < 0 and _num(p_full) and p_full < rules.alpha
    ranks_silent = _num(silent.get("rho")) and _num(p_silent) and p_silent < rules.alpha
    text = f"full cohort {estimate_text(full)}; silent zone {estimate_text(silent)}"
    if ranks_full and not ranks_silent:
        return Verdict("holds", text)
    if not ranks_full:
        return Verdict("does not hold", "mean KLD does not rank the full cohort: " + text)
    return Verdict("does not hold", "mean KLD still ranks the silent zone: " + text)


def sweep_zones(sweep) -> list[dict]:
    """The lowest-k zones whose ρ exists, smallest k first."""
    if sweep is None or sweep.empty:
        return []
    rows = sweep[(sweep["criterion"] == "lowest_k") & sweep["rho"].notna()].sort_values("threshold")
    return [
        {
            "k": int(r["threshold"]),
            "n": int(r["n"]),
            "rho": float(r["rho"]),
            "p_perm": None if math.isnan(r["p_perm"]) else float(r["p_perm"]),
            "ci_low": None if math.isnan(r["ci_low"]) else float(r["ci_low"]),
            "ci_high": None if math.isnan(r["ci_high"]) else float(r["ci_high"]),
        }
        for _, r in rows.iterrows()
    ]


def verdict_claim2(raw: dict, zones: list[dict], rules: Rules) -> Verdict:
    n = int(need(raw, "fidelity_vs_score", "n_quants"))
    n_out = n - int(need(raw, "fidelity_vs_score", "n_silent"))
    largest = zones[-1] if zones else None
    why = _first_reason(
        (
            len(zones) < 2,
            f"{count(len(zones), 'swept zone', words=True)} {'has' if len(zones) <= 1 else 'have'} "
            f"enough quants for a ρ (at least two are needed)",
        ),
        (
            n_out < rules.min_outside,
            f"the benchmark tells {'none' if n_out == 0 else f'only {n_out}'} of the {n} quants "
            f"from the reference, so no zone can show a ranking",
        ),
        (
            largest is not None and critical_rho(largest["n"], rules.alpha) > rules.paper_rho_full,
            f"the largest zone ({largest['n'] if largest else 0} quants) cannot reach significance at the paper's "
            f"|ρ| = {rules.paper_rho_full:.2f}",
        ),
        power_check(raw),
    )
    if why:
        return Verdict("undecided", why)
    small = zones[0]
    sig_large = largest["rho"] < 0 and largest["p_perm"] is not None and largest["p_perm"] < rules.alpha
    sig_small = small["p_perm"] is not None and small["p_perm"] < rules.alpha
    text = f"k = {small['k']}: {estimate_text(small)}; k = {largest['k']}: {estimate_text(largest)}"
    if sig_large and not sig_small:
        return Verdict("holds", text)
    return Verdict("does not hold", text)


def verdict_claim3(raw: dict, failure, rules: Rules) -> Verdict:
    available = need(raw, "failure_prediction", "prompt_kld_available")
    median = need(raw, "failure_prediction", "auroc_median")
    enough = 0
    if failure is not None and not failure.empty:
        rows = failure[(failure["task"] == "all") & failure["auroc"].notna()]
        enough = int(((rows["n_failed"] >= rules.min_prompts) & (rows["n_passed"] >= rules.min_prompts)).sum())
    why = _first_reason(
        (not available, "this cohort has no per-prompt KLD"),
        (
            enough < rules.min_failure_quants,
            f"{count(enough, 'quant', words=True)} {'has' if enough <= 1 else 'have'} at least {rules.min_prompts} failed "
            f"and {rules.min_prompts} passed prompts (at least {rules.min_failure_quants} needed)",
        ),
        (median is None, "no quant has an AUROC"),
    )
    if why:
        return Verdict("undecided", why)
    text = f"median AUROC {median:.2f} over the quants, against {rules.auroc_useful:.2f} for a useful detector"
    return Verdict("holds" if median < rules.auroc_useful else "does not hold", text)


def pooled_routing(routing, alpha: float, min_routed: int = 1) -> dict:
    """Every routed prompt of every pair pooled, with a Clopper-Pearson interval (an approximation:
    pairs share prompts, so the pooled prompts are not independent)."""
    from scipy import stats

    if routing is None or routing.empty:
        return {"n_routed": 0, "n_correct": 0, "accuracy": None, "ci_low": None, "ci_high": None}
    rows = routing[(routing["task"] == "all") & (routing["n_routed"] >= max(1, min_routed))]
    n, k = int(rows["n_routed"].sum()), int(rows["n_correct"].sum())
    if n == 0:
        return {"n_routed": 0, "n_correct": 0, "accuracy": None, "ci_low": None, "ci_high": None}
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return {"n_routed": n, "n_correct": k, "accuracy": k / n, "ci_low": low, "ci_high": high}


def verdict_claim4(pooled: dict, rules: Rules, prompt_kld: bool = True) -> Verdict:
    why = _first_reason(
        (not prompt_kld, "this cohort has no per-prompt KLD"),
        (
            pooled["n_routed"] == 0,
            f"no pair of quants has {rules.min_routed} or more prompts on which exactly one of them passes and their KLDs differ",
        ),
    )
    if why:
        return Verdict("undecided", why)
    text = (
        f"pooled accuracy {fmt_pct(pooled['accuracy'])}{_ci(pooled['ci_low'], pooled['ci_high'], fmt_pct)} "
        f"over {pooled['n_routed']} routed prompts"
    )
    if pooled["ci_high"] < rules.router_useful:
        return Verdict("holds", text + f", below the {fmt_pct(rules.router_useful)} of a useful router")
    if pooled["ci_low"] >= rules.router_useful:
        return Verdict("does not hold", text + f", above the {fmt_pct(rules.router_useful)} of a useful router")
    return Verdict("undecided", text + f": the interval includes {fmt_pct(rules.router_useful)}, too few prompts to tell")


def verdict_claim5(raw: dict, rules: Rules) -> Verdict:
    volume = need(raw, "volume_direction", "volume.silent")
    direction = need(raw, "volume_direction", "direction.silent")
    n = int(volume.get("n") or 0)
    why = _first_reason(
        (not _num(volume.get("rho")), "the silent-zone ρ of mean KLD with flip volume is undefined"),
        too_few_check(n, f"{n} quants in the silent zone", rules.paper_rho_volume, rules.alpha),
        power_check(raw),
    )
    if why:
        return Verdict("undecided", why)
    tracks_volume = volume["rho"] > 0 and volume.get("p_perm") is not None and volume["p_perm"] < rules.alpha
    tracks_direction = _num(direction.get("rho")) and direction.get("p_perm") is not None and direction["p_perm"] < rules.alpha
    text = f"volume {estimate_text(volume)}; direction {estimate_text(direction)}"
    return Verdict("holds" if tracks_volume and not tracks_direction else "does not hold", text)


def noise_switches(raw: dict) -> dict:
    """`has.*` switches of the noise-ceiling section (notebook 07): which of its sentences have numbers."""
    node = raw.get("noise_ceiling") or {}
    reliability = (node.get("reliability") or {}).get("full") or {}
    attenuation = (node.get("attenuation") or {}).get("full") or {}
    simulation = (node.get("simulation") or {}).get("silent") or {}
    worst = node.get("most_damaged") or {}
    return {
        "noise_reliability": _num(reliability.get("reliability")),
        "noise_tasks": _num(node.get("reliability_task_min")),
        "noise_attenuation": _num(attenuation.get("rho_corrected")),
        "noise_capped": bool(attenuation.get("capped")),
        "noise_simulation": _num(simulation.get("rho_median")),
        "noise_observed": _num(simulation.get("rho_observed")) and _num(simulation.get("share_below_observed")),
        "noise_mdd": _num((node.get("mdd") or {}).get("mdd_median")),
        "noise_worst": bool(worst.get("model")) and _num(worst.get("delta")),
        "noise_worst_z": _num(worst.get("z")),
        "noise_left_out": bool(node.get("tasks_left_out")),
        "powered": bool((node.get("power") or {}).get("powered")),
    }


def noise_text(raw: dict) -> dict:
    """Phrases of the noise-ceiling section that are not single numbers: the tasks too small to
    split, and the simulation's percentile range."""
    node = raw.get("noise_ceiling") or {}
    left_out = [task_name(t) for t in node.get("tasks_left_out") or []]
    low, high = node.get("sim_percentiles") or (None, None)
    return {
        "left_out_text": join_words(left_out) or DASH,
        "n_left_out": len(left_out),
        "sim_range": f"{low}–{high}%" if _num(low) and _num(high) else DASH,
    }


def verdict_summary(verdicts: dict) -> str:
    """ "two hold, one does not and two are undecided for lack of power" (only the non-zero parts)."""
    counts = {v: sum(1 for d in verdicts.values() if d["verdict"] == v) for v in ("holds", "does not hold", "undecided")}

    def word(n):
        if n == len(verdicts) and n > 1:
            return "all " + (NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n))
        return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)

    parts = []
    if counts["holds"]:
        parts.append(f"{word(counts['holds'])} {'holds' if counts['holds'] == 1 else 'hold'}")
    if counts["does not hold"]:
        parts.append(f"{word(counts['does not hold'])} {'does' if counts['does not hold'] == 1 else 'do'} not")
    if counts["undecided"]:
        parts.append(f"{word(counts['undecided'])} {'is' if counts['undecided'] == 1 else 'are'} undecided for lack of power")
    return join_words(parts)


# --- tables ---------------------------------------------------------------------------------------

HEADERS = {
    "quant": "Quant",
    "model": "Quant",
    "bpw": "Bits/weight",
    "top1_disagree": "Top-1 disagreement",
    "composite": "Composite",
    "zone": "Zone",
    "target": "Score",
    "variant": "Variant",
    "n": "n",
    "p_perm": "p",
    "p_holm": "p~Holm~",
    "criterion": "Zone rule",
    "threshold": "Threshold",
    "task": "Task",
    "n_failed": "Failed",
    "n_passed": "Passed",
    "gm_failed": "GM KLD, failed",
    "gm_passed": "GM KLD, passed",
    "auroc": "AUROC",
    "n_disagree": "Disagreements",
    "n_ties": "Ties",
    "n_routed": "Routed",
    "n_correct": "Correct",
    "p_binom": "p (binomial)",
    "n_items": "Items",
    "leapfrogs": "L",
    "drops": "D",
    "volume": "L + D",
    "volume_rate": "Volume share",
    "direction": "f",
    "score_q": "Score",
    "score_ref": "Reference",
    "delta": "Δ score",
    "cohort": "Cohort",
    "pair": "Pair",
}
ZONES = {"full": "full cohort", "silent": "silent zone"}
COHORT_SOURCES = {"apex-quant": "APEX quant", "unsloth-dynamic2": "Unsloth Dynamic 2.0"}
INT_COLUMNS = {
    "n",
    "n_failed",
    "n_passed",
    "n_disagree",
    "n_ties",
    "n_routed",
    "n_correct",
    "n_items",
    "leapfrogs",
    "drops",
    "volume",
    "n_degenerate",
}


def cohort_label(name: str) -> str:
    """'qwen3.6-35b-a3b__apex-quant' -> 'Qwen3.6-35B-A3B (APEX quant)'."""
    model, _, source = name.partition("__")
    parts = [p.upper() if re.fullmatch(r"a?\d+(\.\d+)?[bm]", p) else p for p in model.split("-")]
    text = "-".join(parts)
    text = text[:1].upper() + text[1:]
    return f"{text} ({COHORT_SOURCES.get(source, source)})" if source else text


class Notes:
    """Footnote symbols for refusals: one symbol per distinct reason, listed under the table."""

    def __init__(self, humanize):
        self.reasons: dict[str, str] = {}
        self.humanize = humanize

    def mark(self, reason: str) -> str:
        reason = self.humanize(reason)
        if reason not in self.reasons:
            self.reasons[reason] = NOTE_SYMBOLS[min(len(self.reasons), len(NOTE_SYMBOLS) - 1)]
        return self.reasons[reason]

    def markdown(self) -> str:
        """A `.table-notes` div for after the table's float (inside it, the manuscript's notebook
        output fails); empty when nothing was refused."""
        if not self.reasons:
            return ""
        notes = " ".join(f"{sym}\u00a0Undefined: {reason}." for reason, sym in self.reasons.items())
        return f"::: {{.table-notes}}\n{notes}\n:::\n"


@dataclass
class TableContext:
    variants: dict
    ci_label: str
    min_routed: int = 1
    primary: str = "kld_mean"  # stats.primary_variant
    alpha: float = 0.05  # 1 − the CI level, for intervals the tables compute themselves

    def target(self, value: str) -> str:
        if value == "composite":
            return "composite"
        if value.startswith("score_"):
            return task_name(value[len("score_") :])
        if ":" in value:
            what, task = value.split(":", 1)
            what = {"volume": "flip volume", "direction": "direction f"}.get(what, what)
            return f"{what}, {self.target(task) if task.startswith('score_') or task == 'composite' else task_name(task)}"
        return value

    def humanize(self, reason: str) -> str:
        """Column names inside a refusal reason, as the table names them."""
        for key, name in sorted(self.variants.items(), key=lambda kv: -len(kv[0])):
            reason = re.sub(rf"\b{re.escape(key)}\b", name, reason)
        reason = re.sub(r"\bscore_(\w+)", lambda m: f"{task_name(m.group(1))} score", reason)
        reason = re.sub(r"\b(volume|direction):(\w+)", lambda m: self.target(m.group(0)), reason)
        return reason


def _isnan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def cell(value, column: str) -> str:
    """One table cell, printed by its column's meaning; a missing value is "—"."""
    if _isnan(value):
        return DASH
    if isinstance(value, str):
        return value
    if column in INT_COLUMNS or column == "threshold" and float(value).is_integer():
        return str(int(value))
    kind = value_kind(column)
    if column in ("rho", "ci_low", "ci_high") or kind == "rho":
        return fmt_signed(value)
    if kind == "p":
        return fmt_p(value)
    if column == "accuracy":
        return fmt_pct(value)
    if column in ("gm_ratio", "auroc", "direction"):
        return f"{value:.2f}"
    if column == "delta":
        return _minus(f"{value:+.3f}")
    return fmt_sig(float(value))


def estimate_cell(row, column: str, notes: Notes, fmt=None) -> str:
    """ "−0.72 [−0.86, −0.51]" from a value and its ci_low/ci_high; a refusal as "—†"."""
    value = row.get(column)
    if _isnan(value):
        reason = row.get("refused")
        return DASH + (notes.mark(str(reason)) if isinstance(reason, str) and reason else "")
    fmt = fmt or (lambda v: cell(v, column))
    return fmt(value) + _ci(
        None if _isnan(row.get("ci_low")) else row.get("ci_low"), None if _isnan(row.get("ci_high")) else row.get("ci_high"), fmt
    )


def markdown_table(headers: list[str], rows: list[list[str]], align: str | None = None, group: int = 0) -> str:
    """A pipe table. The first `group` columns label groups of rows: a label repeated from the row
    above is left blank, as a printed table does. (_quarto.yml turns pandoc's column widths off:
    the browser and Typst size columns by their content.)"""
    align = align or "l" + "r" * (len(headers) - 1)
    if not rows:  # a header alone reads as a rendering fault; say that the table is empty
        rows = [["none"] + [DASH] * (len(headers) - 1)]
    if group:
        shown, previous = [], None
        for r in rows:
            same = 0
            while previous is not None and same < group and r[same] == previous[same]:
                same += 1
            shown.append([""] * same + r[same:])
            previous = r
        rows = shown
    headers = [h.replace("|", "\\|") for h in headers]
    rows = [[c.replace("\\|", "|").replace("|", "\\|") for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    dashes = [max(3, min(w, 40)) for w in widths]

    def rule(a, d):
        return (":" + "-" * (d - 1)) if a == "l" else ("-" * (d - 1) + ":")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(rule(a, d) for a, d in zip(align, dashes)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _require(df, columns: list[str], path: Path) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SilentzoneError(
            f"{path}: no column {', '.join(missing)}; the notebook must write it "
            f"(or src/silentzone/paper.py must stop reading it)"
        )


def table_variants_main(df, ctx: TableContext, path: Path) -> str:
    """Claim 1: every variant, full cohort beside silent zone (composite only)."""
    _require(df, ["zone", "variant", "rho", "ci_low", "ci_high", "p_holm", "refused"], path)
    notes = Notes(ctx.humanize)
    rows = []
    df = df[df["target"] == "composite"] if "target" in df.columns else df
    for variant in dict.fromkeys(df["variant"]):
        line = [ctx.variants.get(variant, variant)]
        for zone in ("full", "silent"):
            sel = df[(df["variant"] == variant) & (df["zone"] == zone)]
            if sel.empty:
                line += [DASH, DASH]
                continue
            row = sel.iloc[0].to_dict()
            line += [estimate_cell(row, "rho", notes), cell(row.get("p_holm"), "p_holm")]
        rows.append(line)
    headers = ["Variant", f"Full cohort: ρ [{ctx.ci_label}]", "p~Holm~", f"Silent zone: ρ [{ctx.ci_label}]", "p~Holm~"]
    return markdown_table(headers, rows), notes.markdown()


def table_correlations_long(df, ctx: TableContext, path: Path, by: str) -> str:
    """A correlation table in full, one row per zone and `by` (variant or target)."""
    _require(df, ["zone", by, "n", "rho", "ci_low", "ci_high", "p_perm", "refused"], path)
    notes = Notes(ctx.humanize)
    rows = []
    for _, r in df.iterrows():
        row = r.to_dict()
        label = ctx.variants.get(row[by], row[by]) if by == "variant" else ctx.target(row[by])
        line = [ZONES.get(row["zone"], row["zone"]), label]
        if by == "target" and "variant" in df.columns and df["variant"].nunique() > 1:
            line.insert(1, ctx.variants.get(row["variant"], row["variant"]))
        line += [cell(row["n"], "n"), estimate_cell(row, "rho", notes), cell(row["p_perm"], "p_perm")]
        if "p_holm" in df.columns:
            line.append(cell(row.get("p_holm"), "p_holm"))
        rows.append(line)
    labels = ["Zone", "Variant" if by == "variant" else "Score"]
    if by == "target" and "variant" in df.columns and df["variant"].nunique() > 1:
        labels.insert(1, "Variant")
    numbers = ["n", f"ρ [{ctx.ci_label}]", "p"] + (["p~Holm~"] if "p_holm" in df.columns else [])
    return markdown_table(labels + numbers, rows, "l" * len(labels) + "r" * len(numbers), group=len(labels) - 1), notes.markdown()


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def table_cohort(df, ctx: TableContext, path: Path) -> str:
    _require(df, ["model"], path)
    columns = [c for c in df.columns if c != "model"]
    headers = ["Model"] + [_capital(ctx.variants[c]) if c in ctx.variants else HEADERS.get(c, c) for c in columns]
    rows = [[str(r["model"])] + [cell(r[c], c) for c in columns] for _, r in df.iterrows()]
    return markdown_table(headers, rows), ""


def table_sweep(df, ctx: TableContext, path: Path) -> str:
    _require(df, ["criterion", "threshold", "n", "rho", "ci_low", "ci_high", "p_perm", "refused"], path)
    notes = Notes(ctx.humanize)
    names = {"margin": "margin", "lowest_k": "k lowest KLD"}
    rows = [
        [
            names.get(r["criterion"], r["criterion"]),
            cell(r["threshold"], "threshold"),
            cell(r["n"], "n"),
            estimate_cell(r.to_dict(), "rho", notes),
            cell(r["p_perm"], "p_perm"),
        ]
        for _, r in df.iterrows()
    ]
    return markdown_table(["Zone rule", "Threshold", "n", f"ρ [{ctx.ci_label}]", "p"], rows, "lrrrr", group=1), notes.markdown()


def table_failure(df, ctx: TableContext, path: Path) -> str:
    _require(df, ["model", "task", "n_failed", "n_passed", "gm_ratio", "ci_low", "ci_high", "auroc", "refused"], path)
    notes = Notes(ctx.humanize)
    rows = [
        [
            str(r["model"]),
            cell(r["n_failed"], "n_failed"),
            cell(r["n_passed"], "n_passed"),
            estimate_cell(r.to_dict(), "gm_ratio", notes),
            cell(r["auroc"], "auroc"),
        ]
        for _, r in df[df["task"] == "all"].iterrows()
    ]
    return markdown_table(["Quant", "Failed", "Passed", f"GM ratio [{ctx.ci_label}]", "AUROC"], rows), notes.markdown()


def table_routing(df, ctx: TableContext, path: Path) -> str:
    _require(df, ["model_a", "model_b", "task", "n_disagree", "n_routed", "accuracy", "ci_low", "ci_high", "p_binom"], path)
    sel = df[(df["task"] == "all") & (df["n_routed"] >= max(1, ctx.min_routed))].sort_values(["accuracy", "model_a", "model_b"])
    rows = [
        [
            f"{r['model_a']} vs. {r['model_b']}",
            cell(r["n_disagree"], "n_disagree"),
            cell(r["n_routed"], "n_routed"),
            estimate_cell(r.to_dict(), "accuracy", Notes(ctx.humanize)),
            cell(r["p_binom"], "p_binom"),
        ]
        for _, r in sel.iterrows()
    ]
    return markdown_table(["Pair", "Disagreements", "Routed", f"Accuracy [{ctx.ci_label}]", "p (binomial)"], rows), ""


def _range_text(values, fmt) -> str:
    """ "0.61 (0.52–0.70)": the median and the range of a column over quants, "—" when empty."""
    values = [v for v in values if not _isnan(v)]
    if not values:
        return DASH
    import numpy as np

    return f"{fmt(float(np.median(values)))} ({fmt(min(values))}–{fmt(max(values))})"


def table_failure_by_task(df, ctx: TableContext, path: Path) -> str:
    """Claim 3 per task: each task's prompts are their own failure-prediction experiment."""
    _require(df, ["model", "task", "n_failed", "n_passed", "gm_ratio", "auroc"], path)
    rows = []
    for task, g in df[df["task"] != "all"].groupby("task", sort=True):
        scored = g[g["auroc"].notna()]
        rows.append(
            [
                task_name(str(task)),
                str(len(scored)),
                str(int(g["n_failed"].sum())),
                str(int(g["n_passed"].sum())),
                _range_text(scored["gm_ratio"].tolist(), lambda v: f"{v:.2f}"),
                _range_text(scored["auroc"].tolist(), lambda v: f"{v:.2f}"),
            ]
        )
    return markdown_table(["Task", "Quants", "Failed", "Passed", "GM ratio, median (range)", "AUROC, median (range)"], rows), ""


def table_routing_by_task(df, ctx: TableContext, path: Path) -> str:
    """Claim 4 per task: every routed prompt of the task's pairs pooled (Clopper–Pearson, as the
    pooled figure in the text; pairs share prompts, so the interval is an approximation)."""
    _require(df, ["model_a", "model_b", "task", "n_routed", "n_correct"], path)
    rows = []
    for task, g in df[df["task"] != "all"].groupby("task", sort=True):
        pooled = pooled_routing(g.assign(task="all"), ctx.alpha, ctx.min_routed)
        text = (
            DASH
            if pooled["accuracy"] is None
            else fmt_pct(pooled["accuracy"]) + _ci(pooled["ci_low"], pooled["ci_high"], fmt_pct)
        )
        rows.append(
            [task_name(str(task)), str(int((g["n_routed"] >= max(1, ctx.min_routed)).sum())), str(pooled["n_routed"]), text]
        )
    return markdown_table(["Task", "Pairs", "Routed prompts", f"Pooled accuracy [{ctx.ci_label}]"], rows), ""


def table_flips(df, ctx: TableContext, path: Path) -> str:
    _require(df, ["model", "task", "n_items", "leapfrogs", "drops", "volume_rate", "direction", "delta"], path)
    sel = df[df["task"] == "composite"]
    columns = ["n_items", "leapfrogs", "drops", "volume_rate", "direction", "delta"]
    rows = [[str(r["model"])] + [cell(r[c], c) for c in columns] for _, r in sel.iterrows()]
    return markdown_table(["Quant", "Items", "Leapfrogs L", "Drops D", "Volume share", "Direction f", "Δ score"], rows), ""


def table_published_main(df, ctx: TableContext, path: Path) -> str:
    """The first fidelity metric of each published cohort, full cohort beside silent zone."""
    _require(df, ["cohort", "zone", "variant", "n", "rho", "ci_low", "ci_high", "p_perm", "refused"], path)
    notes = Notes(ctx.humanize)
    rows = []
    for cohort in dict.fromkeys(df["cohort"]):
        part = df[df["cohort"] == cohort]
        first = part["variant"].iloc[0]
        line = [f"{cohort_label(cohort)}: {first}"]
        for zone in ("full", "silent"):
            sel = part[(part["zone"] == zone) & (part["variant"] == first)]
            if sel.empty:
                line += [DASH, DASH, DASH]
                continue
            row = sel.iloc[0].to_dict()
            line += [cell(row["n"], "n"), estimate_cell(row, "rho", notes), cell(row["p_perm"], "p_perm")]
        rows.append(line)
    # the metric shares the cohort's column: eight columns do not fit the HTML text column
    headers = [
        "Cohort: fidelity metric",
        "n",
        f"Full cohort: ρ [{ctx.ci_label}]",
        "p",
        "n",
        f"Silent zone: ρ [{ctx.ci_label}]",
        "p",
    ]
    return markdown_table(headers, rows, "lrrrrrr"), notes.markdown()


def table_published_full(df, ctx: TableContext, path: Path) -> str:
    _require(df, ["cohort", "zone", "variant", "n", "rho", "ci_low", "ci_high", "p_perm", "p_holm", "refused"], path)
    notes = Notes(ctx.humanize)
    rows = [
        [
            cohort_label(r["cohort"]),
            ZONES.get(r["zone"], r["zone"]),
            str(r["variant"]),
            cell(r["n"], "n"),
            estimate_cell(r.to_dict(), "rho", notes),
            cell(r["p_perm"], "p_perm"),
            cell(r["p_holm"], "p_holm"),
        ]
        for _, r in df.iterrows()
    ]
    return markdown_table(
        ["Cohort", "Zone", "Fidelity", "n", f"ρ [{ctx.ci_label}]", "p", "p~Holm~"], rows, "lllrrrr", group=2
    ), notes.markdown()


def table_noise_reliability(df, ctx: TableContext, path: Path) -> str:
    """Split-half reliability across quants per zone and score (notebook 07)."""
    _require(df, ["zone", "score", "n_quants", "n_items", "reliability", "low", "high", "reliability_pearson", "refused"], path)
    notes = Notes(ctx.humanize)
    rows = []
    for _, r in df.iterrows():
        row = r.to_dict()
        value = row["reliability"]
        if _isnan(value):
            shown = DASH + (notes.mark(str(row["refused"])) if isinstance(row["refused"], str) and row["refused"] else "")
        else:
            shown = fmt_sig(value, 2) + _ci(row["low"], row["high"], lambda v: fmt_sig(v, 2))
        rows.append(
            [
                ZONES.get(row["zone"], row["zone"]),
                ctx.target(row["score"]),
                cell(row["n_quants"], "n"),
                cell(row["n_items"], "n_items"),
                shown,
                DASH if _isnan(row["reliability_pearson"]) else fmt_sig(row["reliability_pearson"], 2),
            ]
        )
    headers = [
        "Zone",
        "Score",
        "Quants",
        "Items",
        f"Reliability, Spearman [{ctx.ci_label.replace('CI', 'of splits')}]",
        "Pearson",
    ]
    return markdown_table(headers, rows, "llrrrr", group=1), notes.markdown()


def table_detectable_difference(df, ctx: TableContext, path: Path) -> str:
    """Per quant, most damaged first: Δ, paired SE, z, the bootstrap half-width and the MDD, in
    percentage points of the composite (notebook 07)."""
    _require(df, ["model", "primary", "delta", "se", "z", "half_width", "mdd", "in_zone"], path)
    rows = [
        [
            str(r["model"]),
            cell(r["primary"], "primary"),
            *(DASH if _isnan(r[c]) else fmt_points(r[c]) for c in ("delta", "se")),
            DASH if _isnan(r["z"]) else _minus(f"{r['z']:+.2f}"),
            *(DASH if _isnan(r[c]) else fmt_points(r[c]) for c in ("half_width", "mdd")),
            "yes" if str(r["in_zone"]) == "True" else "no",
        ]
        for _, r in df.iterrows()
    ]
    # short headers: eight columns must fit the text column (the browser test measures it); units in the note
    headers = ["Quant", _capital(ctx.variants.get(ctx.primary, ctx.primary)), "Δ", "SE", "z", "Half-width", "MDD", "Silent"]
    note = (
        "Δ: composite of the quant minus the reference's; SE: its paired standard error; z = Δ/SE; half-width of the "
        "paired-bootstrap interval; MDD: minimal detectable difference. Δ, SE, half-width and MDD in percentage points."
    )
    return markdown_table(headers, rows, "lrrrrrrl"), note


# (notebook, csv stem) -> [(folder, name, formatter)]: the main text's tables and the appendix's.
TABLES = {
    ("01-fidelity-vs-score", "variants_full_vs_silent"): [
        ("main", "variants", table_variants_main),
        ("appendix", "variants", lambda df, ctx, p: table_correlations_long(df, ctx, p, "variant")),
    ],
    ("01-fidelity-vs-score", "primary_by_task"): [
        ("appendix", "primary_by_task", lambda df, ctx, p: table_correlations_long(df, ctx, p, "target"))
    ],
    ("01-fidelity-vs-score", "cohort_summary"): [("appendix", "cohort", table_cohort)],
    ("02-silent-zone-sweep", "zone_sweep"): [("appendix", "zone_sweep", table_sweep)],
    ("03-failure-prediction", "failure_prediction"): [
        ("main", "failure_by_task", table_failure_by_task),
        ("appendix", "failure_prediction", table_failure),
    ],
    ("04-routing", "routing"): [("main", "routing_by_task", table_routing_by_task), ("appendix", "routing", table_routing)],
    ("05-volume-direction", "flips"): [("appendix", "flips", table_flips)],
    ("05-volume-direction", "flip_correlations"): [
        ("appendix", "flip_correlations", lambda df, ctx, p: table_correlations_long(df, ctx, p, "target"))
    ],
    ("06-published-cohorts", "published_correlations"): [
        ("main", "published", table_published_main),
        ("appendix", "published", table_published_full),
    ],
    ("07-noise-ceiling", "reliability"): [("appendix", "noise_reliability", table_noise_reliability)],
    ("07-noise-ceiling", "detectable_difference"): [("appendix", "detectable_difference", table_detectable_difference)],
}


def read_table(results: Path, notebook: str, stem: str):
    import pandas as pd

    path = results / "tables" / notebook / f"{stem}.csv"
    if not path.exists():
        return None
    return pd.read_csv(path, keep_default_na=True)


def write_tables(results: Path, paper_dir: Path, ctx: TableContext) -> int:
    """Formatted markdown under paper/tables/main/ and appendix/: NAME.md, the table, and
    NAME-notes.md, what its footnote symbols mean (empty when there are none)."""
    import pandas as pd

    count = 0
    for (notebook, stem), outputs in TABLES.items():
        path = results / "tables" / notebook / f"{stem}.csv"
        if not path.exists():
            raise SilentzoneError(f"{path}: missing; rerun `silentzone analyze {notebook}` (the manuscript includes it)")
        df = pd.read_csv(path)
        if "refused" in df.columns:
            df["refused"] = df["refused"].astype(object).where(df["refused"].notna(), None)
        for folder, name, formatter in outputs:
            table, notes = formatter(df, ctx, path)
            io.write_text(paper_dir / "tables" / folder / f"{name}.md", table)
            io.write_text(paper_dir / "tables" / folder / f"{name}-notes.md", notes)
            count += 1
    return count


# --- the families side by side: this run, the paper's two models, the committed runs of other profiles --

# (row label, the paper's cell, a run's cell); a cell is (format, dotted variables) or None (—). The
# paper's values are this run's `paper.*` variables; each run's cell reads that run's own variables.
SLASH, RANGE = "{} / {}", "{} to {}"
SIDE_BY_SIDE_ROWS = [
    ("Model", (SLASH, ("paper.qwen.model", "paper.devstral.model")), ("{}", ("run.model",))),
    ("Quants, full cohort", (SLASH, ("paper.qwen.n_quants", "paper.devstral.n_quants")), ("{}", ("fidelity_vs_score.n_quants",))),
    ("Benchmark items per model (tasks)", None, ("{} ({})", ("run.n_items", "run.n_tasks"))),
    (
        "ρ(mean KLD, score), full cohort",
        (SLASH, ("paper.qwen.rho_full", "paper.devstral.rho_full")),
        ("{}", ("fidelity_vs_score.primary.full.rho",)),
    ),
    (
        "ρ(mean KLD, score), silent zone",
        (SLASH, ("paper.qwen.rho_silent", "paper.devstral.rho_silent")),
        ("{}", ("fidelity_vs_score.primary.silent.rho",)),
    ),
    ("Quants in the silent zone", None, ("{}", ("fidelity_vs_score.n_silent",))),
    ("Measurement variants", ("{}", ("paper.n_variants",)), ("{}", ("fidelity_vs_score.n_variants",))),
    (
        "ρ(top-1 agreement, score), full / silent",
        (SLASH, ("paper.top1_rho_full", "paper.top1_rho_silent")),
        (SLASH, ("fidelity_vs_score.top1_agreement.full.rho", "fidelity_vs_score.top1_agreement.silent.rho")),
    ),
    (
        "Per-prompt GM ratio, failed / passed",
        (RANGE, ("paper.gm_ratio_low", "paper.gm_ratio_high")),
        ("{}", ("derived.gm_ratio_range",)),
    ),
    ("KLD-router accuracy", (RANGE, ("paper.routing_low", "paper.routing_high")), ("{}", ("derived.routing_range",))),
    (
        "ρ(mean KLD, flip volume), silent zone",
        (SLASH, ("paper.qwen.rho_volume_silent", "paper.devstral.rho_volume_silent")),
        ("{}", ("volume_direction.volume.silent.rho",)),
    ),
    ("Most damaged quant, paired z", None, ("{}", ("noise_ceiling.most_damaged.z",))),
    ("Split-half reliability of the composite", None, ("{}", ("noise_ceiling.reliability.full.reliability",))),
] + [(f"Claim {i} verdict", None, ("{}", (f"verdicts.claim{i}.verdict",))) for i in range(1, 6)]


def load_families(profile: str, published: Path = PUBLISHED_DIR) -> dict[str, dict]:
    """The paper variables of every committed run of another profile, by profile name."""
    families = {}
    for path in sorted(Path(published).glob("*/_variables.yml")):
        name = path.parent.name
        if name != profile:
            variables = yaml.safe_load(path.read_text(encoding="utf-8"))
            if not isinstance(variables, dict) or "run" not in variables:
                raise SilentzoneError(
                    f"{path}: not a run's paper variables (no `run` section); republish it with "
                    "`python scripts/publish_run.py RUN_DIR`"
                )
            families[name] = variables
    return families


def side_by_side_cell(variables: dict, spec) -> str:
    """One cell: its variables formatted, a missing one as —, and — alone when none exists."""
    if spec is None:
        return DASH
    fmt, keys = spec
    values = [_lookup(variables, key) for key in keys]
    values = [DASH if v is None or v == "" else str(v) for v in values]
    return DASH if all(v == DASH for v in values) else fmt.format(*values)


def table_side_by_side(variables: dict, families: dict[str, dict]) -> str:
    """The paper's models, this run and each committed run of another profile, one column each."""
    runs = [variables, *families.values()]
    headers = ["Quantity", "Paper: Qwen / Devstral", f"This run: {variables['run'].get('profile')}"] + [
        f"Committed run: {name}" for name in families
    ]
    rows = [
        [label, side_by_side_cell(variables, paper_cell)] + [side_by_side_cell(run, run_cell) for run in runs]
        for label, paper_cell, run_cell in SIDE_BY_SIDE_ROWS
    ]
    return markdown_table(headers, rows, align="l" * len(headers))


# --- inputs and render ----------------------------------------------------------------------------


def rules_from(params: dict) -> Rules:
    """alpha from stats.ci; the prompt and pair minimums are the notebooks' own, so the verdicts
    count what the figures show."""
    ci = float(params["stats"]["ci"])
    min_routed = params["notebooks"]["04-routing"]["min_disagreements"]
    return Rules(alpha=round(1 - ci, 10), min_prompts=Rules.min_prompts, min_routed=int(min_routed))


def write_inputs(params: dict, paper_dir: Path = PAPER_DIR) -> None:
    results = DEFAULT.results
    paper_dir = Path(paper_dir)
    raw = load_numbers(results)
    facts = run_facts(params)
    min_n = facts["min_n"] if isinstance(facts["min_n"], int) else None
    variables = build_variables(results, paper_dir, min_n)
    rules = rules_from(params)
    variables["run"] = facts

    sweep = read_table(results, "02-silent-zone-sweep", "zone_sweep")
    failure = read_table(results, "03-failure-prediction", "failure_prediction")
    routing = read_table(results, "04-routing", "routing")
    zones = sweep_zones(sweep)
    pooled = pooled_routing(routing, rules.alpha, rules.min_routed)
    n_quants = int(need(raw, "fidelity_vs_score", "n_quants"))
    n_silent = int(need(raw, "fidelity_vs_score", "n_silent"))
    variables["derived"] = {
        "n_outside": n_quants - n_silent,
        "critical_rho_full": f"{critical_rho(n_quants, rules.alpha):.2f}",
        "critical_rho_silent": f"{critical_rho(n_silent, rules.alpha):.2f}",
        "sweep_small": format_value(zones[0], min_n=min_n) if zones else {"text": DASH, "k": DASH, "n": DASH},
        "sweep_large": format_value(zones[-1], min_n=min_n) if zones else {"text": DASH, "k": DASH, "n": DASH},
        "sweep_n_zones": len(zones),
        # ranges for the side-by-side table: one dash, not "— to —", when a range does not exist
        "gm_ratio_range": value_range(raw, "failure_prediction", "gm_ratio_min", "gm_ratio_max"),
        "routing_range": value_range(raw, "routing", "accuracy_min", "accuracy_max"),
        "routing_pooled": {
            "n_routed": pooled["n_routed"],
            "n_correct": pooled["n_correct"],
            "text": DASH
            if pooled["accuracy"] is None
            else fmt_pct(pooled["accuracy"]) + _ci(pooled["ci_low"], pooled["ci_high"], fmt_pct),
        },
        "noise": noise_text(raw),
    }
    verdicts = {
        "claim1": verdict_claim1(raw, rules).as_dict(),
        "claim2": verdict_claim2(raw, zones, rules).as_dict(),
        "claim3": verdict_claim3(raw, failure, rules).as_dict(),
        "claim4": verdict_claim4(pooled, rules, bool(raw.get("routing", {}).get("prompt_kld_available", True))).as_dict(),
        "claim5": verdict_claim5(raw, rules).as_dict(),
    }
    variables["verdicts"] = {**verdicts, "summary": verdict_summary(verdicts)}
    variables["rules"] = {
        "alpha": f"{rules.alpha:g}",
        "min_outside": rules.min_outside,
        "paper_rho_full": f"{rules.paper_rho_full:.2f}",
        "paper_rho_volume": f"{rules.paper_rho_volume:.2f}",
        "auroc_useful": f"{rules.auroc_useful:.2f}",
        "min_prompts": rules.min_prompts,
        "min_failure_quants": rules.min_failure_quants,
        "router_useful": fmt_pct(rules.router_useful),
        "min_routed": rules.min_routed,
    }
    # `when-meta` switches: sentences that only make sense when their numbers exist.
    full_top1 = raw.get("fidelity_vs_score", {}).get("top1_agreement") or {}
    variables["has"] = {
        "top1": all(_num((full_top1.get(z) or {}).get("rho")) for z in ("full", "silent")),
        "sweep": len(zones) >= 2,
        "sweep_margin": sweep is not None and bool(((sweep["criterion"] == "margin") & sweep["rho"].notna()).any()),
        "sweep_one": len(zones) == 1,
        "failure": bool(raw.get("failure_prediction", {}).get("n_models")),
        "routing": bool(raw.get("routing", {}).get("n_pairs")),
        "direction": _num(((raw.get("volume_direction", {}).get("direction") or {}).get("silent") or {}).get("rho")),
        "silent_subset": 0 < n_silent < n_quants,
        "tiny_model": facts["is_tiny"],
        "quantized_reference": facts["quantized_reference"],
        "mc": facts["has_mc"],
        "code": facts["has_code"],
        "greedy": facts["has_greedy"],
        "single_task": facts["n_tasks"] == 1,
        **noise_switches(raw),
    }
    io.write_text(paper_dir / "_variables.yml", yaml.safe_dump(variables, sort_keys=True, allow_unicode=True))

    for kind in ("figures", "tables"):
        target = paper_dir / kind
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for path in sorted((results / kind).glob("*/*")):
            dest = target / path.parent.name / path.name
            io.copy_file(path, dest)
    # the executed notebooks, for `{{< embed >}}`: each figure comes from the notebook that made it,
    # and the rendered paper links it to that notebook's page
    notebooks = paper_dir / "notebooks"
    if notebooks.exists():
        shutil.rmtree(notebooks)
    notebooks.mkdir(parents=True)
    for path in sorted((results / "notebooks").glob("*.ipynb")):
        io.copy_file(path, notebooks / path.name)
    ctx = TableContext(
        variants=variant_names(params),
        ci_label=f"{facts['ci_pct']} CI",
        min_routed=rules.min_routed,
        primary=params["stats"]["primary_variant"],
        alpha=rules.alpha,
    )
    n_tables = write_tables(results, paper_dir, ctx)
    families = load_families(str(facts["profile"]))
    io.write_text(paper_dir / "tables" / f"{SIDE_BY_SIDE_TABLE}.md", table_side_by_side(variables, families))
    n_tables += 1
    print(f"{paper_dir}/_variables.yml: verdicts {', '.join(v['verdict'] for v in verdicts.values())}; {n_tables} tables")


# --- the rendered paper against its numbers ------------------------------------------------------

_FENCE_OPEN = re.compile(r"^(:{3,})\s*\{(.*)\}\s*$")
_FENCE_CLOSE = re.compile(r"^(:{3,})\s*$")
_VAR = re.compile(r"\{\{< var ([\w.]+) >\}\}")


_PLAIN = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', NBSP: " "})  # pandoc's typography


def _lookup(variables: dict, dotted: str):
    node = variables
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _block_visible(attributes: str, variables: dict, html: bool) -> bool:
    """Whether a `::: {...}` block is in the output: content-visible/-hidden on has.* or the format."""
    fmt = "html" if html else "typst"
    visible = True
    for when, kind, value in re.findall(r"(when|unless)-(meta|format)=\"([^\"]+)\"", attributes):
        hit = bool(_lookup(variables, value)) if kind == "meta" else value in (fmt, "pdf" if not html else "html")
        visible &= hit if when == "when" else not hit
    if ".content-hidden" in attributes:
        visible = not visible
    return visible


def visible_variables(qmd_text: str, variables: dict, html: bool = True) -> list[tuple[str, str]]:
    """(key, printed value) of every `{{< var >}}` in a block the rendered output shows."""
    stack, found = [], []
    for line in qmd_text.splitlines():
        if m := _FENCE_OPEN.match(line):
            stack.append(_block_visible(m.group(2), variables, html))
            continue
        if _FENCE_CLOSE.match(line) and stack:
            stack.pop()
            continue
        if all(stack):
            for key in _VAR.findall(line):
                node = _lookup(variables, key)
                if node is not None and not isinstance(node, (dict, list, bool)):
                    found.append((key, str(node)))
    return found


def html_text(html: str) -> str:
    """The visible words of a rendered HTML page (tags, scripts and styles dropped, entities read,
    pandoc's typographic quotes and spaces made plain)."""
    import html as html_lib

    body = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S | re.I)
    return html_lib.unescape(re.sub(r"<[^>]+>", "", body)).translate(_PLAIN)


def numbers_missing_from_html(qmd_text: str, variables: dict, html: str) -> list[str]:
    """The `{{< var >}}` values a rendered paper should show and does not: [] when the HTML prints
    exactly the numbers of `variables` (a committed paper checked against its committed numbers)."""
    text = re.sub(r"\s+", " ", html_text(html))
    return sorted(
        {
            f"{key} = {value!r}"
            for key, value in visible_variables(qmd_text, variables)
            if not all(piece in text for piece in printed_pieces(value))
        }
    )


_CITATION = re.compile(r"\s*\[@[^\]]*\]\s*|\s*(?<![\w.])@[\w:-]+\s*")


def printed_pieces(value: str) -> list[str]:
    """What of a variable's markdown the reader sees verbatim: code marks dropped, and the text
    split where a citation stands (pandoc prints "[@key]" as "(Author et al. 2025)")."""
    plain = re.sub(r"\s+", " ", value.replace("`", "").translate(_PLAIN))
    return [piece for piece in (p.strip() for p in _CITATION.split(plain)) if piece] or [plain]


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_STOP = ("stack traceback:", "Stack trace:")
_NEW_RECORD = ("WARN", "ERROR", "Error", "Rendering", "Output created", "[")


def _error_start(line: str) -> str | None:
    """The message of a line that opens an error: Quarto's "ERROR: ...", pandoc/Lua's "Error ...",
    Typst's "error: ..." (Quarto prints it after "[typst]: Compiling ...")."""
    text = line.strip()
    if text.startswith(("ERROR", "Error")):
        return re.sub(r"^(?:ERROR|Error)(?:\[[^\]]*\])?:\s*", "", text)
    match = re.search(r"\berror(?:\[[^\]]*\])?:\s*(.*)", text)
    return match.group(1) if match else None


def _is_stack(text: str) -> bool:
    return (
        text.startswith(("at ", "[C]:", "(...tail calls...)"))
        or "│" in text
        or bool(re.search(r"\.(?:lua|ts|js):\d+:? in ", text))
    )


def quarto_error(output: str) -> str:
    """Quarto's own error message from its output, as one line: each error line with the lines that
    continue it, without stack lines and without the path of Quarto's own filters."""
    lines = [_ANSI.sub("", line).rstrip() for line in output.splitlines()]
    messages, i = [], 0
    while i < len(lines):
        first = _error_start(lines[i])
        if first is None:
            i += 1
            continue
        parts, j = [first], i + 1
        while j < len(lines):
            text = lines[j].strip()
            if not text or text in _STOP or text.startswith(_NEW_RECORD):
                break
            if not _is_stack(text):
                location = re.match(r"┌─\s*(\S+)", text)
                parts.append(f"(at {location.group(1)})" if location else text)
            j += 1
        messages.append(" ".join(p for p in parts if p))
        i = j
    if not messages:
        rest = [s for s in (line.strip() for line in lines) if s and not _is_stack(s) and s not in _STOP]
        messages = rest[-1:] or ["(no output)"]
    text = "; ".join(dict.fromkeys(messages))
    text = re.sub(r"\S*/resources/filters/\S*?([\w.-]+\.lua)", r"\1", text)
    return text if len(text) <= 600 else text[:597] + "..."


def quarto_version(quarto: str) -> tuple[int, ...]:
    proc = subprocess.run([quarto, "--version"], capture_output=True, text=True)
    match = re.match(r"(\d+)\.(\d+)", proc.stdout.strip())
    return tuple(int(x) for x in match.groups()) if match else (0, 0)


def move_notebook_figures(paper_dir: Path, out: Path | None) -> None:
    """Quarto extracts each embedded notebook's figures to paper/notebooks/NAME_files/, beside the
    notebook, while its rendered page (_output/notebooks/NAME-preview.html) links them relative to
    itself: move them there, so the notebook pages show their figures and paper/notebooks/ holds
    exactly what `paper inputs` wrote (its DVC hash stays valid after a render)."""
    for extracted in sorted((paper_dir / "notebooks").glob("*_files")):
        if out is None:
            shutil.rmtree(extracted)
            continue
        target = out / "notebooks" / extracted.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(extracted), str(target))


def render(paper_dir: Path = PAPER_DIR) -> None:
    paper_dir = Path(paper_dir)
    quarto = shutil.which("quarto")
    if quarto is None:
        raise SilentzoneError(
            f"quarto: not installed, so {paper_dir}/ was not rendered (all other stages completed); {QUARTO_HELP}"
        )
    version = quarto_version(quarto)
    if version < QUARTO_MIN:
        raise SilentzoneError(
            f"quarto {'.'.join(map(str, version))} is too old for {paper_dir}/ (manuscript projects and "
            f"Typst PDF need >= {'.'.join(map(str, QUARTO_MIN))}); {QUARTO_HELP}"
        )
    start = time.perf_counter()
    out = paper_dir / "_output"
    try:
        proc = subprocess.run([quarto, "render", str(paper_dir)], capture_output=True, text=True)
    finally:
        move_notebook_figures(paper_dir, out if out.is_dir() else None)
    if proc.returncode != 0:
        raise SilentzoneError(f"quarto render {paper_dir} failed: {quarto_error(proc.stderr + proc.stdout)}")
    made = [p.name for p in (out / "index.html", out / "index.pdf") if p.exists()]
    if len(made) < 2:
        raise SilentzoneError(
            f"quarto render {paper_dir}: no {'index.html' if 'index.html' not in made else 'index.pdf'} "
            f"in {out}; check the formats in {paper_dir}/_quarto.yml (html and typst)"
        )
    print(f"{out}: {', '.join(made)} ({time.perf_counter() - start:.1f} s)")
