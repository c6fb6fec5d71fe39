"""The engines that run the models: the one dispatch of every capture stage (docs/design.md, "Engines").

    engine = engines.get("llamacpp")                 # a module with the three functions below
    engine.reference(params, layout) -> list[str]    # `silentzone reference`: the reference store
    engine.fidelity(params, layout, quant) -> str    # `silentzone fidelity QUANT`: per-token table + report
    engine.bench(params, layout, model) -> table     # `silentzone bench MODEL` (model: "reference" or a quant)

Every engine writes the same files with the same schema (silentzone.schema); `layout` says where
(layout.Layout.for_engine: the run's own engine, params `engine.name`, writes data/…; each engine of
`engine.also` writes data/engines/<engine>/…). `collect` is engine-agnostic: it reads one layout.

  torch     transformers in fp32 on the dequantized weights (the simulation; the stages' own code)
  llamacpp  GGUF files through llama.cpp's kernels, in-process (as deployed; engines/llamacpp/)
  server    each member through its own OpenAI-compatible server (vLLM; engines/server.py, docs/server.md)

Imports are static and inside `get`, so provenance and tests/test_dvc_deps.py see every engine's code
and a stage that runs one engine never imports another's heavy modules.
"""

from __future__ import annotations

from ..errors import SilentzoneError

NAMES = ("torch", "llamacpp", "server")


def get(name: str):
    """The module of engine `name`."""
    if name == "torch":
        from . import torch as engine
    elif name == "llamacpp":
        from . import llamacpp as engine
    elif name == "server":
        from . import server as engine
    else:
        raise SilentzoneError(f"unknown engine {name!r}; engines are {', '.join(NAMES)}")
    return engine


def chosen(params, asked: str | None) -> str:
    """The engine a command runs: `--engine` when given (it must be one the params name), else engine.name."""
    if asked is None:
        return params.engine.name
    if asked not in params.engine.all():
        raise SilentzoneError(
            f"{params.source}: --engine {asked!r} is not an engine of this run (engine.name {params.engine.name!r}, "
            f"engine.also {params.engine.also}); add it to engine.also"
        )
    return asked
