"""Reader for llama.cpp's reference-logits file (`llama-perplexity --kl-divergence-base FILE`).

Layout (little-endian): `_logits_` | u32 n_ctx | i32 n_vocab | i32 n_chunk | i32 tokens[n_ctx*n_chunk]
| then, per chunk and per scored position (n_ctx/2 … n_ctx-2, each predicting the next token), a
record of 2*((n_vocab+1)//2)+4 uint16: f32 scale, f32 min_log_prob, u16 q[n_vocab] (+pad), with
log p_i = scale*q_i + min_log_prob. Log-probs more than 16 below the row's maximum are stored as
q = 0 and left out of llama.cpp's KLD sum. `.xz` files are read through lzma.

`token_stats` recomputes llama.cpp's per-token statistics from two such files: the base's (our R,
the reference) and a variant's (our q) uint16 copy, named as silentzone.schema's per-token columns
(kld, top1, nll_q, nll_R, dp). llama.cpp itself uses the variant's float logits, so ours lands
close to its log, not on it.
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SilentzoneError
from ..schema import TOKEN_COLUMNS
from .checks import KLD_TOLERANCE

MAGIC = b"_logits_"
HEADER = np.dtype([("magic", "S8"), ("n_ctx", "<u4"), ("n_vocab", "<i4"), ("n_chunk", "<i4")])


@dataclass
class KldFile:
    path: Path
    n_ctx: int
    n_vocab: int
    n_chunk: int
    tokens: np.ndarray  # int32 [n_chunk*n_ctx]
    records: np.ndarray  # uint16 [n_chunk*n_scored, record_uint16s]
    size_bytes: int

    @property
    def first_scored(self) -> int:
        return self.n_ctx // 2

    @property
    def n_scored(self) -> int:
        """Scored positions per chunk: n_ctx/2 … n_ctx-2."""
        return self.n_ctx - 1 - self.n_ctx // 2

    @property
    def record_uint16s(self) -> int:
        return 2 * ((self.n_vocab + 1) // 2) + 4

    def scale_min(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, min_log_prob) per record, float32."""
        floats = np.ascontiguousarray(self.records[:, :4]).view("<f4")
        return floats[:, 0], floats[:, 1]

    def quantized(self) -> np.ndarray:
        """The uint16 codes q, [n_records, n_vocab]."""
        return self.records[:, 4 : 4 + self.n_vocab]

    def log_probs(self, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """log p = scale*q + min_log_prob in float32, as llama.cpp evaluates it."""
        scale, low = self.scale_min()
        q = self.quantized()[rows].astype(np.float32)
        return q * scale[rows, None] + low[rows, None]

    def targets(self) -> np.ndarray:
        """The observed next token of every record, [n_records]."""
        chunks = self.tokens.reshape(self.n_chunk, self.n_ctx)
        return chunks[:, self.first_scored + 1 : self.n_ctx].reshape(-1)

    def positions(self) -> dict[str, np.ndarray]:
        """ctx, window (chunk) and pos (the scored position, predicting the token after it) of every record."""
        pos = np.arange(self.first_scored, self.n_ctx - 1)
        return {
            "ctx": np.full(self.n_chunk * len(pos), self.n_ctx),
            "window": np.repeat(np.arange(self.n_chunk), len(pos)),
            "pos": np.tile(pos, self.n_chunk),
        }


def _read_bytes(path: Path) -> bytes | np.ndarray:
    if path.is_dir():
        raise SilentzoneError(f"{path}: is a folder; pass the file given to --kl-divergence-base")
    if path.suffix == ".xz":
        try:
            with lzma.open(path) as f:
                return f.read()
        except (lzma.LZMAError, EOFError) as exc:
            raise SilentzoneError(f"{path}: damaged or truncated xz stream ({exc}); fetch the file again") from None
        except OSError as exc:
            raise SilentzoneError(f"{path}: cannot read ({exc.strerror}); check the path and its permissions") from None
    try:
        if path.stat().st_size == 0:
            return b""  # np.memmap refuses an empty file
        return np.memmap(path, dtype=np.uint8, mode="r")
    except OSError as exc:
        raise SilentzoneError(f"{path}: cannot read ({exc.strerror}); check the path and its permissions") from None


def read_kld(path: str | Path) -> KldFile:
    """Parse and validate a `.kld` (or `.kld.xz`) file; the records stay a view of the bytes."""
    path = Path(path)
    if not path.exists():
        raise SilentzoneError(f"{path}: not found; pass the file given to --kl-divergence-base")
    data = _read_bytes(path)
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, bytes) else data
    if buf.size < HEADER.itemsize:
        raise SilentzoneError(f"{path}: {buf.size} bytes, shorter than the 20-byte header; not a llama.cpp .kld file")
    head = buf[: HEADER.itemsize].view(HEADER)[0]
    if bytes(head["magic"]) != MAGIC:
        raise SilentzoneError(f"{path}: magic {bytes(head['magic'])!r}, expected {MAGIC!r}; not a llama.cpp .kld file")
    n_ctx, n_vocab, n_chunk = int(head["n_ctx"]), int(head["n_vocab"]), int(head["n_chunk"])
    if n_ctx < 4 or n_vocab < 1 or n_chunk < 1:
        raise SilentzoneError(f"{path}: header n_ctx={n_ctx}, n_vocab={n_vocab}, n_chunk={n_chunk} is invalid")
    n_tokens = n_ctx * n_chunk
    nv = 2 * ((n_vocab + 1) // 2) + 4
    n_records = n_chunk * (n_ctx - 1 - n_ctx // 2)
    expected = HEADER.itemsize + 4 * n_tokens + 2 * nv * n_records
    if buf.size != expected:
        raise SilentzoneError(
            f"{path}: {buf.size} bytes, but its header (n_ctx={n_ctx}, n_vocab={n_vocab}, n_chunk={n_chunk}) "
            f"implies {expected}; the file is truncated or not from this llama.cpp format"
        )
    tokens_end = HEADER.itemsize + 4 * n_tokens
    tokens = buf[HEADER.itemsize : tokens_end].view("<i4")
    bad = np.flatnonzero((tokens < 0) | (tokens >= n_vocab))
    if bad.size:
        i = int(bad[0])
        raise SilentzoneError(
            f"{path}: token {i} (chunk {i // n_ctx}, position {i % n_ctx}) is id {int(tokens[i])}, outside the vocabulary "
            f"[0, {n_vocab}); the file is damaged or not from llama-perplexity"
        )
    records = buf[tokens_end:].view("<u2").reshape(n_records, nv)
    return KldFile(path, n_ctx, n_vocab, n_chunk, tokens, records, int(buf.size))


def check_rows(f: KldFile, rows: slice, lp: np.ndarray) -> None:
    """Each record must be a row of log-probabilities as llama.cpp writes it: finite scale and
    min_log_prob, a range of at most 16 nats (scale ≤ 16/65535), a maximum log-prob ≤ 0, and the
    probability mass of the kept entries plus the most the dropped (q = 0) ones can hold ≈ 1."""
    scale, low = (x[rows].astype(np.float64) for x in f.scale_min())
    q = f.quantized()[rows]
    kept = q > 0
    mass = np.where(kept, np.exp(lp), 0.0).sum(axis=1)
    dropped = (~kept).sum(axis=1) * np.exp(np.minimum(low, 0.0))
    flat = scale == 0  # all logits equal: llama.cpp stores q = 0 everywhere and min_log_prob = -ln(n_vocab)
    ok = (
        np.isfinite(scale)
        & np.isfinite(low)
        & (scale >= 0)
        & (scale <= 16 / 65535 * (1 + 1e-5))
        & (65535 * scale + low <= 1e-4)
        & np.where(flat, ~kept.any(axis=1), (mass <= 1 + 1e-3) & (mass + dropped >= 1 - 1e-3))
    )
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        r = rows.start + i
        raise SilentzoneError(
            f"{f.path}: record {r} (chunk {r // f.n_scored}, position {f.first_scored + r % f.n_scored}) is not a row of log-probabilities "
            f"(scale {scale[i]:.6g}, min_log_prob {low[i]:.6g}, kept mass {mass[i]:.6g}); the file is damaged or not from llama-perplexity"
        )


def token_stats(base: KldFile, other: KldFile, batch: int = 64) -> dict[str, np.ndarray]:
    """Per scored token, llama.cpp's definitions: kld (sum over base entries with q > 0), top1
    (argmax agreement), nll_q (the variant's), nll_R (the base's), dp = p_variant(y) - p_base(y)."""
    if (base.n_ctx, base.n_vocab, base.n_chunk) != (other.n_ctx, other.n_vocab, other.n_chunk):
        raise SilentzoneError(f"{other.path}: header differs from {base.path}; both must come from the same corpus and chunking")
    if not np.array_equal(base.tokens, other.tokens):
        raise SilentzoneError(f"{other.path}: tokens differ from {base.path}; both must score the same tokens")
    y = base.targets()
    n = len(y)
    out = {"kld": np.empty(n), "top1": np.empty(n, dtype=bool), "nll_q": np.empty(n), "nll_R": np.empty(n), "dp": np.empty(n)}
    q_base = base.quantized()
    for start in range(0, n, batch):
        rows = slice(start, min(start + batch, n))
        lp_base = base.log_probs(rows).astype(np.float64)
        lp = other.log_probs(rows).astype(np.float64)
        check_rows(base, rows, lp_base)
        check_rows(other, rows, lp)
        # Stored values are exact log-softmax values (to uint16 rounding) wherever q > 0; where the
        # variant's own row was clamped (q = 0) its log-prob is only bounded above by min_log_prob.
        kept = q_base[rows] > 0
        out["kld"][rows] = np.where(kept, np.exp(lp_base) * (lp_base - lp), 0.0).sum(axis=1)
        idx = np.arange(rows.stop - rows.start)
        tok = y[rows]
        out["nll_R"][rows] = -lp_base[idx, tok]
        out["nll_q"][rows] = -lp[idx, tok]
        out["dp"][rows] = np.exp(lp[idx, tok]) - np.exp(lp_base[idx, tok])
        out["top1"][rows] = lp.argmax(axis=1) == np.where(kept, lp_base, -np.inf).argmax(axis=1)
    low = np.flatnonzero(out["kld"] < -KLD_TOLERANCE)
    if low.size:  # valid rows cannot give this; kept as the last guard on what we write
        i = int(low[0])
        raise SilentzoneError(
            f"{other.path}: token {i} has KLD {out['kld'][i]:.6g} against {base.path}, below −{KLD_TOLERANCE:.3g} "
            "(one uint16 step); the files are damaged or do not belong together"
        )
    return out


def token_table(base: KldFile, stats: dict[str, np.ndarray]):
    """The per-token statistics as a table in silentzone.schema's column order (no corpus: a .kld
    file does not name its text)."""
    import pandas as pd

    columns = {**base.positions(), "token": base.targets().astype(np.int64), **stats}
    return pd.DataFrame({c: columns[c] for c in TOKEN_COLUMNS if c in columns})


def summary(stats: dict[str, np.ndarray]) -> dict[str, float]:
    """The headline statistics of a llama.cpp log, from per-token arrays (fractions, not %)."""
    kld, dp = stats["kld"], stats["dp"]
    ln_ratio = stats["nll_q"] - stats["nll_R"]
    return {
        "n_tokens": float(len(kld)),
        "ppl_q": float(np.exp(stats["nll_q"].mean())),
        "ppl_base": float(np.exp(stats["nll_R"].mean())),
        "ln_ppl_ratio": float(ln_ratio.mean()),
        "kld_mean": float(kld.mean()),
        "kld_max": float(kld.max()),
        **{f"kld_p{name}": float(np.percentile(kld, p)) for name, p in (("99_9", 99.9), ("99", 99), ("95", 95), ("90", 90))},
        "kld_median": float(np.median(kld)),
        "kld_min": float(kld.min()),
        "dp_mean": float(dp.mean()),
        "rms_dp": float(np.sqrt(np.mean(dp**2))),
        "same_top_p": float(stats["top1"].mean()),
    }
