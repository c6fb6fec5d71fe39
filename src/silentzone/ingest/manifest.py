"""A cohort measured elsewhere -> data/processed/{cohort,items}.parquet, from a small manifest.

The manifest (YAML, paths relative to it) names every file and the model it belongs to:

    reference: BF16                  # this cohort's reference; written as `reference`
    fidelity:                        # quant -> llama.cpp `--kl-divergence` log
      Q8_0: logs/kld-Q8_0.log
    bench:                           # model -> lm-eval samples files or folders, LiveCodeBench *_eval_all.json
      BF16: [lm_eval/BF16]
      Q8_0: [lm_eval/Q8_0, lcb/Q8_0_eval_all.json]
    bpw: {BF16: 16.0, Q8_0: 8.5}     # optional; NaN where absent
    lm_eval: {metrics: {arc_easy: acc}, filters: {gsm8k: strict-match}}   # optional
    livecodebench: {release: release_v5, start_date: 2024-08-01, end_date: 2025-02-01}

Everything is read and checked before anything is written: the same quants in `fidelity` and
`bench`, file names that agree with the quant they are filed under, the same tasks and items for
every model. The variants llama.cpp prints become cohort columns; the rest stay NaN. The tables
follow silentzone.schema (`model` names the reference and the quants in both).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import yaml

from ..errors import SilentzoneError
from ..schema import COMPOSITE, ITEM_KEYS, MODEL, REFERENCE, SCORE_PREFIX, scores, write_tables
from . import VARIANTS, checks, cohort_csv, identity, livecodebench, llamacpp_log, lm_eval

KEYS = {"reference", "fidelity", "bench", "bpw", "lm_eval", "livecodebench"}
OPTION_KEYS = {"lm_eval": {"metrics", "filters"}, "livecodebench": {"release", "start_date", "end_date"}}
QUANT_MAPS = ("fidelity", "bench", "bpw")  # keyed by model: one entry per model, case-insensitively


def fidelity_variants(stats: dict) -> dict:
    """The cohort variants a llama.cpp log determines (all oriented larger = further)."""
    return {
        "kld_mean": stats["kld_mean"],
        "kld_median": stats["kld_median"],
        "kld_p90": stats.get("kld_p90", math.nan),
        "kld_p99": stats["kld_p99"],
        "kld_p99_9": stats["kld_p99_9"],
        "ppl_ratio": stats["ppl_ratio"],
        "abs_dln_ppl": abs(stats["ln_ppl_ratio"]),
        "top1_disagree": 1.0 - stats["same_top_p"],
        "rms_dp": stats["rms_dp"],
    }


class Manifest:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise SilentzoneError(f"{self.path}: manifest not found")
        text = checks.read_text(self.path, "a YAML manifest")
        try:
            self.node = yaml.compose(text)
            self.data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise SilentzoneError(
                f"{self.path}:{mark.line + 1 if mark else 1}: invalid YAML ({getattr(exc, 'problem', exc)})"
            ) from None
        if not isinstance(self.data, dict):
            raise SilentzoneError(f"{self.path}:1: expected a mapping with reference, fidelity and bench")
        for key in self.data:
            if key not in KEYS:
                self.fail(f"unknown key {key!r}; allowed: {', '.join(sorted(KEYS))}", key)
        for key in ("reference", "fidelity", "bench"):
            if key not in self.data:
                raise SilentzoneError(f"{self.path}:1: missing `{key}`; see docs/ingest.md for the manifest format")
        self._check_shape()
        self.reference = str(self.data["reference"])
        self.fidelity = {str(k): v for k, v in (self.data["fidelity"] or {}).items()}
        self.bench = {str(k): v if isinstance(v, list) else [v] for k, v in (self.data["bench"] or {}).items()}

    def _check_shape(self) -> None:
        """Every key once (YAML would keep the last of two silently), one entry per model, paths as
        text, options with known keys, a named reference and no quant posing as it."""
        _no_duplicate_keys(self, self.node, ())
        ref = self.data["reference"]
        if not isinstance(ref, (str, int, float)) or isinstance(ref, bool) or not str(ref).strip():
            self.fail(f"reference {ref!r} is not a model name; name the reference model (a key under `bench`)", "reference")
        for section in QUANT_MAPS:
            value = self.data.get(section)
            if value is not None and not isinstance(value, dict):
                self.fail(
                    f"`{section}` must map model names to {'numbers' if section == 'bpw' else 'paths'}, got {type(value).__name__}",
                    section,
                )
            for model, entry in (value or {}).items():
                if str(model).casefold() == REFERENCE and str(model) != str(ref):
                    self.fail(f"model {model!r} would be written as the reference's row name; rename it", section, model)
                entries = entry if section == "bench" and isinstance(entry, list) else [entry]
                if section != "bpw" and (not entries or not all(isinstance(e, str) and e.strip() for e in entries)):
                    self.fail(
                        f"{section} entry of {model!r} is {entry!r}; give a path (relative to the manifest)", section, model
                    )
        for section, allowed in OPTION_KEYS.items():
            value = self.data.get(section)
            if value is None:
                continue
            if not isinstance(value, dict):
                self.fail(f"`{section}` must be a mapping ({', '.join(sorted(allowed))}), got {type(value).__name__}", section)
            for key, sub in value.items():
                if key not in allowed:
                    self.fail(f"unknown key {key!r} under `{section}`; allowed: {', '.join(sorted(allowed))}", section, key)
                if section == "lm_eval" and not (isinstance(sub, dict) and all(isinstance(v, str) for v in sub.values())):
                    self.fail(f"`{section}.{key}` must map task names to {key[:-1]} names, got {sub!r}", section, key)

    def line(self, *keys) -> int:
        """Line of a (nested) key in the manifest, for error messages."""
        node, line = self.node, 1
        for key in keys:
            if not isinstance(node, yaml.MappingNode):
                break
            for k, v in node.value:
                if k.value == str(key):
                    node, line = v, k.start_mark.line + 1
                    break
            else:
                break
        return line

    def fail(self, message: str, *keys):
        raise SilentzoneError(f"{self.path}:{self.line(*keys)}: {message}")

    def file(self, relative, *keys) -> Path:
        path = (self.path.parent / str(relative)).resolve()
        if not path.exists():
            self.fail(f"{relative} not found (paths are relative to the manifest)", *keys)
        return path

    def check_names(self) -> None:
        if self.reference not in self.bench:
            self.fail(f"reference {self.reference!r} has no entry under `bench`", "reference")
        quants = set(self.bench) - {self.reference}
        only_fid = sorted(set(self.fidelity) - quants - {self.reference})
        only_bench = sorted(quants - set(self.fidelity))
        if only_fid or only_bench:
            parts = [
                f"{', '.join(only_fid)} only under fidelity" if only_fid else "",
                f"{', '.join(only_bench)} only under bench" if only_bench else "",
            ]
            self.fail(
                f"quant names differ between fidelity and bench sources ({'; '.join(p for p in parts if p)}); use one name per quant",
                *(("fidelity", only_fid[0]) if only_fid else ("bench", only_bench[0])),
            )


def _no_duplicate_keys(m: Manifest, node, keys: tuple) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    seen: dict[str, tuple[str, int]] = {}
    fold = len(keys) == 1 and keys[0] in QUANT_MAPS
    for k, v in node.value:
        name = str(k.value)
        key = name.casefold() if fold else name
        if key in seen:
            first, line = seen[key]
            what = f"model {name!r}" if fold else f"key {name!r}"
            case = f" ({first!r} and {name!r} differ only in case)" if first != name else ""
            where = f"under `{keys[0]}`" if keys else "at the top"
            raise SilentzoneError(
                f"{m.path}:{k.start_mark.line + 1}: {what} appears twice {where}{case} (first at line {line}); "
                "YAML would keep only the last: one entry per model"
            )
        seen[key] = (name, k.start_mark.line + 1)
        _no_duplicate_keys(m, v, (*keys, name))


def _names_match(manifest_name: str, file_name: str) -> bool:
    """A file filed under a quant must carry that name as a token (Q4_K_M in SmolLM2.Q4_K_M.gguf)."""
    stem = Path(file_name).name.removesuffix(".gguf")
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(manifest_name)}(?![A-Za-z0-9_])", stem, re.IGNORECASE) is not None


def read_fidelity(m: Manifest) -> dict[str, dict]:
    """One log per quant: the same file, or a log printing another's exact statistics (one run filed
    twice, e.g. a renamed copy), under two quants would give two identical rows."""
    rows, files, runs = {}, {}, {}
    for quant, rel in m.fidelity.items():
        path = m.file(rel, "fidelity", quant)
        if path in files:
            m.fail(f"{rel} is filed under both {files[path]!r} and {quant!r}; one log per quant", "fidelity", quant)
        files[path] = quant
        stats = llamacpp_log.parse_log(path, name=quant)
        if stats["model_file"] and not _names_match(quant, stats["model_file"]):
            m.fail(
                f"{rel} measured {stats['model_file']}, but is filed under quant {quant!r}; fix the manifest", "fidelity", quant
            )
        run = tuple(
            sorted(
                (k, v)
                for k, v in stats.items()
                if k not in (MODEL, "source", "model_from", "model_file") and not (isinstance(v, float) and math.isnan(v))
            )
        )
        if run in runs:
            m.fail(
                f"{rel} ({quant!r}) prints exactly the statistics of {m.fidelity[runs[run]]} ({runs[run]!r}): one run filed twice; "
                "give each quant its own log",
                "fidelity",
                quant,
            )
        runs[run] = quant
        rows[quant] = stats
    return rows


def read_bench(m: Manifest):
    import pandas as pd

    opts = m.data.get("lm_eval") or {}
    lcb = m.data.get("livecodebench") or {}
    frames, read_by = [], {}
    for model, entries in m.bench.items():
        out_name = REFERENCE if model == m.reference else model
        paths = [m.file(e, "bench", model) for e in entries]
        lcb_files = [p for p in paths if p.is_file() and p.name.endswith(".json") and not p.name.startswith("results_")]
        lm_paths = [p for p in paths if p not in lcb_files]
        # One source per model and item: no file may be read twice, for this model or another.
        for path in [*lcb_files, *(lm_eval.sample_files(lm_paths) if lm_paths else [])]:
            path = path.resolve()
            if path in read_by:
                first = read_by[path]
                m.fail(
                    f"{path} is read for {first!r}{' twice' if first == model else f' and again for {model!r}'}; "
                    "give each file once, under the model it measured",
                    "bench",
                    model,
                )
            read_by[path] = model
        if lm_paths:
            for name, results in lm_eval.results_quant_names(lm_paths).items():
                if not _names_match(model, name) and not _names_match(name, model):
                    m.fail(f"{results} is a run of {name!r}, but is filed under {model!r}; fix the manifest", "bench", model)
            frames.append(lm_eval.read_model(lm_paths, out_name, opts.get("metrics"), opts.get("filters"), options_for_all=False))
        for path in lcb_files:
            if "release" not in lcb:
                m.fail(
                    "LiveCodeBench files need `livecodebench: {release: …}` (and optionally start_date/end_date)", "bench", model
                )
            frames.append(
                livecodebench.read_eval_all(
                    path, out_name, str(lcb["release"]), _date(lcb.get("start_date")), _date(lcb.get("end_date"))
                )
            )
    items = pd.concat(frames, ignore_index=True)
    for option in ("metrics", "filters"):
        for task in opts.get(option) or {}:
            if task not in set(items["task"]):
                m.fail(
                    f"lm_eval {option} names task {task!r}, which no samples file holds (tasks: {', '.join(sorted(set(items['task'])))}); "
                    "fix the task name",
                    "lm_eval",
                    option,
                )
    dupes = items.duplicated(ITEM_KEYS, keep=False)
    if dupes.any():
        row = items[dupes].iloc[0]
        sources = sorted(
            set(
                items[
                    dupes & (items[MODEL] == row[MODEL]) & (items["task"] == row["task"]) & (items["item_id"] == row["item_id"])
                ]["source"]
            )
        )
        m.fail(
            f"model {row[MODEL]!r}, task {row['task']!r}, item {row['item_id']} comes from {' and '.join(sources)}; one source per item",
            "bench",
            m.reference if row[MODEL] == REFERENCE else row[MODEL],
        )
    _check_alignment(m, items)
    return items.sort_values(ITEM_KEYS, kind="stable").reset_index(drop=True)


def _date(value) -> str | None:
    return None if value is None else str(value)


def _check_alignment(m: Manifest, items) -> None:
    """Every model must have the reference's tasks, and per task the reference's items."""
    ref = items[items[MODEL] == REFERENCE]
    ref_tasks = set(ref["task"])
    ref_items = {t: set(g["item_id"]) for t, g in ref.groupby("task")}
    for model, group in items.groupby(MODEL, sort=True):
        tasks = set(group["task"])
        entry = m.reference if model == REFERENCE else model
        if tasks != ref_tasks:
            extra, missing = sorted(tasks - ref_tasks), sorted(ref_tasks - tasks)
            odd = group[group["task"].isin(extra)]["source"].iloc[0] if extra else None
            m.fail(
                f"model {entry!r} has a different task set than its siblings"
                + (f": {odd} adds task {extra[0]!r}" if extra else "")
                + (f"; lacks {', '.join(missing)}" if missing else ""),
                "bench",
                entry,
            )
        for task, g in group.groupby("task"):
            if set(g["item_id"]) != ref_items[task]:
                diff = sorted(set(g["item_id"]) ^ ref_items[task])
                m.fail(
                    f"{g['source'].iloc[0]} ({entry!r}, task {task}) has different items than the reference's (e.g. item {diff[0]}); score the same items",
                    "bench",
                    entry,
                )


def build(manifest_path: str | Path):
    """(cohort, items) DataFrames in the project's schema; nothing is written."""
    import pandas as pd

    m = Manifest(manifest_path)
    m.check_names()
    fidelity = read_fidelity(m)
    items = read_bench(m)
    bpw = {}
    for k, v in (m.data.get("bpw") or {}).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            m.fail(
                f"bpw of {k!r} is {v!r}, not a finite number; give bits per weight, e.g. 4.85 (leave a model out where unknown)",
                "bpw",
                k,
            )
        checks.check_value("bpw", float(v), f"{m.path}:{m.line('bpw', k)}", "give the bits per weight llama-quantize reports")
        bpw[str(k)] = float(v)
    unknown = sorted(set(bpw) - set(m.bench))
    if unknown:
        m.fail(f"bpw given for {', '.join(unknown)}, which is not under bench", "bpw")
    rows = []
    for model in [m.reference, *(q for q in m.bench if q != m.reference)]:
        is_ref = model == m.reference
        if model in fidelity:
            variants = fidelity_variants(fidelity[model])
        else:  # the reference against itself, as `silentzone collect` writes it
            variants = {k: identity(k) for k in VARIANTS}
        rows.append({MODEL: REFERENCE if is_ref else model, "is_reference": is_ref, "bpw": bpw.get(model, math.nan), **variants})
    cohort = pd.DataFrame(rows)
    per_task = scores(items).drop(columns=COMPOSITE)  # finish_cohort takes the composite over the tasks it orders
    tasks = sorted(c.removeprefix(SCORE_PREFIX) for c in per_task.columns if c != MODEL)
    cohort = cohort.merge(per_task, on=MODEL, how="left", validate="one_to_one")
    return cohort_csv.finish_cohort(cohort, tasks), items


def write(cohort, items, out_dir: str | Path) -> None:
    write_tables(out_dir, cohort, items)
    from .. import provenance  # the analyses check this stamp as they check `collect`'s

    provenance.write_ingest_stamp(Path(out_dir), ["cohort.parquet", "cohort.csv", "items.parquet"])
