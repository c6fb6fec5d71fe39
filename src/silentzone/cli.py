"""`silentzone <command>`: every stage of the pipeline and the tools beside it, one handler each.

Each handler validates params.yaml whole (silentzone.config; capture commands also the cohort's
members, silentzone.quant.members) before it reads or writes anything, then calls one library function. Heavy modules (torch, papermill) are imported inside handlers, so
`analyze-cohort` or `ingest` never pay for torch. Every failure is one line on stderr (exit 2); a
traceback only with --debug.
"""

from __future__ import annotations

import argparse
import sys

from .errors import SilentzoneError
from .layout import DEFAULT as LAYOUT


def _params(args):
    from . import config

    return config.load(args.params)


def _capture_params(args):
    """params.yaml validated whole, its cohort included: every recipe and member parses (silentzone.quant
    owns that vocabulary), checked before a capture command reads or writes anything."""
    from .quant.members import validate_cohort

    params = _params(args)
    validate_cohort(params.cohort, params.source, params.corpora)
    return params


# ----------------------------------------------------------------------------------- handlers


def cmd_profile(args) -> None:
    from . import config, io

    if args.show or not args.name:
        print(config.read_yaml(args.params).get("profile", "?"))
        return
    from .quant.members import validate_cohort

    raw = config.build_profile(args.name, args.profiles_dir)
    validate_cohort(raw["cohort"], f"{args.profiles_dir}/{args.name}.yaml", raw["corpora"])
    io.write_text(args.params, config.dump(raw))
    print(f"{args.params}: profile {args.name}")


def cmd_prepare(args) -> None:
    from .stages import prepare

    print("\n".join(prepare.run(_capture_params(args), LAYOUT)))


def _engine(args, params):
    """(engine module, layout) of the command: `--engine` or the run's engine (silentzone.engines)."""
    from . import engines

    name = engines.chosen(params, args.engine)
    return engines.get(name), LAYOUT.for_engine(params.engine.name, name)


def cmd_reference(args) -> None:
    params = _capture_params(args)
    engine, layout = _engine(args, params)
    print("\n".join(engine.reference(params, layout)))


def cmd_fidelity(args) -> None:
    params = _capture_params(args)
    engine, layout = _engine(args, params)
    print(engine.fidelity(params, layout, args.quant))


def cmd_bench(args) -> None:
    from .stages import bench

    params = _capture_params(args)
    engine, layout = _engine(args, params)
    print(bench.summary(args.model, engine.bench(params, layout, args.model)))


def cmd_server(args) -> None:
    from pathlib import Path

    from .quant.load import check_name

    params = _capture_params(args)
    check_name(params, args.member)
    if args.action == "export":
        from .server import export

        if not args.out:
            raise SilentzoneError("silentzone server export: give --out FOLDER (where the model directory is written)")
        print(export.export(params, args.member, Path(args.out)))
    else:
        from .server import client

        endpoint = client.checked_endpoint(params, args.member)
        print(
            f"{endpoint.base} ({endpoint.model}): serves the model, keeps token ids, returns prompt_logprobs at k = {params.fidelity.topk}"
        )


def cmd_fanout(args) -> None:
    from . import cluster

    params = _capture_params(args)
    print("\n".join(cluster.fanout(params, args.params, ".", args.address, args.gpus, args.notebooks, args.retries)))


def cmd_collect(args) -> None:
    from . import engines
    from .stages import collect

    params = _capture_params(args)
    print(collect.run(params, LAYOUT.for_engine(params.engine.name, engines.chosen(params, args.engine))))


def cmd_compare_engines(args) -> None:
    from . import engines
    from .stages import compare

    params = _params(args)
    print(compare.run(params, LAYOUT, engines.chosen(params, args.engine)))


def cmd_analyze(args) -> None:
    from .stages import analyze

    print(analyze.run(_params(args), args.notebook, LAYOUT, kernel=args.kernel))


def cmd_verdicts(args) -> None:
    from .stages import verdicts

    params = _params(args)
    engine = args.engine if args.engine not in (None, params.engine.name) else None
    if engine is not None and engine not in params.engine.also:
        raise SilentzoneError(
            f"{params.source}: --engine {engine} is neither engine.name ({params.engine.name}) nor one of engine.also "
            f"({', '.join(params.engine.also) or 'none'}); add it there or drop --engine"
        )
    print(verdicts.run(params, LAYOUT.for_engine(params.engine.name, engine)))


def cmd_paper(args) -> None:
    params = _params(args)
    if args.action == "inputs":
        from . import paper

        paper.write_inputs(params.model_dump(by_alias=True))  # the manuscript's facts read params as plain data
    else:
        from .stages import render

        render.run()


def cmd_analyze_cohort(args) -> None:
    import time
    from pathlib import Path

    from . import io, published

    if args.resamples < 100:
        raise SilentzoneError(
            f"{args.csv}: --resamples must be at least 100 (fewer cannot resolve p = 0.01), got {args.resamples}"
        )
    if not 0.5 < args.ci < 1:
        raise SilentzoneError(f"{args.csv}: --ci must lie between 0.5 and 1 (e.g. 0.95), got {args.ci}")
    scores = [c.strip() for group in args.score for c in group.split(",") if c.strip()]
    start = time.perf_counter()
    doc, tidy = published.analyze(
        Path(args.csv),
        args.fidelity,
        scores,
        args.name_col,
        args.reference_row,
        args.silent_margin,
        args.silent_k,
        args.seed,
        args.resamples,
        args.ci,
    )
    io.write_json(Path(args.out) / "correlations.json", doc)
    io.write_csv(Path(args.out) / "correlations.csv", tidy, float_format="%.9g")
    print(published.report(doc))
    print(f"wrote {args.out}/correlations.json and correlations.csv in {time.perf_counter() - start:.1f} s")


def cmd_ingest(args) -> None:
    from .ingest import cli as ingest_cli

    ingest_cli.run(args)


# ------------------------------------------------------------------------------------- parser


def _add_commands(sub, asked: str) -> None:
    from . import config

    p = sub.add_parser("profile", help="write params.yaml from profiles/<name>.yaml (tiny, quick, default, gemma)")
    p.add_argument("name", nargs="?", help="profile name (a file in profiles/)")
    p.add_argument("--show", action="store_true", help="print the profile params.yaml was made from")
    p.add_argument("--profiles-dir", default="profiles")
    p.set_defaults(handler=cmd_profile)

    sub.add_parser("prepare", help="build the calibration corpora and benchmark item subsets").set_defaults(handler=cmd_prepare)
    engine_help = (
        "engine to run (default: params engine.name; another must be in engine.also, outputs under data/engines/<engine>/)"
    )
    p = sub.add_parser("reference", help="run the reference over the corpora and store what fidelity needs")
    p.add_argument("--engine", default=None, help=engine_help)
    p.set_defaults(handler=cmd_reference)

    p = sub.add_parser("fidelity", help="per-token fidelity of one quant against the reference")
    p.add_argument("quant", help="quant name from params `cohort` (or `reference` for the self-check)")
    p.add_argument("--engine", default=None, help=engine_help)
    p.set_defaults(handler=cmd_fidelity)

    p = sub.add_parser("bench", help="per-item benchmark outcomes and per-prompt KLD of the reference or one quant")
    p.add_argument("model", help='"reference" (run it first) or a quant name from params `cohort`')
    p.add_argument("--engine", default=None, help=engine_help)
    p.set_defaults(handler=cmd_bench)

    p = sub.add_parser("server", help="inference servers: export a member as a model directory, or check a member's server")
    p.add_argument(
        "action", choices=["export", "check"], help="export: write MEMBER as a Hugging Face directory; check: probe its server"
    )
    p.add_argument("member", help="a cohort member (or `reference`)")
    p.add_argument("--out", help="export: the folder to write")
    p.set_defaults(handler=cmd_server)

    p = sub.add_parser(
        "fanout", help="the pipeline over a Ray cluster: one task per member (fidelity + bench), collect on the head"
    )
    p.add_argument("--address", default="auto", help="the Ray cluster (default: the one `ray start` joined here)")
    p.add_argument("--gpus", type=float, default=0.0, help="GPUs per member task (a GPU cluster)")
    p.add_argument("--retries", type=int, default=3, help="times a task whose worker died is rerun")
    p.add_argument("--notebooks", action="store_true", help="also run every analysis notebook and the paper inputs on the head")
    p.set_defaults(handler=cmd_fanout)

    p = sub.add_parser("collect", help="join per-model outputs into data/processed/{cohort,items}.parquet")
    p.add_argument("--engine", default=None, help=engine_help)
    p.set_defaults(handler=cmd_collect)

    p = sub.add_parser(
        "compare-engines", help="the run's engine beside another of engine.also: per-quant KLD and scores, Spearman ρ"
    )
    p.add_argument("engine", help="an engine of params engine.also")
    p.set_defaults(handler=cmd_compare_engines)

    p = sub.add_parser("analyze-cohort", help="fidelity-vs-score correlations, full and silent zone, for any cohort CSV")
    p.add_argument("csv", help="cohort CSV: one row per quant, fidelity and score columns (`#` comment lines allowed)")
    p.add_argument(
        "--fidelity",
        action="append",
        required=True,
        metavar="COL",
        help="fidelity column (larger = further from the reference); repeat for several",
    )
    p.add_argument(
        "--score", action="append", required=True, metavar="COL[,COL...]", help="score column(s); the composite is their mean"
    )
    p.add_argument("--name-col", default=None, help="column naming the quant (default: the first column)")
    p.add_argument(
        "--reference-row",
        default=None,
        metavar="NAME",
        help="name of the reference row (default: the one row whose name contains 'reference')",
    )
    # Not required at the argparse level: its error would be a usage block, not one line (published.NO_RULE).
    zone = p.add_mutually_exclusive_group()
    zone.add_argument(
        "--silent-margin",
        type=float,
        default=None,
        metavar="X",
        help="silent zone: |composite − reference composite| ≤ X, in score units (this or --silent-k is required)",
    )
    zone.add_argument(
        "--silent-k", type=int, default=None, metavar="K", help="silent zone: the K quants with the lowest first --fidelity"
    )
    defaults = config.ANALYZE_COHORT_DEFAULTS
    p.add_argument("--seed", type=int, default=defaults["seed"], help="seed of every resample (default: profiles/default.yaml's)")
    p.add_argument("--resamples", type=int, default=defaults["resamples"], help="permutation and bootstrap resamples")
    p.add_argument("--ci", type=float, default=defaults["ci"])
    p.add_argument("--out", required=True, metavar="DIR", help="writes DIR/correlations.json and DIR/correlations.csv")
    p.set_defaults(handler=cmd_analyze_cohort)

    p = sub.add_parser(
        "verdicts", help="every claim's tests and verdict on the collected cohort -> results/numbers/verdicts.json"
    )
    p.add_argument("--engine", default=None, help="a further engine of engine.also: its cohort's verdicts, beside its tables")
    p.set_defaults(handler=cmd_verdicts)

    p = sub.add_parser("analyze", help="execute one analysis notebook with papermill")
    p.add_argument("notebook", help="notebook name without .ipynb, e.g. 01-fidelity-vs-score")
    p.add_argument("--kernel", default="python3")
    p.set_defaults(handler=cmd_analyze)

    # These commands have many options of their own: attach them only when the command is asked for,
    # so that, e.g., `silentzone prepare` never imports scipy.
    delegated = {
        "paper": ("silentzone.paper", "write paper/_variables.yml from results/numbers, or render the manuscript", cmd_paper),
        "ingest": (
            "silentzone.ingest.cli",
            "turn llama.cpp / lm-eval / LiveCodeBench outputs into cohort and item tables",
            cmd_ingest,
        ),
    }
    for name, (module, help_text, handler) in delegated.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        if name == asked:
            import importlib

            importlib.import_module(module).add_arguments(p)


class _Parser(argparse.ArgumentParser):
    """A usage error is one line like every other failure (argparse would print the usage first);
    subparsers are made of the same class, so theirs are too."""

    def error(self, message):
        raise SilentzoneError(f"{message}; see `{self.prog} --help`")


def build_parser(asked: str = "") -> argparse.ArgumentParser:
    parser = _Parser(
        prog="silentzone",
        description="Displacement Is Not Direction, reproduced: do fidelity metrics (KLD, PPL, top-1) predict the benchmark quality of quantized LLMs?",
    )
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    parser.add_argument("--debug", action="store_true", help="on failure, print the full traceback")
    _add_commands(parser.add_subparsers(dest="command", metavar="COMMAND", required=True), asked)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    command = _command(argv)
    try:
        args = build_parser(command).parse_args(argv)
        result = args.handler(args)
    except SilentzoneError as exc:
        return _fail(f"{_prog(command)}: error: {exc}", debug)
    except KeyboardInterrupt:
        print("silentzone: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except SystemExit as exc:  # argparse: usage errors print their own line
        return int(exc.code or 0) if isinstance(exc.code, int) else 2
    except Exception as exc:  # noqa: BLE001 — the one place every unexpected failure becomes one line
        return _fail(
            f"{_prog(command)}: error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
            "(a bug or an unreadable input; rerun with --debug for the traceback and report it)",
            debug,
        )
    return int(result or 0)


def _command(argv: list[str]) -> str:
    """The subcommand named in argv (skipping the value of --params)."""
    rest = iter(argv)
    for arg in rest:
        if arg == "--params":
            next(rest, None)
        elif not arg.startswith("-"):
            return arg
    return ""


def _prog(command: str) -> str:
    return f"silentzone {command}" if command else "silentzone"


def _fail(message: str, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exc()
    print(message.replace("  ", " "), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
