"""llama.cpp's own tools, run as subprocesses: llama-quantize, llama-imatrix (and llama-perplexity for benchmarks).

    quantize("reference.gguf", "q4_k_m.gguf", "Q4_K_M")            # -> report (types, bpw, fallbacks)
    compute_imatrix("reference.gguf", "wiki.txt", "wiki.imatrix.gguf", ctx=512, chunks=8)

Why the binaries and not llama-cpp-python's ctypes: llama-quantize is where llama.cpp's type rules live
(per-tensor type choices of the Q4_K_M-style mixes, the fallbacks for rows not divisible by 256, the
imatrix handling); calling ggml_quantize_chunk directly would reimplement those rules. `make llamacpp`
builds the tools from the llama.cpp vendored in the pinned llama-cpp-python sdist (see docs/quant.md).

Tool lookup (find_tool): $SILENTZONE_LLAMACPP_BIN, then .llamacpp/bin/ under the current folder, then
under this source checkout, then PATH. Outputs are written under a temporary name beside the target
and renamed into place only when the tool succeeded; a failure is one SilentzoneError line carrying
llama.cpp's own error line and leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from .. import io
from ..errors import SilentzoneError
from .gguf_member import field, open_gguf, tensor_types

ENV_BIN = "SILENTZONE_LLAMACPP_BIN"
TOOLS = ("llama-quantize", "llama-imatrix", "llama-perplexity")
LOCAL_BIN = Path(".llamacpp") / "bin"
# src/silentzone/quant/llamacpp.py -> the checkout root, where `make llamacpp` puts .llamacpp/
_CHECKOUT = Path(__file__).resolve().parents[3]

# llama-quantize's per-tensor fallback warning, e.g.
# "warning: blk.0.attn_k.weight  - ncols 576 not divisible by 256 (required for type q4_K) -> falling back to q5_0"
_FALLBACK = re.compile(
    r"warning:\s+(?P<tensor>\S+)\s+- ncols\s+(?P<ncols>\d+) not divisible by (?P<block>\d+) "
    r"\(required for type\s+(?P<wanted>\S+)\) -> falling back to\s+(?P<got>\S+)"
)
_ERROR_WORDS = re.compile(r"error|failed|invalid|unknown|cannot|can't|unable|not supported|please do not|bailing|abort", re.I)
# Lines that only say "it failed" and carry no reason; a more specific line is preferred.
_GENERIC = re.compile(r"^(main|llama_quantize): failed to quantize model from|^main: failed", re.I)


# What to do about llama.cpp's commonest refusals, appended to its own error line.
_HINTS = (
    ("requires an imatrix", "compute one with compute_imatrix and pass imatrix="),
    ("invalid ftype", "use a type name that `llama-quantize --help` lists, e.g. Q4_K_M"),
    ("not within the file bounds", "the GGUF is truncated; re-create or re-download it"),
    ("failed to load model", "check that the file is a complete GGUF model"),
)


def find_tool(name: str) -> Path:
    """The path of llama.cpp tool `name`; one SilentzoneError line saying how to install it if absent."""
    candidates = []
    if os.environ.get(ENV_BIN):
        candidates.append(Path(os.environ[ENV_BIN]) / name)
    candidates += [Path.cwd() / LOCAL_BIN / name, _CHECKOUT / LOCAL_BIN / name]
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return Path(found)
    where = f"${ENV_BIN}, " if os.environ.get(ENV_BIN) else ""
    raise SilentzoneError(
        f"{name}: llama.cpp tool not found in {where}.llamacpp/bin or PATH; run `make llamacpp` (builds it, ~6 min) or set ${ENV_BIN}"
    )


def tools_available() -> bool:
    try:
        for name in TOOLS:
            find_tool(name)
    except SilentzoneError:
        return False
    return True


def error_line(output: str) -> str:
    """llama.cpp's most telling error line in a tool's combined output (its last specific one)."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip() and not set(ln.strip()) <= set("=-* ")]
    errors = [ln for ln in lines if _ERROR_WORDS.search(ln)]
    specific = [ln for ln in errors if not _GENERIC.search(ln)]
    if specific:
        return specific[-1]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "no output"


# Why a tool dies by a signal, and what to do; SIGSEGV/SIGILL are what a build for another CPU meets.
_SIGNAL_FIXES = {
    signal.SIGSEGV: "if it was built before AMX was switched off (an AMX CPU crashes in ggml's AMX matmul), "
    "delete the tools' folder and run `make llamacpp` again",
    signal.SIGILL: "the binaries were built for another CPU; delete the tools' folder and run `make llamacpp` again",
    signal.SIGKILL: "killed from outside, often by the kernel's out-of-memory killer; free memory and rerun",
}


def died_by_signal(name: str, signum: int) -> str:
    """'llama-imatrix crashed (segmentation fault); <fix>' for a process that died by signal `signum`."""
    try:
        sig = signal.Signals(signum)
        what = signal.strsignal(sig) or sig.name
    except ValueError:
        sig, what = None, f"signal {signum}"
    verb = "was killed" if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT) else "crashed"
    fix = _SIGNAL_FIXES.get(sig, "rerun; if it repeats, report it with the command and the tool's output")
    return f"{name} {verb} ({what[:1].lower() + what[1:]}); {fix}"


def run_tool(name: str, args: list, what: str, threads: int | None = None, timeout: float | None = None) -> str:
    """Run tool `name` with `args`; its combined output, or one SilentzoneError line on failure."""
    tool = find_tool(name)
    env = dict(os.environ)
    # Spinning OpenMP workers would steal the cores other jobs on a shared machine are using.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    try:
        proc = subprocess.run(
            [str(tool), *map(str, args)], capture_output=True, text=True, errors="replace", env=env, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise SilentzoneError(f"{what}: {name} did not finish within {timeout:.0f} s") from None
    output = proc.stdout + "\n" + proc.stderr
    if proc.returncode < 0:
        raise SilentzoneError(f"{what}: {died_by_signal(name, -proc.returncode)}")
    if proc.returncode != 0:
        line = error_line(output)
        hint = next((fix for key, fix in _HINTS if key in line), None)
        raise SilentzoneError(f"{what}: {name} failed (exit {proc.returncode}): {line}" + (f"; {hint}" if hint else ""))
    return output


def default_mode(path: Path) -> None:
    # The temp file comes from mkstemp (mode 0600); the published file gets the usual umask mode.
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def parse_fallbacks(output: str) -> dict:
    """{tensor: {"wanted": type, "got": type, "ncols", "block"}} from llama-quantize's warnings."""
    return {
        m["tensor"]: {"wanted": m["wanted"], "got": m["got"], "ncols": int(m["ncols"]), "block": int(m["block"])}
        for m in _FALLBACK.finditer(output)
    }


def fallbacks_by_type(fallbacks: dict) -> dict:
    """{"q4_K -> q5_0": [tensor, ...]}: which tensors fell back from which type to which."""
    out: dict[str, list] = {}
    for tensor, fb in fallbacks.items():
        out.setdefault(f"{fb['wanted']} -> {fb['got']}", []).append(tensor)
    return dict(sorted(out.items()))


def quantize(src_gguf, out_gguf, qtype: str, imatrix=None, threads: int = 2, timeout: float | None = 1800) -> dict:
    """`llama-quantize --allow-requantize` src -> out as `qtype` (a llama-quantize type name: Q8_0, Q4_K_M, IQ4_XS ...).

    Requantizing is allowed because our reference is itself a Q4_1 GGUF (docs/quant.md). Returns
    {"file", "qtype", "imatrix", "seconds", "fallbacks", "fallbacks_by_type", plus tensor_types(out)}.
    """
    src, out = Path(src_gguf), Path(out_gguf)
    what = f"quantize {src} -> {out} as {qtype}"
    if not src.is_file():
        raise SilentzoneError(f"{src}: source GGUF not found; give the reference's GGUF file")
    if not re.fullmatch(r"[A-Za-z0-9_]+", str(qtype)):
        raise SilentzoneError(f"{what}: {qtype!r} is not a llama-quantize type name (e.g. Q8_0, Q4_K_M, IQ4_XS)")
    args = ["--allow-requantize"]
    if imatrix is not None:
        imatrix = Path(imatrix)
        check_imatrix(imatrix, src)
        args += ["--imatrix", imatrix]
    start = time.perf_counter()
    with io.atomic_path(out) as tmp:
        output = run_tool("llama-quantize", [*args, src, tmp, qtype, threads], what, threads=threads, timeout=timeout)
        # A refusal after the output file was opened can still exit 0 on some paths; the file must parse.
        types = tensor_types(open_gguf(tmp))
        default_mode(tmp)
    fallbacks = parse_fallbacks(output)
    return {
        "file": str(out),
        "qtype": qtype,
        "imatrix": str(imatrix) if imatrix is not None else None,
        "seconds": round(time.perf_counter() - start, 3),
        **types,
        "fallbacks": fallbacks,
        "fallbacks_by_type": fallbacks_by_type(fallbacks),
    }


def compute_imatrix(
    src_gguf, corpus_txt, out, ctx: int = 512, chunks: int = 8, threads: int = 2, timeout: float | None = 3600
) -> Path:
    """`llama-imatrix` of model `src_gguf` over the first `chunks` windows of `ctx` tokens of `corpus_txt` -> `out`.

    The output is llama.cpp's GGUF imatrix format (give `out` a .gguf suffix; a .dat suffix gives
    the legacy format).
    """
    src, corpus, out = Path(src_gguf), Path(corpus_txt), Path(out)
    what = f"imatrix of {src} over {corpus}"
    for path, role in ((src, "model GGUF"), (corpus, "calibration text")):
        if not path.is_file():
            raise SilentzoneError(f"{path}: {role} not found")
    with io.atomic_path(out) as tmp:
        run_tool(
            "llama-imatrix",
            ["-m", src, "-f", corpus, "-o", tmp, "-c", ctx, "--chunks", chunks, "-t", threads, "--no-ppl"],
            what,
            threads=threads,
            timeout=timeout,
        )
        if tmp.stat().st_size == 0:
            raise SilentzoneError(f"{what}: llama-imatrix wrote no data (is the text shorter than one {ctx}-token chunk?)")
        default_mode(tmp)
    return out


def imatrix_entries(path) -> dict:
    """{tensor name: number of values per row entry} of an imatrix file (GGUF or legacy .dat format)."""
    path = Path(path)
    if not path.is_file():
        raise SilentzoneError(f"{path}: imatrix file not found")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        reader = open_gguf(path)
        suffix = ".in_sum2"
        return {t.name[: -len(suffix)]: int(t.shape[0]) for t in reader.tensors if t.name.endswith(suffix)}
    return _legacy_imatrix_entries(path)


def _legacy_imatrix_entries(path: Path) -> dict:
    # Legacy layout: int32 n_entries, then per entry int32 name_len, name, int32 ncall, int32 nval, nval float32.
    import struct

    data = path.read_bytes()
    try:
        (n,), pos, out = struct.unpack_from("<i", data, 0), 4, {}
        for _ in range(n):
            (name_len,) = struct.unpack_from("<i", data, pos)
            name = data[pos + 4 : pos + 4 + name_len].decode()
            pos += 4 + name_len
            _ncall, nval = struct.unpack_from("<ii", data, pos)
            pos += 8 + 4 * nval
            if pos > len(data) or nval <= 0:
                raise ValueError("entry past the end of the file")
            out[name] = nval
    except (struct.error, UnicodeDecodeError, ValueError) as exc:
        raise SilentzoneError(
            f"{path}: not an imatrix file (GGUF or legacy .dat): {exc}; recompute it with compute_imatrix"
        ) from None
    return out


def check_imatrix(imatrix, src_gguf) -> None:
    """One SilentzoneError line unless `imatrix` was computed on a model with `src_gguf`'s tensors.

    llama-quantize itself skips imatrix entries whose names it does not know, so an imatrix of another
    model would be ignored without a word; same-named entries of another width would stop it midway.
    """
    imatrix, src = Path(imatrix), Path(src_gguf)
    entries = imatrix_entries(imatrix)
    reader = open_gguf(src)
    widths = {t.name: int(t.shape[0]) for t in reader.tensors if len(t.shape) >= 2}
    matched = [name for name in entries if name in widths]
    if not matched:
        raise SilentzoneError(
            f"{imatrix}: none of its {len(entries)} entries names a tensor of {src}; it was computed on another model, recompute it with compute_imatrix on {src.name}"
        )
    for name in matched:
        # An entry holds ne0 values per expert; ne0 is the row length of the weight it weights.
        if entries[name] % widths[name]:
            raise SilentzoneError(
                f"{imatrix}: entry {name} has {entries[name]} values, {src.name}'s tensor has rows of {widths[name]}; it was computed on another model, recompute it"
            )
    missing = [name for name in widths if name not in entries and name != "token_embd.weight"]
    if missing:
        raise SilentzoneError(
            f"{imatrix}: no entry for {missing[0]} ({len(missing)} of {src.name}'s weight matrices uncovered); it was computed on another model, recompute it"
        )


def describe(path) -> dict:
    """tensor_types of a GGUF plus its architecture and llama.cpp file type."""
    reader = open_gguf(path)
    return {
        "file": str(path),
        "architecture": field(reader, "general.architecture"),
        "file_type": field(reader, "general.file_type"),
        **tensor_types(reader),
    }
