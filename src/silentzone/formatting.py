"""Numbers and words as the manuscript prints them: signed ρ with a true minus, p never rounded across
0.05, percentages, counts in words, an estimate with its interval. Pure functions of plain values,
used by the decision rules' reasons (silentzone.verdicts) and by the paper's variables and tables
(silentzone.paper)."""

from __future__ import annotations

import math


def is_number(x) -> bool:
    """A number that exists: not None, not NaN."""
    return x is not None and not (isinstance(x, float) and math.isnan(x))


MINUS = "\u2212"
DASH = "\u2014"  # a value that does not exist (a refused correlation), never "n/a"
NBSP = "\u00a0"
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def with_minus(text: str) -> str:
    return text.replace("-", MINUS)


def fmt_signed(x: float, digits: int = 2) -> str:
    """Correlations and their CIs: always signed, fixed decimals, a true minus ("+0.00", "−0.24")."""
    text = f"{x:+.{digits}f}"
    if float(text) == 0:
        text = "+" + text[1:]
    return with_minus(text)


P_FLOOR = 0.0001  # the smallest p printed as a number: below it "< 0.0001", so no p has more than four decimals


def fmt_p(p: float) -> str:
    """p-values as a table cell: two decimals from 0.1, two significant digits from 0.01, one below
    (0.0002), "< 0.0001" below 0.0001 (a binomial p of 10⁻²² says nothing more than that); a digit more
    where rounding would carry p across 0.05 (0.0495 must not print as 0.05), never more than four
    decimals (past them, rounded toward the side of 0.05 that p is on)."""
    if p >= 0.0995:
        return f"{p:.2f}"
    if p < P_FLOOR:
        return f"< {P_FLOOR:g}"
    for digits in (2, 3, 4) if p >= 0.0095 else (1, 2):
        decimals = min(4, digits - 1 - math.floor(math.log10(p)))
        decimals = min(4, digits - 1 - math.floor(math.log10(round(p, decimals))))  # 0.00099 -> 0.001, not 0.0010
        text = f"{p:.{decimals}f}"
        if (float(text) < 0.05) == (p < 0.05):
            return text
    rounded = math.floor(p * 1e4) if p < 0.05 else math.ceil(p * 1e4)
    return f"{rounded / 1e4:.4f}"


def p_phrase(p: float, name: str = "p") -> str:
    """A p-value in prose: "p = 0.004", "p < 0.0001" (never "p = < 0.0001")."""
    text = fmt_p(p)
    return f"{name} {text}" if text.startswith("<") else f"{name} = {text}"


def fmt_pct(x: float) -> str:
    return with_minus(f"{100 * x:.1f}%")


def fmt_points(x: float) -> str:
    """A difference of composites (shares of items) in percentage points, one decimal: "−11.1"."""
    text = f"{100 * x:.1f}"
    return with_minus("0.0" if float(text) == 0 else text)


def fmt_sig(x: float, digits: int = 3) -> str:
    """Three significant digits; below 0.001 as m×10ⁿ (KLDs of near-lossless quants)."""
    if x == 0:
        return "0"
    if abs(x) < 0.001:
        exponent = math.floor(math.log10(abs(x)))
        mantissa = x / 10**exponent
        if f"{mantissa:.{digits - 1}f}".startswith(("10", "-10")):  # 9.996e-5 rounds to 1.00e-4
            mantissa, exponent = mantissa / 10, exponent + 1
        return with_minus(f"{mantissa:.{digits - 1}f}") + "×10" + str(exponent).translate(_SUPERSCRIPT)
    text = f"{x:.{digits}g}"
    if "e" in text:  # >= 1000: plain digits
        text = f"{x:.0f}"
    return with_minus(text)


def fmt_reliability(x) -> str:
    """A split-half reliability in prose, two decimals as the verdicts' reasons print it: "0.20", "−0.12"."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH
    return with_minus(f"{x:.2f}")


def value_kind(key: str) -> str:
    """How a number is printed, by its key (the notebooks' numbers and published.yml share names)."""
    k = key.lower()
    if k in ("rho", "ci_low", "ci_high") or k.startswith(("rho", "ci_")) or "_rho" in k:
        return "rho"
    if k == "p" or k.startswith("p_"):
        return "p"
    if k.startswith(("accuracy", "routing_", "share_")) or "_accuracy" in k or k == "power":
        return "pct"
    if "baseline_mean_kld" in k or k in ("oracle_fixed", "chance"):  # claim 4's other routers: accuracies too
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
            return with_minus(f"{value:.2f}")  # a reliability can be negative
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


def ci_text(low, high, fmt=fmt_signed) -> str:
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
    text = f"ρ = {fmt_signed(rho)}{ci_text(d.get('ci_low'), d.get('ci_high'))}"
    p = d.get("p_perm", d.get("p"))
    p = None if not is_number(p) else p
    if p is not None:
        text += f", {p_phrase(p)}"
        if is_number(d.get("p_holm")):
            text += f" (Holm {fmt_p(d['p_holm'])})"
    return text


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


def distinct_texts(larger: float, smaller: float, decimals: int = 2) -> tuple[str, str]:
    """Both numbers at the fewest decimals (at least `decimals`, at most 6) that print them apart,
    so "0.553 ... more than 0.550" never reads as "0.55 ... more than 0.55"."""
    for d in range(decimals, 7):
        a, b = f"{larger:.{d}f}", f"{smaller:.{d}f}"
        if a != b:
            return a, b
    return a, b
