"""The torch engine: transformers in fp32 on the dequantized weights (every weight format simulated in
fp32 activations). Its code is the stages' own (stages/reference.py, fidelity.py, bench.py); this
module only loads the models the way each stage needs them."""

from __future__ import annotations


def reference(params, layout) -> list[str]:
    from ..model import load_reference
    from ..stages import reference as stage

    model, tokenizer = load_reference(params)
    return stage.run(params, layout, model, tokenizer)


def fidelity(params, layout, quant: str) -> str:
    from ..model.load import check_device
    from ..quant.load import check_name, load_quant
    from ..stages import fidelity as stage

    check_name(params, quant)
    check_device(params)
    stage.check_inputs(params, layout)
    model, tokenizer, report = load_quant(params, quant)
    return stage.run(params, layout, quant, model.eval(), tokenizer, report)


def bench(params, layout, name: str):
    from ..quant.load import check_name, load_quant
    from ..stages import bench as stage

    check_name(params, name)
    return stage.run(params, layout, name, lambda: load_quant(params, name)[:2])
