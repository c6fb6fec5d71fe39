"""`silentzone <command>`: a thin layer over the library. Each command lives in the module named
below, which defines `add_arguments(parser)` and `run(args)`; modules are imported only when their
command runs, so `analyze-cohort` or `ingest` never pay for importing torch."""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import SilentzoneError

COMMANDS = {
    # name: (module, one-line help)
    "profile": ("silentzone.profile_cmd", "write params.yaml from profiles/<name>.yaml (tiny, quick, default, gemma)"),
    "prepare": ("silentzone.corpora", "build the calibration corpora and benchmark item subsets"),
    "reference": ("silentzone.reference", "run the reference model over the corpora and store what fidelity needs"),
    "fidelity": ("silentzone.fidelity", "per-token fidelity of one quant against the reference"),
    "bench": ("silentzone.bench.run", "per-item benchmark outcomes and per-prompt KLD of the reference or one quant"),
    "collect": ("silentzone.collect", "join per-quant outputs into data/processed/{cohort,items}.parquet"),
    "analyze": ("silentzone.notebooks", "execute one analysis notebook with papermill"),
    "paper": ("silentzone.paper", "write paper/_variables.yml from results/numbers and render the manuscript"),
    "analyze-cohort": ("silentzone.cohort_cmd", "fidelity-vs-score correlations, full and silent zone, for any cohort CSV"),
    "ingest": ("silentzone.ingest.cli", "turn llama.cpp / lm-eval / LiveCodeBench outputs into cohort and item tables"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="silentzone", description=__doc__.split("\n")[0])
    parser.add_argument("--params", default="params.yaml", help="parameter file (default: params.yaml)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module_name)
        # Only the module of the command actually asked for is imported, see _add_arguments.
        p.set_defaults(_name=name)
    return parser


def _add_arguments(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Attach the chosen command's own arguments (lazy import of just that module)."""
    names = [a for a in argv if not a.startswith("-")]
    sub_actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for name in names:
        if name in COMMANDS:
            module = importlib.import_module(COMMANDS[name][0])
            module.add_arguments(sub_actions[0].choices[name])
            return


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        _add_arguments(parser, argv)
        args = parser.parse_args(argv)
        module = importlib.import_module(args._module)
        result = module.run(args)
    except SilentzoneError as exc:
        print(f"silentzone {argv[0] if argv else ''}: error: {exc}".replace("  ", " "), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("silentzone: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
