"""analyze: execute notebooks/NAME.ipynb with papermill → results/.

The notebook's `parameters` cell declares exactly the names `notebook_parameters` passes (a test
checks that), so a notebook runs the same inside its DVC stage and by hand in JupyterLab. Its one
computing cell calls silentzone.reports, which writes results/figures/NAME/*.{png,csv},
results/tables/NAME/*.csv and results/numbers/NAME.json; the executed copy goes to
results/notebooks/NAME.ipynb.
"""

from __future__ import annotations

import json

from .. import io, kernels
from ..config import Params
from ..errors import SilentzoneError
from ..layout import DEFAULT, Layout


def notebook_parameters(params: Params, name: str, layout: Layout = DEFAULT) -> dict:
    """What the stage passes into the notebook's parameters cell (all plain JSON values; paths
    relative to the run folder, the kernel's working directory)."""
    out = layout.notebook_outputs(name)
    return {
        "params_path": params.source,
        "processed_dir": str(layout.processed),
        "external_dir": str(layout.external),
        "figures_dir": str(out["figures_dir"]),
        "tables_dir": str(out["tables_dir"]),
        "numbers_path": str(out["numbers_path"]),
        "options": params.notebooks.options(name),
    }


def run(params: Params, name: str, layout: Layout = DEFAULT, kernel: str = "python3") -> str:
    """Execute one notebook on the collected tables (after checking their provenance); returns what to print."""
    from .. import provenance

    provenance.verify_processed(layout.processed, params)
    return _execute(params, name, layout, kernel)


def _execute(params: Params, name: str, layout: Layout, kernel: str) -> str:
    source = layout.root / "notebooks" / f"{name}.ipynb"
    if not source.exists():
        names = ", ".join(sorted(p.stem for p in source.parent.glob("*.ipynb")))
        raise SilentzoneError(f"{source}: no such notebook; choose one of {names}")
    parameters = notebook_parameters(params, name, layout)
    outputs = layout.notebook_outputs(name)
    for key in ("figures_dir", "tables_dir"):
        outputs[key].mkdir(parents=True, exist_ok=True)
    kernels.execute(source, outputs["notebook"], parameters, kernel, layout.root)
    # temps a killed earlier run's kernel left (kernels.execute waited for it to end)
    for folder in (outputs["figures_dir"], outputs["tables_dir"], outputs["numbers_path"].parent):
        io.remove_dead_writers_temps(folder)
    numbers = outputs["numbers_path"]
    if not numbers.exists():
        raise SilentzoneError(
            f"{source}: ran but wrote no {numbers}; its reports call must write the numbers (silentzone.reports)"
        )
    json.loads(numbers.read_text())  # valid JSON or a clear failure here rather than in the paper
    return f"{outputs['notebook']}: executed; numbers in {numbers}"
