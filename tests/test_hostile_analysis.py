"""No silent wrong number: hostile inputs on the analysis side (`silentzone ingest …` and
`silentzone analyze-cohort`).

Every case copies a real fixture (tests/fixtures/llamacpp, tests/fixtures/ingest) into its own
folder, corrupts it the way a hostile but fair user could, and runs the command in-process. Every
refusal is checked the same way (`Workspace.refuse`, the conventions of tests/test_hostile.py): exit
code 2, exactly one line on stderr that starts with `silentzone <command>: error:`, names the file
(and the line or field where known) and holds no traceback, and the case folder — inputs and the
output folder, which already holds an earlier result — is unchanged (every file's name, size and
sha256, every folder, before and after).

Classes: physically impossible numbers (KLD < −16/65535, unordered percentiles, shares outside
[0, 1] or [0, 100] %, perplexities < 1, NaN/inf), inconsistent statistics, several sources for one
quant or item, binary/undecodable/empty/truncated files, and options that make no sense.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from silentzone import cli, published
from silentzone.ingest import checks

REPO = Path(__file__).resolve().parents[1]
LLAMA = REPO / "tests" / "fixtures" / "llamacpp"
INGEST = REPO / "tests" / "fixtures" / "ingest"
PAPER = INGEST / "paper_scale"
DATE = "2025-03-14T09-26-53.589793"
GARBAGE = bytes(range(256)) * 4  # invalid UTF-8 (0x80…) with NUL bytes
LATIN1 = "quant,kl_mean\nQ8_0 (d\xe9j\xe0 vu),0.01\n".encode("latin-1")  # no NUL, not UTF-8

needs_llama = pytest.mark.skipif(
    not (LLAMA / "mini" / "mini-ref-c128.kld.xz").exists(), reason=f"llama.cpp fixtures absent ({LLAMA})"
)


# --------------------------------------------------------------------------------- the harness


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file (size, sha256) and folder under `root`."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and ".silentzone" in dirnames:
            dirnames.remove(".silentzone")  # the locks (silentzone.lock): a process's state, not an output
        for name in dirnames:
            out[str((Path(dirpath) / name).relative_to(root))] = ("dir",)
        for name in filenames:
            data = (Path(dirpath) / name).read_bytes()
            out[str((Path(dirpath) / name).relative_to(root))] = (len(data), hashlib.sha256(data).hexdigest())
    return out


def changes(before: dict, after: dict) -> list[str]:
    return sorted(
        f"{k}: {before.get(k)} -> {after.get(k)}" for k in before.keys() | after.keys() if before.get(k) != after.get(k)
    )


class Workspace:
    """One case's folder: copied inputs under `in/`, an output folder `out/` holding an earlier result."""

    def __init__(self, root: Path, capsys):
        self.root, self.capsys = root, capsys
        self.inputs = root / "in"
        self.inputs.mkdir()
        self.out = root / "out"
        self.out.mkdir()
        (self.out / "earlier.csv").write_text("model,kld_mean\nQ8_0,0.01\n")

    def copy(self, src: Path, name: str | None = None) -> Path:
        dest = self.inputs / (name or src.name)
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, dest)
        return dest

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.inputs / name
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
        return path

    @staticmethod
    def edit(path: Path, old: str, new: str) -> Path:
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {path}"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        return path

    def refuse(self, *argv: str, names: tuple[str, ...] = ()) -> str:
        """Run a command that must refuse: exit 2, one line naming `names`, nothing written or changed."""
        self.capsys.readouterr()
        before = snapshot(self.root)
        rc = cli.main([str(a) for a in argv])
        out, err = self.capsys.readouterr()
        assert rc == 2, (rc, out, err)
        assert "Traceback" not in err and "Traceback" not in out, err
        lines = err.splitlines()
        assert len(lines) == 1 and err.endswith("\n"), err
        assert lines[0].startswith(f"silentzone {argv[0]}: error:"), lines[0]
        assert "unexpected" not in lines[0], lines[0]  # a library exception that slipped through
        for name in names:
            assert str(name) in lines[0], f"{name!r} not named in: {lines[0]}"
        assert changes(before, snapshot(self.root)) == []
        return lines[0]


@pytest.fixture
def ws(tmp_path, capsys):
    return Workspace(tmp_path, capsys)


# --------------------------------------------------------------------------------- llama.cpp logs

Q4KM = LLAMA / "logs" / "kld-Q4_K_M.log"

LOG_CASES = [
    # (id, old line, new line, what the error names besides file:line)
    (
        "negative-mean-kld",
        "Mean    KLD:   0.061424 ±",
        "Mean    KLD:  -0.061424 ±",
        ":38: `kld_mean` = -0.061424 is impossible (a KL divergence is ≥ 0",
    ),
    ("median-above-max", "Median  KLD:   0.039185", "Median  KLD:   2.039185", ":44: `kld_median` = 2.03918 is above `kld_p90`"),
    ("same-top-p-195-percent", "Same top p: 86.098 ±", "Same top p: 195.098 ±", ":67: `same_top_p` = 195.098 % is impossible"),
    (
        "nan-mean-kld",
        "Mean    KLD:   0.061424 ±   0.001260",
        "Mean    KLD:   nan ±   nan",
        ":38: 'Mean KLD: nan ± nan' is not a finite number",
    ),
    ("inf-max-kld", "Maximum KLD:   1.785381", "Maximum KLD:   inf", ":39: 'Maximum KLD: inf' is not a finite number"),
    (
        "perplexity-below-1",
        "Mean PPL(Q)                   :  19.144044",
        "Mean PPL(Q)                   :   0.144044",
        "`ppl_q` = 0.144044 is impossible (a perplexity is ≥ 1)",
    ),
    (
        "ratio-disagrees-with-ppls",
        "Mean PPL(Q)/PPL(base)         :   1.068828",
        "Mean PPL(Q)/PPL(base)         :   1.168828",
        "PPL(Q)/PPL(base) = 1.16883, but PPL(Q) 19.144 / PPL(base) 17.9113",
    ),
    (
        "negative-standard-error",
        "Mean    KLD:   0.061424 ±   0.001260",
        "Mean    KLD:   0.061424 ±  -0.001260",
        "negative standard error",
    ),
    ("dp-percentiles-unordered", "99.0%   Δp: 15.155%", "99.0%   Δp:  5.155%", "`dp_p95` = 0.0765 is above `dp_p99` = 0.05155"),
    ("dp-beyond-100-percent", "Minimum Δp: -76.610%", "Minimum Δp: -176.610%", "`dp_min` = -176.61 % is impossible"),
    (
        "correlation-above-100-percent",
        "Cor(ln(PPL(Q)), ln(PPL(base))):  99.11%",
        "Cor(ln(PPL(Q)), ln(PPL(base))): 199.11%",
        "`cor_ln_ppl` = 199.11 % is impossible",
    ),
    (
        "rms-below-mean",
        "Mean    Δp: -0.439 ± 0.085 %",
        "Mean    Δp: -9.439 ± 0.085 %",
        "RMS Δp 0.06072 is below |mean Δp| 0.09439",
    ),
    (
        "mean-outside-min-max",
        "Mean    KLD:   0.061424",
        "Mean    KLD:   1.861424",
        "`kld_mean` = 1.86142 lies outside [min 3e-06, max 1.78538]",
    ),
    ("zero-chunks", "computing over 20 chunks", "computing over 0 chunks", ":4: 0 chunks of n_ctx=512 score no token"),
]


@needs_llama
@pytest.mark.parametrize("old, new, message", [pytest.param(o, n, m, id=i) for i, o, n, m in LOG_CASES])
def test_impossible_statistics_in_a_log(ws, old, new, message):
    log = ws.edit(ws.copy(Q4KM), old, new)
    ws.refuse("ingest", "llamacpp", log, "--out", ws.out / "kld.csv", names=(f"{log}:", message))


@needs_llama
def test_kld_tolerance_is_one_uint16_step(ws):
    """The reference against itself prints minimum KLD −0.000049: accepted. −0.000300 is no rounding."""
    assert checks.KLD_TOLERANCE == published.KLD_TOLERANCE == 16 / 65535
    good = ws.copy(LLAMA / "logs" / "kld-Q4_1_self.log")
    assert cli.main(["ingest", "llamacpp", str(good), "--out", str(ws.root / "self.csv")]) == 0
    assert pd.read_csv(ws.root / "self.csv")["kld_min"].iloc[0] == -0.000049
    bad = ws.edit(ws.copy(good, "kld-Q4_1_bad.log"), "Minimum KLD:  -0.000049", "Minimum KLD:  -0.000300")
    ws.refuse(
        "ingest",
        "llamacpp",
        bad,
        "--out",
        ws.out / "kld.csv",
        names=(f"{bad}:49:", "`kld_min` = -0.0003 is impossible", "tolerance 0.000244"),
    )


@needs_llama
def test_one_log_given_twice(ws):
    log = ws.copy(Q4KM)
    ws.refuse("ingest", "llamacpp", log, log, "--out", ws.out / "kld.csv", names=(str(log), "given twice"))


@needs_llama
def test_two_logs_of_one_quant(ws):
    new, old = ws.copy(Q4KM), ws.copy(LLAMA / "b4747" / "kld-Q4_K_M.log", "b4747-Q4_K_M.log")
    ws.refuse(
        "ingest",
        "llamacpp",
        new,
        old,
        "--out",
        ws.out / "kld.csv",
        names=(str(old), "quant 'Q4_K_M' is already measured by", "one log per quant"),
    )


@needs_llama
def test_a_renamed_copy_of_a_log_is_one_run_filed_twice(ws):
    q8 = ws.copy(LLAMA / "logs" / "kld-Q8_0.log")
    copy = ws.copy(q8, "kld-Q9_0.log")
    ws.refuse(
        "ingest", "llamacpp", q8, copy, "--out", ws.out / "kld.csv", names=(str(copy), f"prints exactly the statistics of {q8}")
    )


@needs_llama
@pytest.mark.parametrize(
    "content, message",
    [
        (GARBAGE, "no `====== KL divergence statistics ======` block"),
        (b"", "empty file; not a `llama-perplexity --kl-divergence` log"),
    ],
    ids=["binary", "empty"],
)
def test_binary_or_empty_log(ws, content, message):
    log = ws.write("kld-Q4_K_M.log", content)
    ws.refuse("ingest", "llamacpp", log, "--out", ws.out / "kld.csv", names=(str(log), message))


@needs_llama
def test_the_same_name_twice_by_option(ws):
    a, b = ws.copy(Q4KM), ws.copy(LLAMA / "logs" / "kld-Q8_0.log")
    ws.refuse(
        "ingest",
        "llamacpp",
        a,
        b,
        "--name",
        f"{a.name}=X",
        "--name",
        f"{a.name}=Y",
        "--out",
        ws.out / "kld.csv",
        names=(f"--name '{a.name}=Y'", "already given"),
    )


# --------------------------------------------------------------------------------- .kld files

MINI = LLAMA / "mini"


def _kld(ws: Workspace, src: str, name: str) -> tuple[Path, bytearray]:
    raw = bytearray(lzma.open(MINI / src).read())
    return ws.inputs / name, raw


@needs_llama
def test_empty_kld_file(ws):
    path = ws.write("empty.kld", b"")
    ws.refuse("ingest", "kld", path, names=(str(path), "0 bytes, shorter than the 20-byte header"))


@needs_llama
def test_binary_garbage_kld_file(ws):
    path = ws.write("garbage.kld", GARBAGE)
    ws.refuse("ingest", "kld", path, names=(str(path), "not a llama.cpp .kld file"))


@needs_llama
def test_truncated_xz(ws):
    data = (MINI / "mini-ref-c128.kld.xz").read_bytes()
    path = ws.write("cut.kld.xz", data[: len(data) // 2])
    ws.refuse("ingest", "kld", path, names=(str(path), "damaged or truncated xz stream"))


@needs_llama
def test_a_folder_given_as_kld(ws):
    (ws.inputs / "run.kld").mkdir()
    ws.refuse("ingest", "kld", ws.inputs / "run.kld", names=(str(ws.inputs / "run.kld"), "is a folder"))


@needs_llama
def test_token_outside_the_vocabulary(ws):
    path, raw = _kld(ws, "mini-ref-c128.kld.xz", "ref.kld")
    raw[20 + 4 * 5 : 20 + 4 * 6] = np.array([60000], "<i4").tobytes()  # token 5; n_vocab = 49152
    path.write_bytes(bytes(raw))
    ws.refuse(
        "ingest", "kld", path, names=(str(path), "token 5 (chunk 0, position 5) is id 60000, outside the vocabulary [0, 49152)")
    )


@needs_llama
def test_damaged_record_in_a_pair(ws):
    base, raw = _kld(ws, "mini-ref-c128.kld.xz", "ref.kld")
    base.write_bytes(bytes(raw))
    other, raw = _kld(ws, "mini-Q4_K_M-c128.kld.xz", "q4.kld")
    n_ctx, n_chunk, nv = 128, 2, 2 * ((49152 + 1) // 2) + 4
    record = 20 + 4 * n_ctx * n_chunk + 2 * nv * 7  # record 7: its scale becomes NaN
    raw[record : record + 4] = np.array([np.nan], "<f4").tobytes()
    other.write_bytes(bytes(raw))
    ws.refuse(
        "ingest",
        "kld",
        base,
        other,
        "--out",
        ws.out / "tokens.csv",
        names=(str(other), "record 7 (chunk 0, position 71) is not a row of log-probabilities"),
    )


# --------------------------------------------------------------------------------- lm-eval samples

ARC = INGEST / "lm_eval" / f"samples_arc_easy_{DATE}.jsonl"


def _lm_eval(ws: Workspace) -> Path:
    return ws.copy(INGEST / "lm_eval", "lm_eval")


@pytest.mark.parametrize(
    "content, message",
    [
        (GARBAGE, ":1: NUL byte"),
        (b'{"doc_id": 0}\n\xff\xfe garbage\n', ":2: byte 0xff is not UTF-8 text"),
        (b"", "no samples; the file is empty"),
    ],
    ids=["binary", "not-utf8", "empty"],
)
def test_undecodable_or_empty_samples(ws, content, message):
    folder = _lm_eval(ws)
    path = folder / ARC.name
    path.write_bytes(content)
    ws.refuse(
        "ingest",
        "lm-eval",
        folder,
        "--model",
        "Q8_0",
        "--filter",
        "gsm8k=strict-match",
        "--out",
        ws.out / "items.csv",
        names=(str(path), message),
    )


def test_truncated_samples_line(ws):
    folder = _lm_eval(ws)
    path = folder / ARC.name
    text = path.read_text()
    path.write_text(text[: text.rindex("}")])
    ws.refuse("ingest", "lm-eval", path, "--model", "Q8_0", "--out", ws.out / "items.csv", names=(f"{path}:5:", "invalid JSON"))


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('"filtered_resps": [["-', '"filtered_resps": [["nan", "False"], ["-', "filtered_resps: 'nan' is not a finite number"),
        ('"filtered_resps": [["-', '"filtered_resps": [["', "> 0 in `filtered_resps`, impossible for a sum of log-probabilities"),
        ('"doc_id": 0', '"doc_id": 0.5', "doc_id 0.5 is not a document index"),
    ],
    ids=["nan-loglikelihood", "positive-loglikelihood", "fractional-doc-id"],
)
def test_impossible_values_in_samples(ws, old, new, message):
    folder = _lm_eval(ws)
    path = ws.edit(folder / ARC.name, old, new)
    ws.refuse("ingest", "lm-eval", path, "--model", "Q8_0", "--out", ws.out / "items.csv", names=(f"{path}:1:", message))


def test_metric_for_a_task_that_is_not_there(ws):
    """A misspelt task would silently keep the default metric (acc, not acc_norm)."""
    folder = _lm_eval(ws)
    ws.refuse(
        "ingest",
        "lm-eval",
        folder,
        "--model",
        "Q8_0",
        "--filter",
        "gsm8k=strict-match",
        "--metric",
        "arc_esay=acc_norm",
        "--out",
        ws.out / "items.csv",
        names=(str(folder / ARC.name), "--metric arc_esay=acc_norm: no samples file of task 'arc_esay'"),
    )


def test_the_same_samples_file_twice(ws):
    folder = _lm_eval(ws)
    ws.refuse(
        "ingest",
        "lm-eval",
        folder / ARC.name,
        folder / ARC.name,
        "--model",
        "Q8_0",
        "--out",
        ws.out / "items.csv",
        names=(str(folder / ARC.name), "the same file given twice"),
    )


# --------------------------------------------------------------------------------- LiveCodeBench

LCB = INGEST / "livecodebench" / "codegeneration_2_0.2_eval_all.json"


def _lcb(ws: Workspace, *extra: str, path: Path | None = None) -> list:
    return [
        "ingest",
        "livecodebench",
        path or ws.inputs / LCB.name,
        "--model",
        "Q8_0",
        "--release",
        "release_v5",
        *extra,
        "--out",
        ws.out / "items.csv",
    ]


@pytest.mark.parametrize(
    "content, message",
    [(GARBAGE, ":1: NUL byte"), (b"", ":1: invalid JSON"), (LATIN1, ":2: byte 0xe9 is not UTF-8")],
    ids=["binary", "empty", "latin-1"],
)
def test_undecodable_or_empty_eval_all(ws, content, message):
    path = ws.write(LCB.name, content)
    ws.refuse(*_lcb(ws), names=(str(path), message))


def test_pass_at_1_that_is_not_a_number(ws):
    path = ws.copy(LCB)
    text = path.read_text()
    path.write_text(re.sub(r'"pass@1": [0-9.]+', '"pass@1": "all"', text, count=1))
    ws.refuse(*_lcb(ws), names=(str(path), "pass@1 'all'", "is not a number"))


def test_question_without_an_id(ws):
    path = ws.copy(LCB)
    text = path.read_text()
    path.write_text(re.sub(r'"question_id": "[^"]+"', '"question_id": null', text, count=1))
    ws.refuse(*_lcb(ws), names=(str(path), "question_id None is not an id"))


def test_window_that_ends_before_it_starts(ws):
    path = ws.copy(LCB)
    ws.refuse(
        *_lcb(ws, "--start-date", "2025-01-01", "--end-date", "2024-01-01"),
        names=(str(path), "starts (2025-01-01) after it ends (2024-01-01)"),
    )


# --------------------------------------------------------------------------------- ingest csv

COHORT = """# made up for the test, in the layout of data/external/
quant,size_gb,kl_mean,kl_median,perplexity,same_top,hellaswag_pct,mmlu
BF16 (reference),16.0,,,6.50,,80.50,0.70
Q8_0,8.5,0.004,0.002,6.51,98.1,80.25,0.69
Q6_K,6.6,0.010,0.004,6.52,97.0,80.00,0.69
Q4_K_M,4.8,0.050,0.020,6.60,93.5,79.50,0.68
Q2_K,2.9,0.400,0.180,7.60,80.2,72.00,0.60
"""


def _csv(ws: Workspace, *maps: str, content: str | bytes = COHORT, percent=("score_hellaswag",)) -> tuple[Path, list]:
    path = ws.write("cohort.csv", content)
    argv = [
        "ingest",
        "csv",
        path,
        "--reference",
        "BF16 (reference)",
        *[a for m in maps for a in ("--map", m)],
        *[a for p in percent for a in ("--percent", p)],
        "--out",
        ws.out / "cohort.csv",
    ]
    return path, argv


BASE_MAPS = ("kld_mean=kl_mean", "score_hellaswag=hellaswag_pct")


def test_a_clean_cohort_csv_is_ingested(ws):
    """The positive control for the cases below: the same table, untouched, goes through."""
    path, argv = _csv(
        ws, *BASE_MAPS, "ppl=perplexity", "same_top_p=same_top", "score_mmlu=mmlu", percent=("score_hellaswag", "same_top_p")
    )
    argv[-1] = ws.root / "ok.csv"
    assert cli.main([str(a) for a in argv]) == 0
    got = pd.read_csv(ws.root / "ok.csv").set_index("model")
    assert got.loc["Q8_0", "score_hellaswag"] == 0.8025 and got.loc["Q8_0", "top1_disagree"] == pytest.approx(0.019)


@pytest.mark.parametrize(
    "edit, maps, percent, names",
    [
        (
            ("Q6_K,6.6,0.010", "Q6_K,6.6,-0.010"),
            BASE_MAPS,
            ("score_hellaswag",),
            (":5: column 'kl_mean' (--map kld_mean), row 'Q6_K': -0.01 is impossible (a KL divergence is ≥ 0",),
        ),
        (
            ("80.25", "4187"),
            BASE_MAPS,
            ("score_hellaswag",),
            (":4: column 'hellaswag_pct' (--map score_hellaswag), row 'Q8_0': 4187 is impossible", "[0, 100] %"),
        ),
        (
            None,
            BASE_MAPS,
            (),
            (
                ":3: column 'hellaswag_pct'",
                "80.5 is impossible (a share lies in [0, 1]); if 'hellaswag_pct' is in percent, pass --percent score_hellaswag",
            ),
        ),
        (
            ("6.52", "0.52"),
            (*BASE_MAPS, "ppl=perplexity"),
            ("score_hellaswag",),
            (":5: column 'perplexity' (--map ppl), row 'Q6_K': 0.52 is impossible (a perplexity is ≥ 1)",),
        ),
        (
            ("8.5,0.004", "-8.5,0.004"),
            (*BASE_MAPS, "bpw=size_gb"),
            ("score_hellaswag",),
            (":4: column 'size_gb' (--map bpw)", "bits per weight lie in (0, 64]"),
        ),
    ],
    ids=["negative-kld", "4187-percent", "percent-without-flag", "perplexity-below-1", "negative-bpw"],
)
def test_impossible_values_in_a_cohort_csv(ws, edit, maps, percent, names):
    content = COHORT.replace(*edit) if edit else COHORT
    path, argv = _csv(ws, *maps, content=content, percent=percent)
    ws.refuse(*argv, names=(str(path), *names))


@pytest.mark.parametrize(
    "edit, names",
    [
        (("0.010,0.004", "inf,0.004"), (":5: column 'kl_mean', row 'Q6_K': 'inf' is not finite",)),
        (("0.010,0.004", "NaN,0.004"), (":5: column 'kl_mean', row 'Q6_K': 'NaN' is NaN, a failed computation",)),
        (("Q6_K,6.6,0.010", "Q6_K,6.6,0.010,"), (":5: 9 cells, but the header has 8",)),
        (("Q6_K,6.6,0.010", "Q6_K,6.6"), (":5: 7 cells, but the header has 8",)),
        (("same_top,", "kl_mean,"), (":2: column 'kl_mean' appears twice in the header",)),
        (("0.010,0.004", "0.010 # card,0.004"), (":5: column 'kl_mean', row 'Q6_K': '0.010 # card' is not a number",)),
        (("Q6_K,", "q8_0,"), (":5: quant 'q8_0' appears twice in column 'quant' (as 'Q8_0': names differ only in case)",)),
        (("\nBF16", "\nBF16 (reference),16.0,,,6.50,,80.50,0.70\nBF16"), (":4: quant 'BF16 (reference)' appears twice",)),
    ],
    ids=[
        "inf",
        "nan-spelled",
        "extra-cell",
        "missing-cells",
        "duplicate-header",
        "inline-hash",
        "case-duplicate",
        "duplicate-row",
    ],
)
def test_unreadable_cells_and_rows_in_a_cohort_csv(ws, edit, names):
    path, argv = _csv(ws, *BASE_MAPS, content=COHORT.replace(*edit))
    ws.refuse(*argv, names=(str(path), *names))


@pytest.mark.parametrize(
    "content, message",
    [
        (GARBAGE, ":1: NUL byte"),
        (LATIN1, ":2: byte 0xe9 is not UTF-8"),
        (b"", "no header line"),
        (b"# only a comment\nquant,kl_mean,hellaswag_pct\n", ":2: a header but no data rows"),
    ],
    ids=["binary", "latin-1", "empty", "header-only"],
)
def test_undecodable_or_empty_cohort_csv(ws, content, message):
    path, argv = _csv(ws, *BASE_MAPS, content=content)
    ws.refuse(*argv, names=(str(path), message))


@pytest.mark.parametrize(
    "maps, percent, message",
    [
        (("kld_mean=kl_mean", "kld_mean=kl_median"), (), "--map 'kld_mean=kl_median': kld_mean is already given"),
        (("kld_mean=kl_mean", "kld_median=kl_mean"), (), "--map kld_median=kl_mean: column 'kl_mean' already fills kld_mean"),
        (
            ("ppl=perplexity", "ppl_ratio=size_gb"),
            (),
            "--map ppl_ratio=size_gb: ppl_ratio is also derived from --map ppl=perplexity",
        ),
        (("same_top_p=same_top", "top1_disagree=mmlu"), (), "top1_disagree is also derived from --map same_top_p=same_top"),
        (("kld_mean=kl_mean",), ("kld_mean",), "--percent kld_mean: only shares can be given in percent"),
    ],
    ids=["target-twice", "source-twice", "ppl-and-ratio", "top-p-and-disagree", "percent-kld"],
)
def test_csv_options_that_make_no_sense(ws, maps, percent, message):
    path, argv = _csv(ws, *maps, percent=percent)
    ws.refuse(*argv, names=(message,))


# --------------------------------------------------------------------------------- analyze-cohort


def _analyze(ws: Workspace, *args: str, content: str | bytes = COHORT) -> tuple[Path, list]:
    path = ws.write("cohort.csv", content)
    return path, ["analyze-cohort", path, *args, "--resamples", "100", "--out", ws.out]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--silent-margin", "-1"), "--silent-margin: Input should be greater than or equal to 0, got -1.0"),
        (("--silent-margin", "nan"), "--silent-margin: Input should be a finite number, got nan"),
        (("--silent-margin", "inf"), "--silent-margin: Input should be a finite number, got inf"),
        (("--silent-k", "9"), "--silent-k 9 but only 4 quants have 'kl_mean'"),
        (("--silent-k", "2", "--seed", "-4"), "--seed: Input should be greater than or equal to 0, got -4"),
    ],
    ids=["negative-margin", "nan-margin", "inf-margin", "k-beyond-cohort", "negative-seed"],
)
def test_analyze_options_that_make_no_sense(ws, args, message):
    path, argv = _analyze(ws, "--fidelity", "kl_mean", "--score", "hellaswag_pct", *args)
    ws.refuse(*argv, names=(str(path), message))


@pytest.mark.parametrize(
    "fid, score, edit, message",
    [
        (
            "kl_mean",
            "hellaswag_pct",
            ("Q6_K,6.6,0.010", "Q6_K,6.6,-0.010"),
            ":5: column 'kl_mean', row 'Q6_K': -0.01 is impossible (a KL divergence is ≥ 0",
        ),
        (
            "perplexity",
            "hellaswag_pct",
            ("6.52", "0.52"),
            ":5: column 'perplexity', row 'Q6_K': 0.52 is impossible (a perplexity is ≥ 1)",
        ),
        ("kl_mean", "hellaswag_pct", ("80.25", "4187"), ":4: column 'hellaswag_pct', row 'Q8_0': 4187 is impossible"),
        ("kl_mean", "hellaswag_pct,mmlu", None, "score columns mix units: 'hellaswag_pct' hold percentages"),
        ("kl_mean", "hellaswag_pct,hellaswag_pct", None, "--score names column 'hellaswag_pct' twice"),
        ("kl_mean", "kl_mean", None, "column 'kl_mean' is both a --fidelity and a --score column"),
        ("kl_mean", "hellaswag_pct", ("0.010,0.004", "-inf,0.004"), ":5: column 'kl_mean', row 'Q6_K': '-inf' is not finite"),
    ],
    ids=["negative-kld", "perplexity-below-1", "score-above-100", "mixed-units", "score-twice", "fidelity-is-score", "minus-inf"],
)
def test_analyze_values_that_cannot_be(ws, fid, score, edit, message):
    path, argv = _analyze(
        ws, "--fidelity", fid, "--score", score, "--silent-k", "2", content=COHORT.replace(*edit) if edit else COHORT
    )
    ws.refuse(*argv, names=(str(path), message))


@pytest.mark.parametrize(
    "content, message",
    [(GARBAGE, ":1: NUL byte"), (LATIN1, ":2: byte 0xe9 is not UTF-8"), (b"", "no header line")],
    ids=["binary", "latin-1", "empty"],
)
def test_analyze_undecodable_or_empty_csv(ws, content, message):
    path, argv = _analyze(ws, "--fidelity", "kl_mean", "--score", "hellaswag_pct", "--silent-k", "2", content=content)
    ws.refuse(*argv, names=(str(path), message))


def test_a_hash_inside_a_quoted_name_is_text(ws):
    """pandas' comment='#' cut `"APEX #2"` to `APEX ` and emptied its row; the one reader keeps it."""
    path = ws.write("t.csv", 'quant,kl\n"APEX #2",0.5\nQ8_0,0.1\n')
    table, _ = published.read_table(path, ["kl"])
    assert table["model"].tolist() == ["APEX #2", "Q8_0"] and table["kl"].tolist() == [0.5, 0.1]


# --------------------------------------------------------------------------------- ingest cohort (manifest)


def _paper(ws: Workspace) -> Path:
    return ws.copy(PAPER, "paper") / "manifest.yaml"


def _cohort(ws: Workspace, manifest: Path, *names: str) -> str:
    return ws.refuse("ingest", "cohort", manifest, "--out", ws.out, names=(str(manifest) if not names else names[0], *names[1:]))


def test_one_log_filed_under_two_quants(ws):
    m = ws.edit(_paper(ws), "Q6_K: logs/kld-Q6_K.log", "Q6_K: logs/kld-Q8_0.log")
    _cohort(ws, m, f"{m}:7:", "logs/kld-Q8_0.log is filed under both 'Q8_0' and 'Q6_K'; one log per quant")


def test_a_renamed_copy_filed_under_another_quant(ws):
    m = _paper(ws)
    shutil.copyfile(m.parent / "logs" / "kld-Q8_0.log", m.parent / "logs" / "kld-Q6_K.log")
    _cohort(ws, m, f"{m}:7:", "logs/kld-Q6_K.log ('Q6_K') prints exactly the statistics of logs/kld-Q8_0.log ('Q8_0')")


def test_one_quant_twice(ws):
    m = ws.edit(_paper(ws), "  Q6_K: logs/kld-Q6_K.log\n", "  Q6_K: logs/kld-Q6_K.log\n  Q6_K: logs/kld-Q5_0.log\n")
    _cohort(ws, m, f"{m}:8:", "model 'Q6_K' appears twice under `fidelity` (first at line 7)")


def test_one_quant_twice_in_another_case(ws):
    m = ws.edit(_paper(ws), "  Q6_K: [lm_eval/Q6_K", "  q6_k: [lm_eval/Q5_0]\n  Q6_K: [lm_eval/Q6_K")
    _cohort(ws, m, str(m), "appears twice under `bench` ('q6_k' and 'Q6_K' differ only in case)")


def test_one_bench_file_for_two_models(ws):
    m = ws.edit(_paper(ws), "livecodebench/Q6_K_codegeneration", "livecodebench/Q8_0_codegeneration")
    _cohort(ws, m, f"{m}:16:", "Q8_0_codegeneration_1_0.2_eval_all.json is read for 'Q8_0' and again for 'Q6_K'")


def test_two_files_with_the_same_items_for_one_model(ws):
    """A second LiveCodeBench run of Q6_K under another file name: every item twice."""
    m = _paper(ws)
    lcb = m.parent / "livecodebench"
    shutil.copyfile(lcb / "Q6_K_codegeneration_1_0.2_eval_all.json", lcb / "Q6_K_rerun_eval_all.json")
    ws.edit(
        m,
        "livecodebench/Q6_K_codegeneration_1_0.2_eval_all.json]",
        "livecodebench/Q6_K_codegeneration_1_0.2_eval_all.json, livecodebench/Q6_K_rerun_eval_all.json]",
    )
    _cohort(
        ws,
        m,
        f"{m}:16:",
        "model 'Q6_K', task 'livecodebench', item",
        "comes from Q6_K_codegeneration_1_0.2_eval_all.json and Q6_K_rerun_eval_all.json; one source per item",
    )


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("Q8_0: 8.51", "Q8_0: -8.51", "bpw = -8.51 is impossible (bits per weight lie in (0, 64])"),
        ("Q8_0: 8.51", "Q8_0: .nan", "bpw of 'Q8_0' is nan, not a finite number"),
        ("Q8_0: 8.51", "Q8_0: eight", "bpw of 'Q8_0' is 'eight', not a finite number"),
        ("filters: {gsm8k: strict-match}", "filter: {gsm8k: strict-match}", "unknown key 'filter' under `lm_eval`"),
        (
            "filters: {gsm8k: strict-match}",
            "filters: {gsm8k: strict-match, gsm8k_cot: strict-match}",
            "lm_eval filters names task 'gsm8k_cot', which no samples file holds",
        ),
        ("start_date: 2024-08-01", "start: 2024-08-01", "unknown key 'start' under `livecodebench`"),
        (
            "  Q2_K: logs/kld-Q2_K.log",
            "  reference: logs/kld-Q2_K.log",
            "model 'reference' would be written as the reference's row name",
        ),
    ],
    ids=[
        "negative-bpw",
        "nan-bpw",
        "text-bpw",
        "misspelt-lm-eval-key",
        "filter-for-no-task",
        "misspelt-window-key",
        "quant-named-reference",
    ],
)
def test_manifest_values_that_make_no_sense(ws, old, new, message):
    m = ws.edit(_paper(ws), old, new)
    _cohort(ws, m, str(m), message)


def test_negative_kld_in_a_log_of_the_cohort(ws):
    m = _paper(ws)
    log = ws.edit(m.parent / "logs" / "kld-Q4_0.log", "Mean    KLD:   0.296773", "Mean    KLD:  -0.296773")
    _cohort(ws, m, f"{log}:38:", "`kld_mean` = -0.296773 is impossible")


@pytest.mark.parametrize(
    "target, message",
    [("manifest", ":1: NUL byte"), ("results", ":1: NUL byte"), ("samples", ":1: NUL byte"), ("livecodebench", ":1: NUL byte")],
)
def test_binary_garbage_anywhere_in_a_cohort(ws, target, message):
    m = _paper(ws)
    path = {
        "manifest": m,
        "results": m.parent / "lm_eval" / "Q5_0" / f"results_{DATE}.json",
        "samples": m.parent / "lm_eval" / "Q5_0" / f"samples_gsm8k_{DATE}.jsonl",
        "livecodebench": m.parent / "livecodebench" / "Q5_0_codegeneration_1_0.2_eval_all.json",
    }[target]
    path.write_bytes(GARBAGE)
    _cohort(ws, m, f"{path}{message}")


def test_a_truncated_samples_file_in_a_cohort(ws):
    m = _paper(ws)
    path = m.parent / "lm_eval" / "Q5_0" / f"samples_arc_easy_{DATE}.jsonl"
    path.write_bytes(path.read_bytes()[:-300])
    _cohort(ws, m, f"{path}:20:", "invalid JSON")
