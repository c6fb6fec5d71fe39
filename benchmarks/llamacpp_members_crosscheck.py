"""Our KLD beside llama.cpp's on the same llama.cpp-made GGUF files and the same tokens.

    .venv/bin/python benchmarks/llamacpp_members_crosscheck.py [--windows 8] [--threads 2] [--only lq-q8_0 ...] [--rerun]

The members are cohort entries `{llama-quantize: TYPE}` (and one `{llama-quantize: Q4_K_M, imatrix:
calibration}`): llama.cpp's llama-quantize run once on the reference GGUF (the default profile's
SmolLM2-135M-Instruct Q4_1), the files cached under <run>/data/models/<model>/llamacpp/ (docs/quant.md).
Every member is scored twice on one file:

  ours      `silentzone fidelity <member>` in a run folder made as benchmarks/fidelity_vs_llamacpp.py
            makes one (`silentzone profile default`, params narrowed to the wiki corpus, `--windows`
            windows x 512 tokens, ctx_alt = ctx; `calibration` kept for the imatrix member), then
            `prepare` and `reference`. The member's GGUF is dequantized to fp32 and run by
            transformers; the KLD is against the fp32 reference store (the dequantized Q4_1 GGUF run
            by transformers), full vocabulary, positions 256...510 of each window.
  llama.cpp `llama-perplexity -m <that same GGUF> --kl-divergence-base ref.kld --kl-divergence`, where
            ref.kld holds llama.cpp's log-probs of the reference GGUF (run on its own kernels) over the
            run folder's prepared wiki.txt (`-c 512 --chunks WINDOWS`), the same positions scored.
            The script checks that ref.kld's tokens are our store's windows, token for token.

Two rows measure the runtime floor, i.e. what the two runtimes give on identical weights:

  reference (self)       `silentzone fidelity reference` (our fp32 path against itself) and
                         llama-perplexity on the reference GGUF against its own ref.kld (its only
                         error: the uint16 storage of the base log-probs)
  runtime floor          KL(llama.cpp's reference log-probs from ref.kld || our fp32 reference
                         log-probs from the store's hidden states and head), per token, summed as
                         llama.cpp sums (base entries above its 16-nat storage floor), same tokens
  member's floor         (per member; --no-member-floors skips it) the same for the member: llama.cpp's
                         log-probs of the member GGUF (a --kl-divergence-base run of it, deleted after)
                         against our fp32 member (load_quant, the fidelity stage's forward pass)

llama.cpp's KLD is the weights' effect plus both runs' runtime noise, so "ours + both floors" is
printed beside it (docs/quant.md, "Cross-check").

The checkout's src/ is copied to <workdir>/code/src when the run folder is built, and every
`silentzone` process (and this script) runs that copy: others editing the checkout meanwhile would
otherwise make the reference store's provenance stale halfway through.

Output: a table (member, bpw, 2-D matrix types, ours mean KLD, llama.cpp mean KLD, difference
llama.cpp - ours, llama.cpp's ± se, member's floor, ours + both floors) and benchmarks/out/llamacpp_members_crosscheck.{csv,json}
(git-ignored) with medians, p99, top-1 agreement, PPL ratios, file sha256 and walls besides. The last
line printed is one JSON object. Set-up files, logs and the run folder stay under --workdir
(default benchmarks/out/llamacpp_members_crosscheck) and are reused; a member whose fidelity report
exists is not rescored unless --rerun. Run it niced on a shared machine: each process takes
--threads cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = Path(__file__).resolve().parent


def bind_code(src: Path) -> None:
    """Import silentzone (and the helpers of fidelity_vs_llamacpp.py) from the run's code snapshot `src`.

    Others may edit the checkout while this runs for half an hour; the reference store's provenance
    names the code that made it, so every `silentzone` process and this script use one frozen copy.
    """
    global io, SilentzoneError, read_kld, parse_log, llamacpp, refstore, reference_gguf, timed
    sys.path.insert(0, str(src))
    sys.path.insert(1, str(BENCHMARKS))
    from fidelity_vs_llamacpp import reference_gguf, timed

    import silentzone  # noqa: F401  (first: fidelity_vs_llamacpp's own sys.path entry then finds it imported)
    from silentzone import io, refstore
    from silentzone.errors import SilentzoneError
    from silentzone.ingest.llamacpp_kld import read_kld
    from silentzone.ingest.llamacpp_log import parse_log
    from silentzone.quant import llamacpp

    if Path(silentzone.__file__).resolve().parent != (src / "silentzone").resolve():
        raise SystemExit(f"silentzone imported from {silentzone.__file__}, not from the snapshot {src}")


CTX = 512
CORPUS = "wiki"
# cohort name -> entry; the names follow profiles/default.yaml (lq- = made by llama-quantize)
MEMBERS = {
    "lq-q8_0": {"llama-quantize": "Q8_0"},
    "lq-q6_k": {"llama-quantize": "Q6_K"},
    "lq-q5_k_m": {"llama-quantize": "Q5_K_M"},
    "lq-q4_k_m": {"llama-quantize": "Q4_K_M"},
    "lq-q3_k_m": {"llama-quantize": "Q3_K_M"},
    "lq-q2_k": {"llama-quantize": "Q2_K"},
    "lq-iq4_xs": {"llama-quantize": "IQ4_XS"},
    "lq-q4_k_m+imat": {"llama-quantize": "Q4_K_M", "imatrix": "calibration"},
}
OUT = REPO / "benchmarks" / "out"


def snapshot_code(code: Path) -> None:
    """Copy the checkout's src/ to `code`/src and record which commit and which uncommitted files it holds."""
    if code.exists():
        shutil.rmtree(code)
    shutil.copytree(REPO / "src", code / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    git = lambda *a: subprocess.run(["git", "-C", str(REPO), *a], capture_output=True, text=True).stdout.strip()  # noqa: E731
    state = {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted_src": git("status", "--porcelain", "--", "src").splitlines(),
        "taken": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (code / "STATE.json").write_text(json.dumps(state, indent=1) + "\n")


def run_cli(run: Path, code: Path, args: list[str], threads: int, log: Path) -> float:
    """Wall seconds of one `python -m silentzone ARGS` (the snapshot's code) in the run folder; a failure stops the script."""
    e = dict(os.environ, PYTHONPATH=str(code / "src"), OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads))
    e.setdefault("TOKENIZERS_PARALLELISM", "false")
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "silentzone", *args], cwd=run, env=e, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
        raise SystemExit(f"silentzone {' '.join(args)} failed (exit {proc.returncode}), see {log}: {' | '.join(tail)}")
    return time.perf_counter() - start


def run_ready(run: Path, code: Path, windows: int, threads: int) -> bool:
    """The run folder (and the code snapshot that made it) exist for these settings."""
    params_file = run / "params.yaml"
    if not (
        (run / "data" / "reference" / "fidelity").exists() and params_file.exists() and (code / "src" / "silentzone").is_dir()
    ):
        return False
    p = yaml.safe_load(params_file.read_text())
    return p["fidelity"]["n_windows"] == windows and p["threads"] == threads and p["cohort"] == MEMBERS


def setup_run(run: Path, code: Path, windows: int, threads: int, logs: Path) -> None:
    """A run folder whose reference store holds `windows` x 512 tokens of wiki, and whose cohort is MEMBERS."""
    params_file = run / "params.yaml"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    shutil.copytree(REPO / "profiles", run / "profiles")
    run_cli(run, code, ["profile", "default"], threads, logs / "profile.log")
    p = yaml.safe_load(params_file.read_text())
    p["threads"] = threads
    p["corpora"] = {name: p["corpora"][name] for name in (CORPUS, "calibration")}  # calibration: the imatrix's text
    # ctx_alt = ctx: a single store, the one llama-perplexity scores too.
    p["fidelity"].update(corpora=[CORPUS], primary_corpus=CORPUS, n_windows=windows, ctx=CTX, ctx_alt=CTX)
    p["variants"] = {k: v for k, v in p["variants"].items() if "corpus" not in v and "ctx" not in v}
    p["cohort"] = MEMBERS
    params_file.write_text(yaml.safe_dump(p, sort_keys=False))
    for stage in ("prepare", "reference"):
        print(f"setup: silentzone {stage} {run_cli(run, code, [stage], threads, logs / f'{stage}.log'):.1f} s", flush=True)


def llamacpp_base(work: Path, run: Path, windows: int, threads: int) -> Path:
    """ref.kld: llama.cpp's log-probs of the reference GGUF over the run's prepared wiki text (built once)."""
    base = work / f"ref-c{CTX}-w{windows}.kld"
    corpus = run / "data" / "prepared" / "corpora" / f"{CORPUS}.txt"
    stamp = base.with_name(base.name + ".json")
    record = {"reference_sha256": io.sha256_file(reference_gguf(run)), "corpus_sha256": io.sha256_file(corpus)}
    if base.exists() and stamp.exists() and json.loads(stamp.read_text()) == record:
        return base
    t0 = time.perf_counter()
    tmp = base.with_suffix(".tmp.kld")
    timed(
        [
            llamacpp.find_tool("llama-perplexity"),
            "-m",
            reference_gguf(run),
            "-f",
            corpus,
            "-c",
            CTX,
            "--chunks",
            windows,
            "--kl-divergence-base",
            tmp,
            "-t",
            threads,
        ],
        work,
        threads,
        work / "logs" / "ref-base.log",
    )
    tmp.rename(base)
    stamp.write_text(json.dumps(record))
    print(f"setup: llama-perplexity reference base {time.perf_counter() - t0:.1f} s", flush=True)
    return base


def check_same_tokens(base, segment) -> None:
    """ref.kld's tokens and scored positions must be our store's, else the comparison is meaningless."""
    ours = segment.windows()
    theirs = np.asarray(base.tokens, dtype=np.int64).reshape(base.n_chunk, base.n_ctx)
    if ours.shape != theirs.shape or segment.first(0) != base.first_scored:
        raise SystemExit(
            f"token layout differs: ours {ours.shape} from {segment.first(0)}, llama.cpp {theirs.shape} from {base.first_scored}"
        )
    diff = np.argwhere(ours != theirs)
    if len(diff):
        w, pos = diff[0]
        raise SystemExit(
            f"{len(diff)} tokens differ between our store and llama.cpp's ref.kld, first at window {w} position {pos} "
            f"(ours {ours[w, pos]}, llama.cpp {theirs[w, pos]}); the two would not score the same text"
        )


def stored_vs_ours(stored, ours_log_probs) -> dict:
    """KL(llama.cpp's stored log-probs || ours) per scored token, summed as llama.cpp sums (entries above its
    16-nat storage floor); `ours_log_probs(w)` gives our float64 log-probs of window w's scored positions."""
    kld, top1, nll_ours, nll_lc = [], [], [], []
    targets = stored.targets()
    n = stored.n_scored
    for w in range(stored.n_chunk):
        rows = slice(w * n, (w + 1) * n)
        lp_ours = ours_log_probs(w)
        lp_lc = stored.log_probs(rows).astype(np.float64)
        kept = stored.quantized()[rows] > 0
        kld.append(np.where(kept, np.exp(lp_lc) * (lp_lc - lp_ours), 0.0).sum(1))
        top1.append(lp_ours.argmax(1) == lp_lc.argmax(1))
        y = targets[rows]
        nll_ours.append(-lp_ours[np.arange(n), y])
        nll_lc.append(-lp_lc[np.arange(n), y])
    kld, top1 = np.concatenate(kld), np.concatenate(top1)
    return {
        "n_tokens": len(kld),
        "kld_mean": float(kld.mean()),
        "kld_se": float(kld.std(ddof=1) / np.sqrt(len(kld))),
        "kld_median": float(np.median(kld)),
        "kld_p99": float(np.percentile(kld, 99)),
        "top1": float(top1.mean()),
        "ppl_ours": float(np.exp(np.concatenate(nll_ours).mean())),
        "ppl_llamacpp": float(np.exp(np.concatenate(nll_lc).mean())),
    }


def runtime_floor(base, segment, head) -> dict:
    """The reference's floor: llama.cpp's stored reference against our fp32 reference store (hidden states + head)."""
    import torch

    def ours(w):
        with torch.inference_mode():
            return torch.log_softmax(head(torch.from_numpy(segment.hidden(w))).double(), -1).numpy()

    return stored_vs_ours(base, ours)


def member_floor(run: Path, name: str, gguf: Path, corpus: Path, segment, work: Path, windows: int, threads: int) -> dict:
    """A member's own floor: llama.cpp's log-probs of the member GGUF (a --kl-divergence-base file of it, deleted
    after) against our fp32 member (quant.load_quant, the forward pass and lm head the fidelity stage uses)."""
    import torch

    from silentzone import config
    from silentzone.model import head as lm
    from silentzone.quant.load import load_quant

    stored_path = work / f"member-{name}.kld"
    try:
        timed(
            [
                llamacpp.find_tool("llama-perplexity"),
                "-m",
                gguf,
                "-f",
                corpus,
                "-c",
                CTX,
                "--chunks",
                windows,
                "--kl-divergence-base",
                stored_path,
                "-t",
                threads,
            ],
            work,
            threads,
            work / "logs" / f"member-base-{name}.log",
        )
        stored = read_kld(stored_path)
        if not np.array_equal(np.asarray(stored.tokens), np.asarray(read_kld(work / f"ref-c{CTX}-w{windows}.kld").tokens)):
            raise SystemExit(f"{stored_path}: its tokens differ from ref.kld's")
        cwd = os.getcwd()
        os.chdir(run)  # the run folder's relative data/ paths (cached llama.cpp files, prepared corpora)
        try:
            torch.set_num_threads(threads)
            params = config.load("params.yaml")
            model, _, _ = load_quant(params, name)
        finally:
            os.chdir(cwd)
        model.eval()
        cap = lm.softcap_of(model)
        tokens, first = segment.windows(), segment.first(0)

        def ours(w):
            with torch.inference_mode():
                hidden = lm.final_hidden(model, torch.from_numpy(tokens[w : w + 1]))[0, first : CTX - 1].float()
                return torch.log_softmax(lm.lm_logits(model, hidden, cap).double(), -1).numpy()

        return stored_vs_ours(stored, ours)
    finally:
        stored_path.unlink(missing_ok=True)


def ours_stats(run: Path, name: str) -> dict:
    """Our numbers for one member from its fidelity table and report."""
    import pandas as pd

    report = json.loads((run / "data" / "fidelity" / f"{name}.report.json").read_text())
    table = pd.read_parquet(run / "data" / "fidelity" / f"{name}.parquet")
    kld = table["kld"].to_numpy(np.float64)
    return {
        "report": report,
        "n_tokens": len(kld),
        "kld_mean": float(report["variants"]["kld_mean"]),
        "kld_se": float(kld.std(ddof=1) / np.sqrt(len(kld))),
        "kld_median": float(np.median(kld)),
        "kld_p99": float(np.percentile(kld, 99)),
        "top1": float(table["top1"].mean()),
        "ppl_ratio": float(np.exp((table["nll_q"] - table["nll_R"]).mean())),
    }


def llamacpp_stats(log: Path, name: str) -> dict:
    """llama.cpp's statistics from a --kl-divergence log (parse_log; a self-run's near-zero KLD read plainly)."""
    try:
        row = parse_log(log, name)
    except SilentzoneError as exc:  # e.g. the reference against itself: percentiles below 0 from uint16 rounding
        text = log.read_text(errors="replace")
        grab = lambda label: float(re.findall(rf"{label}\s*:\s*([-+0-9.eE]+)", text)[-1])  # noqa: E731
        row = {
            "kld_mean": grab(r"Mean\s+KLD"),
            "kld_median": grab(r"Median\s+KLD"),
            "kld_p99": grab(r"99\.0%\s+KLD"),
            "same_top_p": grab(r"Same top p") / 100,
            "ppl_ratio": grab(r"Mean PPL\(Q\)/PPL\(base\)"),
            "parse_note": str(exc),
        }
        row["kld_mean_se"] = float(re.findall(r"Mean\s+KLD\s*:\s*[-+0-9.eE]+\s*±\s*([-+0-9.eE]+)", text)[-1])
    return {
        "kld_mean": row["kld_mean"],
        "kld_se": row["kld_mean_se"],
        "kld_median": row["kld_median"],
        "kld_p99": row["kld_p99"],
        "top1": row["same_top_p"],
        "ppl_ratio": row["ppl_ratio"],
        **({"parse_note": row["parse_note"]} if "parse_note" in row else {}),
    }


def types_text(matrix_types: dict) -> str:
    """`q5_0 166, q8_0 15, ...`: 2-D matrices per ggml type, most first."""
    return ", ".join(f"{t} {n}" for t, n in sorted(matrix_types.items(), key=lambda kv: (-kv[1], kv[0])))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="+", choices=list(MEMBERS), help="score these members only (default: all)")
    ap.add_argument("--rerun", action="store_true", help="rescore members whose fidelity report exists")
    ap.add_argument("--no-member-floors", action="store_true", help="skip each member's own llama.cpp-vs-ours floor")
    ap.add_argument("--workdir", default=str(OUT / "llamacpp_members_crosscheck"))
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    work = Path(args.workdir).resolve()
    run, code, logs = work / "run", work / "code", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    ready = run_ready(run, code, args.windows, args.threads)
    if not ready:
        snapshot_code(code)
    bind_code(code / "src")
    if not ready:
        setup_run(run, code, args.windows, args.threads, logs)
    code_state = json.loads((code / "STATE.json").read_text())
    base_path = llamacpp_base(work, run, args.windows, args.threads)

    base = read_kld(base_path)
    segment = refstore.open_fidelity(run / "data" / "reference", CORPUS, CTX)
    head = refstore.read_head(run / "data" / "reference")
    check_same_tokens(base, segment)
    floor = runtime_floor(base, segment, head)
    del head
    print(f"tokens: ref.kld's {base.n_chunk} x {base.n_ctx} tokens are our store's; {floor['n_tokens']} scored", flush=True)
    print(
        f"runtime floor KL(llama.cpp reference || our fp32 reference): mean {floor['kld_mean']:.6f} ± {floor['kld_se']:.6f}, "
        f"median {floor['kld_median']:.6f}, p99 {floor['kld_p99']:.6f}, top-1 {floor['top1']:.4f}; "
        f"reference PPL ours {floor['ppl_ours']:.4f}, llama.cpp {floor['ppl_llamacpp']:.4f}",
        flush=True,
    )

    perplexity = llamacpp.find_tool("llama-perplexity")
    names = ["reference", *(args.only or MEMBERS)]
    rows = []
    for name in names:
        report_file = run / "data" / "fidelity" / f"{name}.report.json"
        ours_wall = None
        if args.rerun or not report_file.exists():
            ours_wall = run_cli(run, code, ["fidelity", name], args.threads, logs / f"ours-{name}.log")
        ours = ours_stats(run, name)
        qr = ours.pop("report")["quant_report"]
        gguf = (
            reference_gguf(run)
            if name == "reference"
            else (run / qr["file"] if not Path(qr["file"]).is_absolute() else Path(qr["file"]))
        )
        log = logs / f"llamacpp-{name}.log"
        lc_wall, _ = timed(
            [perplexity, "-m", gguf, "--kl-divergence-base", base_path, "--kl-divergence", "-t", args.threads],
            work,
            args.threads,
            log,
        )
        lc = llamacpp_stats(log, name)
        mfloor = None
        if name != "reference" and not args.no_member_floors:
            corpus = run / "data" / "prepared" / "corpora" / f"{CORPUS}.txt"
            mfloor = member_floor(run, name, gguf, corpus, segment, work, args.windows, args.threads)
        bpw = float(qr["bpw"])  # the reference: 32 (our fp32 tensors); llama.cpp runs the Q4_1 GGUF itself
        types = "ours: fp32 dequantization; llama.cpp: the Q4_1 GGUF" if name == "reference" else types_text(qr["matrix_types"])
        rows.append(
            {
                "member": name,
                "entry": json.dumps(MEMBERS.get(name), sort_keys=True) if name in MEMBERS else "reference",
                "bpw": bpw,
                "types": types,
                "gguf": str(gguf.relative_to(work) if gguf.is_relative_to(work) else gguf),
                "gguf_sha256": io.sha256_file(gguf),
                "tokens": ours["n_tokens"],
                **{f"{k}_ours": v for k, v in ours.items() if k != "n_tokens"},
                **{f"{k}_llamacpp": v for k, v in lc.items()},
                "kld_mean_diff": lc["kld_mean"] - ours["kld_mean"],
                **(
                    {}
                    if mfloor is None
                    else {
                        "member_floor_kld": mfloor["kld_mean"],
                        "member_floor_se": mfloor["kld_se"],
                        "member_floor_top1": mfloor["top1"],
                        "predicted_llamacpp": ours["kld_mean"] + floor["kld_mean"] + mfloor["kld_mean"],
                    }
                ),
                "ours_wall_s": None if ours_wall is None else round(ours_wall, 1),
                "llamacpp_wall_s": round(lc_wall, 1),
            }
        )
        r = rows[-1]
        print(
            f"{name}: ours {r['kld_mean_ours']:.6f}, llama.cpp {r['kld_mean_llamacpp']:.6f} ± {r['kld_se_llamacpp']:.6f}, "
            f"diff {r['kld_mean_diff']:+.6f}"
            + (f", member floor {mfloor['kld_mean']:.6f} (ours + both floors {r['predicted_llamacpp']:.6f})" if mfloor else "")
            + f"  (ours {r['ours_wall_s']} s, llama.cpp {r['llamacpp_wall_s']} s; "
            f"{time.perf_counter() - t_start:.0f} s so far, load {os.getloadavg()[0]:.2f})",
            flush=True,
        )
    rows.append(
        {
            "member": "runtime floor",
            "entry": "KL(llama.cpp reference || our fp32 reference)",
            "bpw": None,
            "types": "Q4_1 GGUF on llama.cpp vs its fp32 dequantization on transformers",
            "gguf": str(reference_gguf(run)),
            "gguf_sha256": io.sha256_file(reference_gguf(run)),
            "tokens": floor["n_tokens"],
            "kld_mean_ours": None,
            "kld_se_ours": None,
            "kld_median_ours": None,
            "kld_p99_ours": None,
            "top1_ours": None,
            "ppl_ratio_ours": None,
            "kld_mean_llamacpp": None,
            "kld_se_llamacpp": None,
            "kld_median_llamacpp": None,
            "kld_p99_llamacpp": None,
            "top1_llamacpp": None,
            "ppl_ratio_llamacpp": None,
            "kld_mean_diff": floor["kld_mean"],
            "floor_kld_se": floor["kld_se"],
            "floor_kld_median": floor["kld_median"],
            "floor_kld_p99": floor["kld_p99"],
            "floor_top1": floor["top1"],
            "floor_ppl_ratio": floor["ppl_llamacpp"] / floor["ppl_ours"],
        }
    )

    import pandas as pd

    table = pd.DataFrame(rows)
    csv_path, json_path = OUT / "llamacpp_members_crosscheck.csv", OUT / "llamacpp_members_crosscheck.json"
    io.write_csv(csv_path, table)
    load_end = os.getloadavg()[0]
    members = [r for r in rows if r["member"] in MEMBERS]
    diffs = [r["kld_mean_diff"] for r in members]
    summary = {
        "windows": args.windows,
        "ctx": CTX,
        "scored_tokens": floor["n_tokens"],
        "threads": args.threads,
        "runtime_floor_kld": round(floor["kld_mean"], 6),
        "runtime_floor_se": round(floor["kld_se"], 6),
        "members": {
            r["member"]: {
                "bpw": None if r["bpw"] is None else round(r["bpw"], 3),
                "ours": round(r["kld_mean_ours"], 6),
                "llamacpp": round(r["kld_mean_llamacpp"], 6),
                "llamacpp_se": round(r["kld_se_llamacpp"], 6),
                "diff": round(r["kld_mean_diff"], 6),
                **(
                    {"member_floor": round(r["member_floor_kld"], 6), "ours_plus_floors": round(r["predicted_llamacpp"], 6)}
                    if "member_floor_kld" in r
                    else {}
                ),
            }
            for r in rows
            if r["member"] != "runtime floor"
        },
        "diff_min": round(min(diffs), 6) if diffs else None,
        "diff_max": round(max(diffs), 6) if diffs else None,
        "same_ranking": [r["member"] for r in sorted(members, key=lambda r: r["kld_mean_ours"])]
        == [r["member"] for r in sorted(members, key=lambda r: r["kld_mean_llamacpp"])],
        "llama_perplexity": str(perplexity),
        "code": code_state,
        "wall_s": round(time.perf_counter() - t_start, 1),
        "load_avg": [round(load_start, 2), round(load_end, 2)],
        "csv": str(csv_path.relative_to(REPO)),
    }
    io.write_json(json_path, {"summary": summary, "rows": rows})

    print(
        f"\n{args.windows} windows x {CTX} tokens of {CORPUS}, {floor['n_tokens']} scored (positions {base.first_scored}...{CTX - 2}); "
        f"{args.threads} threads; wall {summary['wall_s']:.0f} s, load {load_start:.2f} -> {load_end:.2f}"
    )
    print(
        "| member | bpw | 2-D matrix types | ours mean KLD | llama.cpp mean KLD | llama.cpp − ours | llama.cpp ± se "
        "| member's floor | ours + both floors |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["member"] == "runtime floor":
            print(
                f"| runtime floor: KL(llama.cpp ref ‖ our fp32 ref) | — | {r['types']} | — | — | {r['kld_mean_diff']:.6f} "
                f"| {r['floor_kld_se']:.6f} | — | — |"
            )
            continue
        bpw = "—" if r["bpw"] is None else f"{r['bpw']:.3f}"
        extra = f"{r['member_floor_kld']:.6f} | {r['predicted_llamacpp']:.6f}" if "member_floor_kld" in r else "— | —"
        print(
            f"| {r['member']} | {bpw} | {r['types']} | {r['kld_mean_ours']:.6f} | {r['kld_mean_llamacpp']:.6f} | "
            f"{r['kld_mean_diff']:+.6f} | {r['kld_se_llamacpp']:.6f} | {extra} |"
        )
    print(f"wrote {csv_path.relative_to(REPO)} and {json_path.relative_to(REPO)}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
