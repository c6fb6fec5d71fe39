"""llama.cpp in-process: the pinned build's shared library, driven through llama-cpp-python's low-level API.

One llama.cpp build serves the tools and this engine: `make llamacpp` builds libllama/libggml* into
PREFIX/lib (beside the tools in PREFIX/bin) and installs llama-cpp-python==0.3.36 with
LLAMA_BUILD=OFF, so the binding compiles nothing and loads those libraries through
LLAMA_CPP_LIB_PATH, set here before its first import. So the numbers of the engine and of
`llama-perplexity` come from the same compiled kernels (built with AMX off, see
scripts/build_llamacpp.sh), and the build's flags and the CPU's instruction-set features go into
every output's provenance (`build_info`).

`Model` holds one model and one context for a run of many calls (the model stays loaded across
corpora and tasks). `Model.run` decodes many sequences at once — up to `n_seq_max` sequences per
group, streamed through llama_decode in batches of `n_batch` tokens — and asks llama.cpp for logits
only at the positions a caller scores; a context made with `embeddings=True` also returns the final
hidden states (after the output norm: the input of the output matrix), which the reference stores.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import SilentzoneError
from ...quant import llamacpp as tools

LIB_ENV = "LLAMA_CPP_LIB_PATH"
BINDING_VERSION = "0.3.36"  # the llama-cpp-python whose sdist scripts/build_llamacpp.sh builds from
LIB_NAME = "libllama.so"
KV_TYPES = {"f32": 0, "f16": 1, "q8_0": 8, "bf16": 30}  # ggml_type ids of the KV cache types we allow


def library_dir() -> Path:
    """The folder holding libllama.so of the tools' build: $SILENTZONE_LLAMACPP_BIN/../lib, else beside
    the llama-quantize that quant.llamacpp.find_tool finds (PREFIX/bin -> PREFIX/lib)."""
    candidates = []
    if os.environ.get(tools.ENV_BIN):
        candidates.append(Path(os.environ[tools.ENV_BIN]).parent / "lib")
    try:
        candidates.append(tools.find_tool("llama-quantize").resolve().parent.parent / "lib")
    except SilentzoneError:
        pass
    for folder in candidates:
        if (folder / LIB_NAME).exists():
            return folder
    raise SilentzoneError(
        f"{LIB_NAME}: llama.cpp's shared library not found beside the tools ({', '.join(map(str, candidates)) or 'no tools found'}); "
        "run `make llamacpp` (builds the tools and the library, ~6 min) or set $SILENTZONE_LLAMACPP_BIN"
    )


_BINDING = None


def binding():
    """llama_cpp's low-level module, loaded on the tools' library (one line if either is missing)."""
    global _BINDING
    if _BINDING is not None:
        return _BINDING
    folder = library_dir()
    loaded = sys.modules.get("llama_cpp.llama_cpp")
    if loaded is not None and Path(os.environ.get(LIB_ENV, "")).resolve() != folder.resolve():
        raise SilentzoneError(
            f"llama_cpp was imported before silentzone set {LIB_ENV}={folder}; import silentzone's engine first"
        )
    os.environ[LIB_ENV] = str(folder)
    try:
        import llama_cpp
        import llama_cpp.llama_cpp as lib
    except ModuleNotFoundError:
        raise SilentzoneError(
            f"llama_cpp (llama-cpp-python=={BINDING_VERSION}) is not installed; run `make llamacpp` "
            "(it installs the binding on the tools' library, no compilation)"
        ) from None
    except (OSError, RuntimeError) as exc:
        raise SilentzoneError(
            f"{folder / LIB_NAME}: cannot be loaded ({exc}); delete {folder.parent} and run `make llamacpp`"
        ) from None
    if llama_cpp.__version__ != BINDING_VERSION:
        raise SilentzoneError(
            f"llama_cpp {llama_cpp.__version__} is installed, the engine is pinned to {BINDING_VERSION}; run `make llamacpp`"
        )
    _quiet(lib)
    lib.llama_backend_init()
    _BINDING = lib
    return lib


_LOG_CALLBACK = None


def _quiet(lib) -> None:
    """llama.cpp logs every load to stderr; keep its errors only (GGML_LOG_LEVEL_ERROR). Its warnings
    here are known and benign (no default pooling for a causal model, embeddings forcing every token
    to be an output), and a failure is reported by the call that fails."""
    global _LOG_CALLBACK

    def log(level, text, _user):
        if level == 4:  # GGML_LOG_LEVEL_ERROR
            sys.stderr.write(text.decode("utf-8", "replace"))

    _LOG_CALLBACK = lib.llama_log_callback(log)
    lib.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


def cpu_features() -> list[str]:
    """The CPU's SIMD instruction-set features (what llama.cpp's kernels, and so the last digits, depend on)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    keep = ("avx", "amx", "fma", "f16c", "sse4", "ssse3", "vnni", "bf16", "neon", "sve", "dotprod")
    return sorted(f for f in flags if f.startswith(keep) or any(k in f for k in ("vnni", "amx", "bf16")))


def build_info() -> dict:
    """What made the numbers: binding version, the build's flags (PREFIX/build-flags), llama.cpp's
    own system info (the kernels compiled in), and this CPU's features. Recorded in provenance."""
    lib = binding()
    folder = library_dir()
    flags_file = folder.parent / "build-flags"
    return {
        "binding": f"llama-cpp-python=={BINDING_VERSION}",
        "library_sha256": _sha256(folder / LIB_NAME),
        "build_flags": flags_file.read_text().strip() if flags_file.exists() else None,
        "system_info": lib.llama_print_system_info().decode("utf-8", "replace").strip(),
        "cpu_features": cpu_features(),
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).resolve().read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------- tokenizer


class Encoding(dict):
    """What a transformers tokenizer call returns, as far as silentzone reads it: ids by key or attribute."""

    @property
    def input_ids(self) -> list[int]:
        return self["input_ids"]


class Tokenizer:
    """llama.cpp's own tokenizer of a loaded model, in the shape silentzone's item code calls
    (`tok(text, add_special_tokens=...)`, `decode`, `bos_token_id`, `add_bos_token`). Special-token
    text is parsed as special tokens, as transformers' tokenizers do by default."""

    def __init__(self, lib, model_ptr):
        self._lib = lib
        self._vocab = lib.llama_model_get_vocab(model_ptr)
        self.vocab_size = int(lib.llama_vocab_n_tokens(self._vocab))
        self.add_bos_token = bool(lib.llama_vocab_get_add_bos(self._vocab))
        bos, eos = int(lib.llama_vocab_bos(self._vocab)), int(lib.llama_vocab_eos(self._vocab))
        self.bos_token_id = bos if bos >= 0 else None
        self.eos_token_id = eos if eos >= 0 else None

    def encode(self, text: str, add_special: bool) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 16
        while True:
            out = (self._lib.llama_token * cap)()
            n = self._lib.llama_tokenize(self._vocab, data, len(data), out, cap, add_special, True)
            if n >= 0:
                return list(out[:n])
            cap = -n

    def __call__(self, text: str, add_special_tokens: bool = True) -> Encoding:
        return Encoding(input_ids=self.encode(text, add_special_tokens))

    def piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self._vocab, int(token), buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, int(token), buf, len(buf), 0, special)
        return buf.raw[:n]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return b"".join(self.piece(t, not skip_special_tokens) for t in ids).decode("utf-8", "replace")

    chat_template: str | None = None  # the GGUF's tokenizer.chat_template (set by Model)

    def apply_chat_template(self, messages: list[dict], tokenize: bool = False, add_generation_prompt: bool = True) -> str:
        """The chat template rendered as transformers renders it (sandboxed Jinja, trim/lstrip blocks,
        the special tokens as text), so a prompt tokenizes to the torch engine's ids."""
        from jinja2.ext import loopcontrols
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise SilentzoneError(f"chat template: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        env.globals["raise_exception"] = raise_exception
        special = {
            "bos_token": self.decode([self.bos_token_id], False) if self.bos_token_id is not None else "",
            "eos_token": self.decode([self.eos_token_id], False) if self.eos_token_id is not None else "",
        }
        return env.from_string(self.chat_template).render(
            messages=messages, add_generation_prompt=add_generation_prompt, **special
        )

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, int(token)))

    def fingerprint(self) -> str:
        """sha256 of the (token text, id) pairs: every member must share the reference's vocabulary."""
        texts = [self._lib.llama_vocab_get_text(self._vocab, i).decode("utf-8", "replace") for i in range(self.vocab_size)]
        return hashlib.sha256(json.dumps(list(enumerate(texts)), ensure_ascii=False).encode()).hexdigest()


# ---------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Settings:
    """Everything of a llama.cpp context that can change a number (params `engine.llamacpp`, threads)."""

    threads: int
    n_batch: int
    n_ubatch: int
    flash_attn: bool
    repack: bool
    kv_type: str
    n_gpu_layers: int = 0


class _Batch:
    """A llama_batch over numpy arrays of `capacity` tokens (one sequence id per token), filled
    vectorised instead of token by token through ctypes."""

    def __init__(self, lib, capacity: int, n_seq_max: int):
        self.capacity = capacity
        self.token = np.zeros(capacity, np.int32)
        self.pos = np.zeros(capacity, np.int32)
        self.n_seq_id = np.ones(capacity, np.int32)
        self.logits = np.zeros(capacity, np.int8)
        self._seq_values = np.arange(n_seq_max, dtype=np.int32)
        self._seq_ptrs = np.zeros(capacity, np.uint64)
        self.struct = lib.llama_batch()
        self.struct.token = self.token.ctypes.data_as(ctypes.POINTER(lib.llama_token))
        self.struct.embd = ctypes.POINTER(ctypes.c_float)()
        self.struct.pos = self.pos.ctypes.data_as(ctypes.POINTER(lib.llama_pos))
        self.struct.n_seq_id = self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        self.struct.seq_id = ctypes.cast(self._seq_ptrs.ctypes.data, ctypes.POINTER(ctypes.POINTER(lib.llama_seq_id)))
        self.struct.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))

    def fill(self, tokens: np.ndarray, pos: np.ndarray, seq: np.ndarray, want) -> None:
        n = len(tokens)
        self.token[:n], self.pos[:n], self.logits[:n] = tokens, pos, want
        self._seq_ptrs[:n] = self._seq_values.ctypes.data + 4 * seq.astype(np.uint64)
        self.struct.n_tokens = n


class Model:
    """One GGUF loaded in llama.cpp (kept loaded across corpora and tasks); `context(...)` makes the
    contexts that run it. Use as a context manager (frees the model)."""

    def __init__(self, path, settings: Settings):
        lib = self._lib = binding()
        self.path, self.settings = Path(path), settings
        if not self.path.is_file():
            raise SilentzoneError(f"{self.path}: GGUF not found")
        mp = lib.llama_model_default_params()
        mp.n_gpu_layers = settings.n_gpu_layers
        mp.use_extra_bufts = settings.repack  # weight repacking (CPU extra buffer types)
        self._model = lib.llama_model_load_from_file(str(self.path).encode(), mp)
        if not self._model:
            raise SilentzoneError(f"{self.path}: llama.cpp cannot load this GGUF (see its error above); check the file")
        self.tokenizer = Tokenizer(lib, self._model)
        template = lib.llama_model_chat_template(self._model, None)
        self.tokenizer.chat_template = template.decode("utf-8") if template else None
        self.n_vocab = self.tokenizer.vocab_size
        self.n_embd = int(lib.llama_model_n_embd(self._model))
        self.device = "cpu"  # where silentzone's own arithmetic (the reference head, the metrics) runs

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if getattr(self, "_model", None):
            self._lib.llama_model_free(self._model)
            self._model = None

    def context(self, n_seq_max: int, seq_len: int, embeddings: bool = False) -> Context:
        return Context(self, n_seq_max, seq_len, embeddings)


class Context:
    """A llama.cpp context of `n_seq_max` sequences of up to `seq_len` tokens each (non-unified KV
    cache: each sequence its own cells). Use as a context manager (frees it)."""

    def __init__(self, model: Model, n_seq_max: int, seq_len: int, embeddings: bool = False):
        lib = self._lib = model._lib
        settings = self.settings = model.settings
        self.path, self.n_vocab, self.n_embd = model.path, model.n_vocab, model.n_embd
        self.n_seq_max, self.seq_len, self.embeddings = int(n_seq_max), int(seq_len), embeddings
        cp = lib.llama_context_default_params()
        cp.n_ctx = self.n_seq_max * self.seq_len
        cp.n_batch = settings.n_batch
        cp.n_ubatch = settings.n_ubatch
        cp.n_seq_max = self.n_seq_max
        cp.n_threads = cp.n_threads_batch = settings.threads
        cp.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if settings.flash_attn else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cp.type_k = cp.type_v = KV_TYPES[settings.kv_type]
        cp.embeddings = embeddings
        cp.pooling_type = lib.LLAMA_POOLING_TYPE_NONE
        cp.kv_unified = False
        cp.no_perf = True
        self._ctx = lib.llama_init_from_model(model._model, cp)
        if not self._ctx:
            raise SilentzoneError(f"{self.path}: llama.cpp could not create a context of {cp.n_ctx} tokens (memory?)")
        self._batch = _Batch(lib, settings.n_batch, self.n_seq_max)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._lib.llama_free(self._ctx)
            self._ctx = None

    def run(self, seqs: list, outputs: list) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Logits (float32, rows = outputs[i], vocabulary wide) of each sequence at the positions
        `outputs[i]` (sorted, unique), and with embeddings=True the final hidden states there too.
        Sequences run in groups of up to n_seq_max, their tokens in batches of n_batch."""
        logits, hidden = [None] * len(seqs), [None] * len(seqs) if self.embeddings else None
        for start in range(0, len(seqs), self.n_seq_max):
            group = list(range(start, min(start + self.n_seq_max, len(seqs))))
            self._run_group(seqs, outputs, group, logits, hidden)
        return logits, hidden

    def _run_group(self, seqs, outputs, group, logits, hidden) -> None:
        lib = self._lib
        lib.llama_memory_clear(lib.llama_get_memory(self._ctx), True)
        toks, pos, sid, want, owner, rank = [], [], [], [], [], []
        for j, i in enumerate(group):
            seq = np.asarray(seqs[i], dtype=np.int32)
            if len(seq) > self.seq_len:
                raise SilentzoneError(
                    f"{self.path}: a sequence of {len(seq)} tokens exceeds the context's {self.seq_len} per sequence"
                )
            out = np.asarray(outputs[i], dtype=np.int64)
            mark = np.zeros(len(seq), bool)
            mark[out] = True
            at = np.full(len(seq), -1, np.int64)
            at[np.flatnonzero(mark)] = np.arange(int(mark.sum()))  # row of each output in the sequence's result
            toks.append(seq)
            pos.append(np.arange(len(seq), dtype=np.int32))
            sid.append(np.full(len(seq), j, np.int32))
            want.append(mark)
            owner.append(np.full(len(seq), i, np.int64))
            rank.append(at)
            logits[i] = np.empty((int(mark.sum()), self.n_vocab), np.float32)
            if hidden is not None:
                hidden[i] = np.empty((int(mark.sum()), self.n_embd), np.float32)
        toks, pos, sid, want, owner, rank = (np.concatenate(a) for a in (toks, pos, sid, want, owner, rank))
        for a in range(0, len(toks), self.settings.n_batch):
            b = min(a + self.settings.n_batch, len(toks))
            # with embeddings every token is an output (llama.cpp's rule): mark them all, copy the wanted rows
            self._batch.fill(toks[a:b], pos[a:b], sid[a:b], 1 if self.embeddings else want[a:b])
            rc = lib.llama_decode(self._ctx, self._batch.struct)
            if rc != 0:
                raise SilentzoneError(f"{self.path}: llama_decode failed (code {rc}) on a batch of {b - a} tokens")
            wanted = np.flatnonzero(want[a:b])
            if len(wanted) == 0:
                continue
            n_out = b - a if self.embeddings else len(wanted)
            rows = wanted if self.embeddings else np.arange(len(wanted))  # llama.cpp's output row of each wanted token
            z = np.ctypeslib.as_array(lib.llama_get_logits(self._ctx), shape=(n_out, self.n_vocab))
            h = (
                np.ctypeslib.as_array(lib.llama_get_embeddings(self._ctx), shape=(n_out, self.n_embd))
                if self.embeddings
                else None
            )
            who, where = owner[a:b][wanted], rank[a:b][wanted]
            cuts = np.flatnonzero(np.diff(who)) + 1  # tokens of a sequence are consecutive: one block copy per sequence
            for lo, hi in zip([0, *cuts], [*cuts, len(who)]):
                i, r0, r1 = int(who[lo]), int(where[lo]), int(where[hi - 1]) + 1
                if rows[hi - 1] - rows[lo] == hi - 1 - lo:  # consecutive rows: one slice
                    logits[i][r0:r1] = z[rows[lo] : rows[hi - 1] + 1]
                    if h is not None:
                        hidden[i][r0:r1] = h[rows[lo] : rows[hi - 1] + 1]
                else:
                    logits[i][where[lo:hi]] = z[rows[lo:hi]]
                    if h is not None:
                        hidden[i][where[lo:hi]] = h[rows[lo:hi]]

    def greedy(self, prompt: list[int], max_new: int, stop) -> list[int]:
        """Greedy continuation of one prompt (argmax of llama.cpp's logits, one token per decode),
        until `stop(new_ids)` is true or max_new tokens; the KV cache carries the prompt."""
        lib = self._lib
        lib.llama_memory_clear(lib.llama_get_memory(self._ctx), True)
        new: list[int] = []
        tokens = np.asarray(prompt, dtype=np.int32)
        start = 0
        while True:
            if start + len(tokens) > self.seq_len:
                break
            for a in range(0, len(tokens), self.settings.n_batch):
                chunk = tokens[a : a + self.settings.n_batch]
                want = np.zeros(len(chunk), np.int8)
                if a + len(chunk) == len(tokens):
                    want[-1] = 1
                self._batch.fill(
                    chunk, np.arange(start + a, start + a + len(chunk), dtype=np.int32), np.zeros(len(chunk), np.int32), want
                )
                rc = lib.llama_decode(self._ctx, self._batch.struct)
                if rc != 0:
                    raise SilentzoneError(f"{self.path}: llama_decode failed (code {rc}) while generating")
            start += len(tokens)
            row = np.ctypeslib.as_array(lib.llama_get_logits_ith(self._ctx, -1), shape=(self.n_vocab,))
            token = int(np.argmax(row))
            new.append(token)
            if len(new) >= max_new or stop(new):
                break
            tokens = np.asarray([token], dtype=np.int32)
        return new
