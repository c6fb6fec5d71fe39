"""Statistics printed by llama.cpp `llama-perplexity --kl-divergence`, one dict per log.

The log ends with three blocks (perplexity, KL divergence, token probability), each a list of
`label: value [± se] [%]` lines. Versions differ in which percentiles they print (b4747 prints
`99.0% KLD` twice and has no 95/90/0.1 % lines), so a percentile line becomes a column named after
its label and a statistic a version did not print stays empty (NaN). Percentages become fractions.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from pathlib import Path

from ..errors import SilentzoneError
from ..schema import MODEL
from .checks import KLD_TOLERANCE

BLOCKS = {
    "====== Perplexity statistics ======": "ppl",
    "====== KL divergence statistics ======": "kld",
    "====== Token probability statistics ======": "dp",
}

# The columns every table of logs carries, in this order (statistics a version lacks are NaN); the
# quant measured is `model`, as in every table of silentzone.schema.
COLUMNS = [
    MODEL,
    "source",
    "model_file",
    "n_ctx",
    "n_chunks",
    "ppl_q",
    "ppl_q_se",
    "ppl_base",
    "ppl_base_se",
    "cor_ln_ppl",
    "ln_ppl_ratio",
    "ln_ppl_ratio_se",
    "ppl_ratio",
    "ppl_ratio_se",
    "ppl_diff",
    "ppl_diff_se",
    "kld_mean",
    "kld_mean_se",
    "kld_max",
    "kld_p99_9",
    "kld_p99",
    "kld_p95",
    "kld_p90",
    "kld_median",
    "kld_p10",
    "kld_p5",
    "kld_p1",
    "kld_p0_1",
    "kld_min",
    "dp_mean",
    "dp_mean_se",
    "dp_max",
    "dp_p99_9",
    "dp_p99",
    "dp_p95",
    "dp_p90",
    "dp_p75",
    "dp_median",
    "dp_p25",
    "dp_p10",
    "dp_p5",
    "dp_p1",
    "dp_p0_1",
    "dp_min",
    "rms_dp",
    "rms_dp_se",
    "same_top_p",
    "same_top_p_se",
]

# Lines every version since the token-probability block exists (2024) prints; absent = truncated.
REQUIRED = {
    "ppl": ["ppl_q", "ppl_base", "cor_ln_ppl", "ln_ppl_ratio", "ppl_ratio", "ppl_diff"],
    "kld": ["kld_mean", "kld_max", "kld_p99_9", "kld_p99", "kld_median", "kld_p10", "kld_p5", "kld_p1", "kld_min"],
    "dp": ["dp_mean", "dp_max", "dp_median", "rms_dp", "same_top_p"],
}

PPL_LABELS = {
    "Mean PPL(Q)": "ppl_q",
    "Mean PPL(base)": "ppl_base",
    "Cor(ln(PPL(Q)), ln(PPL(base)))": "cor_ln_ppl",
    "Mean ln(PPL(Q)/PPL(base))": "ln_ppl_ratio",
    "Mean PPL(Q)/PPL(base)": "ppl_ratio",
    "Mean PPL(Q)-PPL(base)": "ppl_diff",
}
NAMED = {"Mean": "mean", "Maximum": "max", "Median": "median", "Minimum": "min", "RMS": "rms"}
# Lines printed with `± se`, and blocks/lines printed in percent: a line lacking either is cut short.
WITH_SE = {"ppl_q", "ppl_base", "ln_ppl_ratio", "ppl_ratio", "ppl_diff", "kld_mean", "dp_mean", "rms_dp", "same_top_p"}

NUMBER = r"[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf)"
STAT_LINE = re.compile(
    rf"^(?P<label>[^:]+?)\s*:\s*(?P<value>{NUMBER})\s*(?P<pct>%)?\s*(?:±\s*(?P<se>{NUMBER})\s*(?P<se_pct>%)?)?\s*$"
)
MODEL_FILE = re.compile(r"llama_model_loader: loaded meta data .* from (?P<path>\S+\.gguf)\b")
CHUNKS = re.compile(
    r"(?:kl_divergence|perplexity): (?:computing|calculating perplexity) over (?P<n>\d+) chunks, n_ctx=(?P<ctx>\d+)"
)
# A llama.cpp type at the end of a GGUF name: SmolLM2-135M-Instruct.Q4_K_M, Qwen3.6-35B-A3B-UD-Q4_K_XL
QUANT_TYPE = re.compile(r"(?:^|[.\-_])(?P<type>(?:UD-)?(?:I?Q\d(?:_[0-9A-Z]+)*|[BM]?F(?:16|32)|BF16|TQ\d_\d))$", re.IGNORECASE)


def quant_from_model_file(path: str) -> str:
    """`.../SmolLM2-135M-Instruct.Q4_K_M.gguf` -> `Q4_K_M`; a name without a type stays whole."""
    stem = Path(path).name.removesuffix(".gguf")
    match = QUANT_TYPE.search(stem)
    return match.group("type") if match else stem


def quant_from_log_name(path: Path) -> str:
    """`kld-Q8_0.log` -> `Q8_0`: for logs that do not name their model file."""
    return Path(path).name.removesuffix(".log").removeprefix("kld-")


def _number(text: str, in_percent: bool = False) -> float:
    """Decimal division so that `95.353 %` becomes exactly the float nearest 0.95353."""
    return float(Decimal(text) / 100) if in_percent else float(text)


def _key(block: str, label: str) -> str | None:
    """Column name of a statistics line, or None if the label is unknown."""
    label = " ".join(label.split())
    if block == "ppl":
        return PPL_LABELS.get(label)
    symbol = "KLD" if block == "kld" else "Δp"
    if label == "Same top p" and block == "dp":
        return "same_top_p"
    head, _, tail = label.rpartition(" ")
    if tail != symbol:
        return None
    if head in NAMED:
        return f"{block}_{NAMED[head]}" if head != "RMS" else f"rms_{block}"
    pct = re.fullmatch(r"(\d+(?:\.\d+)?)%", head)
    if pct:
        value = float(pct.group(1))
        name = f"{value:g}".replace(".", "_")
        return f"{block}_median" if value == 50 else f"{block}_p{name}"
    return None


def parse_log(path: str | Path, name: str | None = None) -> dict:
    """Every statistic of one `--kl-divergence` log; raises SilentzoneError naming file and line."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise SilentzoneError(f"{path}: cannot read ({exc.strerror}); check the path") from None
    if not raw.strip():
        raise SilentzoneError(
            f"{path}: empty file; not a `llama-perplexity --kl-divergence` log (ingest the log of a finished run)"
        )
    lines = raw.splitlines()
    row: dict = {"source": path.name, "model_file": None, "n_ctx": math.nan, "n_chunks": math.nan}
    at: dict[str, int] = {}  # statistic -> the line that printed it
    seen_blocks: dict[str, int] = {}
    block = None
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if text in BLOCKS:
            block = BLOCKS[text]
            if block in seen_blocks:
                raise SilentzoneError(
                    f"{path}:{number}: second `{text}` block (first at line {seen_blocks[block]}); one run per log"
                )
            seen_blocks[block] = number
            continue
        if block is None:
            _header_line(path, number, text, row)
            continue
        if not text:
            block = None
            continue
        if number == len(lines) and not raw.endswith("\n"):
            raise SilentzoneError(f"{path}:{number}: the last line stops mid-line; the log is truncated")
        _stat_line(path, number, block, text, row, at)
    _check_complete(path, len(lines), seen_blocks, row)
    check_statistics(path, row, at)
    if name:
        row[MODEL], row["model_from"] = name, "name"
    elif row["model_file"]:
        row[MODEL], row["model_from"] = quant_from_model_file(row["model_file"]), "model_file"
    else:
        row[MODEL], row["model_from"] = quant_from_log_name(path), "log_name"
    return row


def _header_line(path: Path, number: int, text: str, row: dict) -> None:
    if match := MODEL_FILE.search(text):
        row["model_file"] = Path(match.group("path")).name
    elif match := CHUNKS.search(text):
        row["n_chunks"], row["n_ctx"] = int(match.group("n")), int(match.group("ctx"))
        if row["n_chunks"] < 1 or row["n_ctx"] < 2:
            raise SilentzoneError(
                f"{path}:{number}: {row['n_chunks']} chunks of n_ctx={row['n_ctx']} score no token; the log is edited or the run was empty"
            )


def _stat_line(path: Path, number: int, block: str, text: str, row: dict, at: dict) -> None:
    match = STAT_LINE.match(text)
    key = _key(block, match.group("label")) if match else None
    if key is None:
        raise SilentzoneError(f"{path}:{number}: unrecognised statistics line {text!r}; is the log cut or edited?")
    in_percent = bool(match.group("pct") or match.group("se_pct"))
    if in_percent != (block == "dp" or key == "cor_ln_ppl") or (key in WITH_SE) != (match.group("se") is not None):
        raise SilentzoneError(
            f"{path}:{number}: statistics line {text!r} is cut short or edited (expected `value{' ± se' if key in WITH_SE else ''}{' %' if block == 'dp' or key == 'cor_ln_ppl' else ''}`)"
        )
    value = _number(match.group("value"), in_percent)
    se = _number(match.group("se"), in_percent) if match.group("se") is not None else None
    if not math.isfinite(value) or (se is not None and not math.isfinite(se)):
        raise SilentzoneError(
            f"{path}:{number}: {' '.join(text.split())!r} is not a finite number; the run diverged (NaN/inf logits) or the log was "
            "edited: rerun llama-perplexity and ingest its log"
        )
    if se is not None and se < 0:
        raise SilentzoneError(
            f"{path}:{number}: {' '.join(text.split())!r} has a negative standard error; the log is edited or corrupt: use the log llama-perplexity wrote"
        )
    if key in row and not _same(row[key], value):
        raise SilentzoneError(f"{path}:{number}: `{key}` printed twice with different values ({row[key]} vs {value})")
    row[key] = value
    at.setdefault(key, number)
    if se is not None:
        row[f"{key}_se"] = se


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _check_complete(path: Path, n_lines: int, seen_blocks: dict, row: dict) -> None:
    if "kld" not in seen_blocks:
        raise SilentzoneError(
            f"{path}:{n_lines}: no `====== KL divergence statistics ======` block; not a finished "
            "`llama-perplexity --kl-divergence` log (run it to the end, with at least 100 scored tokens)"
        )
    for block, keys in REQUIRED.items():
        if block not in seen_blocks:
            raise SilentzoneError(f"{path}:{n_lines}: the {block} statistics block is missing; the log is truncated or edited")
        missing = [k for k in keys if k not in row]
        if missing:
            raise SilentzoneError(
                f"{path}:{n_lines}: statistics block starting at line {seen_blocks[block]} lacks {', '.join(missing)}; the log is truncated"
            )


# What each statistic can be (fractions, not %): a value outside is no rounding, but an edited or
# corrupt log. KLD: ≥ −KLD_TOLERANCE (silentzone.ingest.checks says why).
def _bounds(key: str) -> tuple[float, float, str] | None:
    if key.startswith("kld_"):
        return (
            -KLD_TOLERANCE,
            math.inf,
            f"a KL divergence is ≥ 0 (tolerance {KLD_TOLERANCE:.3g}, one uint16 step of the stored log-probs)",
        )
    if key in ("ppl_q", "ppl_base"):
        return 1.0, math.inf, "a perplexity is ≥ 1"
    if key == "ppl_ratio":
        return 1e-300, math.inf, "a ratio of perplexities is > 0"
    if key == "cor_ln_ppl":
        return -1.0, 1.0, "a correlation lies in [-100 %, 100 %]"
    if key in ("same_top_p", "rms_dp"):
        return 0.0, 1.0, "a share lies in [0 %, 100 %]"
    if key.startswith("dp_"):
        return -1.0, 1.0, "a difference of probabilities lies in [-100 %, 100 %]"
    return None


def _rank(block: str, key: str) -> float | None:
    """Where a statistic sits among its block's order statistics (min 0 … max 100), or None."""
    name = key.removeprefix(f"{block}_")
    if name in ("min", "median", "max"):
        return {"min": 0.0, "median": 50.0, "max": 100.0}[name]
    if name.startswith("p") and re.fullmatch(r"\d+(?:_\d+)?", name[1:]):
        return float(name[1:].replace("_", "."))
    return None


CONSISTENT = "the log is edited or corrupt: use the log llama-perplexity wrote"


def check_statistics(path: Path, row: dict, at: dict) -> None:
    """Physical sanity of one log's statistics: every value in its domain, the percentiles of KLD and
    Δp ordered as printed (min ≤ 0.1 % ≤ … ≤ median ≤ … ≤ max), each mean between its min and max,
    and the perplexity lines consistent with each other (to their printed digits)."""

    def fail(key: str, message: str):
        raise SilentzoneError(f"{path}:{at.get(key, 1)}: {message}; {CONSISTENT}")

    for key in at:
        bounds = _bounds(key)
        if bounds and not bounds[0] <= row[key] <= bounds[1]:
            shown = (
                f"{row[key] * 100:g} %"
                if key.startswith("dp_") or key in ("same_top_p", "rms_dp", "cor_ln_ppl")
                else f"{row[key]:g}"
            )
            fail(key, f"`{key}` = {shown} is impossible ({bounds[2]})")
    for block in ("kld", "dp"):
        ranked = sorted((r, at[k], k) for k in at if k.startswith(f"{block}_") and (r := _rank(block, k)) is not None)
        for (_, _, lower), (_, _, upper) in zip(ranked, ranked[1:]):
            if row[lower] > row[upper]:
                fail(
                    lower,
                    f"`{lower}` = {row[lower]:g} is above `{upper}` = {row[upper]:g} (line {at[upper]}); percentiles must be ordered",
                )
        mean = f"{block}_mean"
        if not row[f"{block}_min"] <= row[mean] <= row[f"{block}_max"]:
            fail(mean, f"`{mean}` = {row[mean]:g} lies outside [min {row[f'{block}_min']:g}, max {row[f'{block}_max']:g}]")
    if row["rms_dp"] < abs(row["dp_mean"]) - 1e-5:  # printed in % to 3 decimals
        fail("rms_dp", f"RMS Δp {row['rms_dp']:g} is below |mean Δp| {abs(row['dp_mean']):g}, which no set of values allows")
    # llama.cpp prints ratio = PPL(Q)/PPL(base), ln ratio = its log, diff = PPL(Q) − PPL(base), each to 6 decimals.
    ratio = row["ppl_q"] / row["ppl_base"]
    if abs(row["ppl_ratio"] - ratio) > 1e-5 * ratio + 1e-6:
        fail(
            "ppl_ratio",
            f"PPL(Q)/PPL(base) = {row['ppl_ratio']:g}, but PPL(Q) {row['ppl_q']:g} / PPL(base) {row['ppl_base']:g} = {ratio:.6f}",
        )
    if abs(row["ln_ppl_ratio"] - math.log(row["ppl_ratio"])) > 1e-5:
        fail(
            "ln_ppl_ratio",
            f"ln(PPL(Q)/PPL(base)) = {row['ln_ppl_ratio']:g}, but ln({row['ppl_ratio']:g}) = {math.log(row['ppl_ratio']):.6f}",
        )
    diff = row["ppl_q"] - row["ppl_base"]
    if abs(row["ppl_diff"] - diff) > 1e-5 + 1e-7 * row["ppl_q"]:
        fail("ppl_diff", f"PPL(Q)-PPL(base) = {row['ppl_diff']:g}, but {row['ppl_q']:g} − {row['ppl_base']:g} = {diff:.6f}")


def check_one_per_quant(paths, frame) -> None:
    """One log per quant and each log once: the same file given twice, two logs with identical
    statistics (one run filed twice) or two logs of one quant would give two rows for one quant."""
    stats = [c for c in frame.columns if c not in (MODEL, "source", "model_file", "model_from")]
    seen_file: dict[Path, str] = {}
    seen_model: dict[str, str] = {}
    seen_stats: dict[tuple, str] = {}
    for path, (_, r) in zip(map(str, paths), frame.iterrows()):
        real = Path(path).resolve()
        if real in seen_file:
            raise SilentzoneError(f"{path}: given twice (also as {seen_file[real]}); one log per quant: give each log once")
        seen_file[real] = path
        key = str(r[MODEL]).casefold()
        if key in seen_model:
            raise SilentzoneError(
                f"{path}: quant {r[MODEL]!r} is already measured by {seen_model[key]}; one log per quant "
                "(if it is another quant, name it with --name LOG=NAME)"
            )
        seen_model[key] = path
        values = tuple(None if isinstance(v, float) and math.isnan(v) else v for v in r[stats])
        if values in seen_stats:
            raise SilentzoneError(f"{path}: prints exactly the statistics of {seen_stats[values]}: one run filed twice; keep one")
        seen_stats[values] = path


def parse_logs(paths, names: dict | None = None):
    """A DataFrame with one row per log: COLUMNS first, then any further percentile a version printed."""
    import pandas as pd

    names = names or {}
    rows = [parse_log(p, names.get(str(p)) or names.get(Path(p).name)) for p in paths]
    extra = sorted({k for r in rows for k in r} - set(COLUMNS) - {"model_from"})
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "model_from", *extra])
    for col in frame.columns:
        if col not in (MODEL, "source", "model_file", "model_from"):
            frame[col] = frame[col].astype("float64")
    return frame
