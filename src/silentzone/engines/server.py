"""The server engine: each cohort member measured through its own OpenAI-compatible server (vLLM's
prompt_logprobs; silentzone.server, docs/server.md), from params `engine.server.members`.

The reference's stores hold its hidden states, which no server returns: `reference` and `bench
reference` run in-process (the torch engine). `fidelity NAME` (the reference too, as a self-check)
and `bench NAME` go through NAME's server, probed for the known quirks first, and write the same
files as every engine; what a top-k cannot give is NaN and named in the report (`unavailable`), the
server in the report and stamp (`engine`).
"""

from __future__ import annotations

from . import torch as in_process


def reference(params, layout) -> list[str]:
    return in_process.reference(params, layout)


def _endpoint(params, layout, name: str):
    from ..errors import SilentzoneError
    from ..server import client

    if name not in params.engine.server.members:
        raise SilentzoneError(
            f"{params.source}: engine server: {name!r} has no server in engine.server.members; give it {{url, model}} (docs/server.md)"
        )
    return client.checked_endpoint(params, name, layout)


def member_report(params, name: str) -> dict:
    """bpw and the member's description: given with its endpoint (a model only the server has), else
    from its recipe (the member is built in-process once, as for the torch engine's report)."""
    given = params.engine.server.members[name].bpw
    if given is not None:
        return {"bpw": given, "quant": name, "source": "server"}
    from ..quant.load import load_quant

    return load_quant(params, name)[2]


def fidelity(params, layout, quant: str) -> str:
    from ..quant.load import check_name
    from ..server import fidelity as served
    from ..stages import fidelity as stage

    check_name(params, quant)
    stage.check_inputs(params, layout)
    endpoint = _endpoint(params, layout, quant)
    table = served.per_token_table(params, layout, quant, endpoint)  # every response read and checked: nothing written yet
    return stage.write_outputs(params, layout, quant, table, member_report(params, quant), served.report_fields(params, endpoint))


class ServedContext:
    """What the bench stage's loop holds for a served member: its server and the reference's tokenizer."""

    def __init__(self, name: str, endpoint, tokenizer):
        self.name, self.endpoint, self.tokenizer = name, endpoint, tokenizer
        self.segments: dict = {}


def _score_task(params, layout, ctx: ServedContext, task: str):
    from ..bench import code, sandbox
    from ..errors import SilentzoneError
    from ..server import bench as served
    from ..stages import bench as stage

    stage.check_sandbox(params, task)

    def run_tests(item, gen):
        try:
            return code.run_tests(item, gen, stage.limits(params), params.bench.allow_weak_sandbox)
        except sandbox.SandboxError as exc:
            raise SilentzoneError(f"task {task!r}: {exc}") from None

    return served.run_task(params, layout, ctx.name, ctx.endpoint, ctx.tokenizer, task, run_tests)


def bench(params, layout, name: str):
    from ..quant.load import check_name
    from ..schema import REFERENCE
    from ..server import bench as served
    from ..stages import bench as stage

    if name == REFERENCE:  # the reference's bench store (its hidden states) is made in-process
        return in_process.bench(params, layout, name)
    check_name(params, name)
    endpoint = _endpoint(params, layout, name)
    return stage.run(
        params,
        layout,
        name,
        None,
        open_context=lambda p, lay, n, _: ServedContext(n, endpoint, served.tokenizer_of(p, lay)),
        score_task=_score_task,
        stamp_extra={"engine": {"kind": "server", "url": endpoint.base, "model": endpoint.model}},
    )
