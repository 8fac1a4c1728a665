"""Notebooks saved in the repository carry no outputs, so the repository never shows a stale result.

Every notebook under notebooks/ (and the summary notebook shipped in the package) must have, in each code
cell, no outputs and no execution count, and no per-run metadata (papermill's, execution timings, widget
state). Strip one by clearing its outputs in JupyterLab (Edit > Clear Outputs of All Cells) before saving,
or with `jupyter nbconvert --clear-output --inplace FILE`.
"""
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted({p.resolve() for p in [*(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "qmlnb").rglob("*.ipynb")]
                    if ".ipynb_checkpoints" not in p.parts})
# what running a notebook leaves in its metadata (papermill, JupyterLab's cell timing, ipywidgets' saved state)
RUN_METADATA = {"papermill", "execution", "widgets"}


def leftovers(nb) -> list[str]:
    """What in ``nb`` comes from running it: one line per cell or metadata key."""
    found = [f"notebook metadata {key!r}" for key in RUN_METADATA & set(nb.metadata)]
    for index, cell in enumerate(nb.cells):
        where = f"cell {index} ({cell.cell_type})"
        if cell.cell_type == "code":
            if cell.get("outputs"):
                found.append(f"{where}: {len(cell.outputs)} output(s)")
            if cell.get("execution_count") is not None:
                found.append(f"{where}: execution count {cell.execution_count}")
        found += [f"{where}: metadata {key!r}" for key in RUN_METADATA & set(cell.metadata)]
    return found


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"00-explore.ipynb", "10-train-qcnn.ipynb", "summary.ipynb"} <= names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: str(p.relative_to(ROOT)))
def test_saved_notebooks_have_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    assert leftovers(nb) == [], f"{path.relative_to(ROOT)} was saved after a run; clear its outputs"


def test_the_check_sees_a_run_notebook():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# title"),
                                         nbformat.v4.new_code_cell("1 + 1")])
    assert leftovers(nb) == []
    nb.cells[1].execution_count = 3
    nb.cells[1].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=3)]
    nb.cells[1].metadata["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
    nb.metadata["papermill"] = {"parameters": {}}
    assert leftovers(nb) == ["notebook metadata 'papermill'", "cell 1 (code): 1 output(s)",
                             "cell 1 (code): execution count 3", "cell 1 (code): metadata 'execution'"]
