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


def _sweep_dead_writers(outputs: dict) -> None:
    for folder in (outputs["figures_dir"], outputs["tables_dir"], outputs["numbers_path"].parent):
        io.remove_dead_writers_temps(folder)


def _execute(params: Params, name: str, layout: Layout, kernel: str) -> str:
    import papermill

    source = layout.root / "notebooks" / f"{name}.ipynb"
    if not source.exists():
        names = ", ".join(sorted(p.stem for p in source.parent.glob("*.ipynb")))
        raise SilentzoneError(f"{source}: no such notebook; choose one of {names}")
    parameters = notebook_parameters(params, name, layout)
    outputs = layout.notebook_outputs(name)
    for key in ("figures_dir", "tables_dir"):
        outputs[key].mkdir(parents=True, exist_ok=True)
    # a killed earlier run's kernel may still be writing here: let it end before this run writes
    kernels.wait_for_orphaned_kernels(layout.root)
    _sweep_dead_writers(outputs)
    with io.atomic_path(outputs["notebook"]) as tmp:
        try:
            papermill.execute_notebook(
                str(source),
                str(tmp),
                parameters=parameters,
                kernel_name=kernel,
                progress_bar=False,
                cwd=str(layout.root),
                request_save_on_cell_execute=False,
            )
        except papermill.PapermillExecutionError as exc:
            first = str(exc.evalue).splitlines()[0] if exc.evalue else ""
            if exc.ename == SilentzoneError.__name__:  # already one line naming the file and the fix (a full disk too)
                raise SilentzoneError(f"{source}: {first}") from None
            raise SilentzoneError(
                f"{source}: cell {exc.exec_count} failed: {exc.ename}: {first} (rerun it in JupyterLab to see the traceback)"
            ) from None
        kernels.coalesce_streams(tmp)  # the same bytes whatever the load
    _sweep_dead_writers(outputs)  # where /proc cannot show kernels (not Linux), their temps at least
    numbers = outputs["numbers_path"]
    if not numbers.exists():
        raise SilentzoneError(
            f"{source}: ran but wrote no {numbers}; its reports call must write the numbers (silentzone.reports)"
        )
    json.loads(numbers.read_text())  # valid JSON or a clear failure here rather than in the paper
    return f"{outputs['notebook']}: executed; numbers in {numbers}"
