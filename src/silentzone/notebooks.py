"""`silentzone analyze NOTEBOOK`: execute notebooks/NOTEBOOK.ipynb with papermill.

The notebook's `parameters` cell declares exactly the names `notebook_parameters` passes (a test
checks that), so a notebook runs the same inside its DVC stage and by hand in JupyterLab. Outputs:
results/notebooks/NOTEBOOK.ipynb (executed), results/figures/NOTEBOOK/*.{png,csv},
results/tables/NOTEBOOK/*.csv and results/numbers/NOTEBOOK.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import config, io
from .errors import SilentzoneError

NOTEBOOKS_DIR = Path("notebooks")


def add_arguments(p):
    p.add_argument("notebook", help="notebook name without .ipynb, e.g. 01-fidelity-vs-score")
    p.add_argument("--kernel", default="python3")


def notebook_parameters(params: dict, name: str) -> dict:
    """What the DVC stage passes into the notebook's parameters cell (all plain JSON values)."""
    results = Path(config.PATHS["results"])
    own = dict(config.get(params, f"notebooks.{name}", dict, default={}) or {})
    return {
        "params_path": str(params.get("_source", "params.yaml")),
        "processed_dir": config.PATHS["processed"],
        "external_dir": config.PATHS["external"],
        "figures_dir": str(results / "figures" / name),
        "tables_dir": str(results / "tables" / name),
        "numbers_path": str(results / "numbers" / f"{name}.json"),
        "options": own,
    }


def run(args):
    import papermill

    params = config.load(args.params)
    source = NOTEBOOKS_DIR / f"{args.notebook}.ipynb"
    if not source.exists():
        names = ", ".join(sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb")))
        raise SilentzoneError(f"{source}: no such notebook; choose one of {names}")
    out = Path(config.PATHS["results"]) / "notebooks" / source.name
    parameters = notebook_parameters(params, args.notebook)
    for key in ("figures_dir", "tables_dir"):
        Path(parameters[key]).mkdir(parents=True, exist_ok=True)
    with io.atomic_path(out) as tmp:
        try:
            papermill.execute_notebook(
                str(source), str(tmp), parameters=parameters, kernel_name=args.kernel,
                progress_bar=False, cwd=str(Path.cwd()), request_save_on_cell_execute=False,
            )
        except papermill.PapermillExecutionError as exc:
            raise SilentzoneError(
                f"{source}: cell {exc.exec_count} failed: {exc.ename}: {str(exc.evalue).splitlines()[0] if exc.evalue else ''}"
                f" (executed copy with the traceback: {tmp.name} is removed; rerun in JupyterLab to debug)"
            ) from None
    numbers = Path(parameters["numbers_path"])
    if not numbers.exists():
        raise SilentzoneError(f"{source}: ran but wrote no {numbers}; its last cell must call silentzone.io.write_numbers")
    json.loads(numbers.read_text())  # valid JSON or a clear failure here rather than in the paper
    print(f"{out}: executed; numbers in {numbers}")
    return 0
