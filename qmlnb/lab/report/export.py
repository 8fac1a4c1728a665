"""Build the summary report from run folders: a self-contained HTML page.

``python -m qmlnb report`` executes the summary notebook (``summary.ipynb`` beside
this module; ``notebooks/90-summary.ipynb`` links to it) with papermill (it calls
:mod:`.load`, :mod:`.tables` and :mod:`.plots`, which read only run folders'
``params.json``, ``metrics.json`` and CSV tables, never notebook outputs), then exports it with
nbconvert to ``reports/summary.html``: images inlined, no external resources,
code cells hidden behind a "show code" button.  Figures go to
``reports/figures/*.png`` and tables to ``reports/tables/*.csv``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ... import _util
from .load import ReportError, require_runs
from ..papermill_run import papermill_command

# shipped as package data, so an installed wheel can build a report; notebooks/90-summary.ipynb links here
SUMMARY_NOTEBOOK = Path(__file__).resolve().parent / "summary.ipynb"

# the page's nbconvert template (package data): `lab`, with no network resources and a "show code" button
TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE_NAME = "qmlnb_report"


def export_html(notebook: str | os.PathLike, html_path: str | os.PathLike, title: str = "qmlnb summary") -> Path:
    """Export an executed notebook to one self-contained HTML file, code hidden behind a toggle.

    Uses the ``qmlnb_report`` template (``templates/qmlnb_report/``, extending
    nbconvert's ``lab``): images are inlined as data URIs, and require.js,
    MathJax, Mermaid and the widget manager (loaded from a CDN by ``lab``) are
    left out, so the page needs no network.
    """
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name=TEMPLATE_NAME, extra_template_basedirs=[str(TEMPLATES)],
                            embed_images=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4),
                                          resources={"metadata": {"name": title}})
    return _util.atomic_write_text(html_path, body)


def build_report(runs_dir: str | os.PathLike = "runs", reports_dir: str | os.PathLike = "reports",
                 notebook: str | os.PathLike = SUMMARY_NOTEBOOK, timeout: int = 900) -> Path:
    """Run the summary notebook over ``runs_dir`` and export ``<reports_dir>/summary.html``.

    Raises ReportError (before running anything) when ``runs_dir`` holds no run
    at all or the summary notebook is missing (a sweep whose every run failed
    still gets a page listing the failures); a failing summary notebook raises
    ``RuntimeError`` with papermill's message.
    """
    runs_dir, reports_dir, notebook = Path(runs_dir).resolve(), Path(reports_dir).resolve(), Path(notebook)
    if not notebook.is_file():
        raise ReportError(f"summary notebook {notebook} not found")
    require_runs(runs_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    executed = reports_dir / "_build" / "summary.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    cmd = papermill_command(notebook, executed, cwd=reports_dir, timeout=timeout,
                            parameters={"runs_dir": str(runs_dir), "reports_dir": str(reports_dir)})
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the summary notebook failed (executed copy: {executed}):\n{proc.stderr[-3000:]}")
    return export_html(executed, reports_dir / "summary.html")


def add_arguments(parser) -> None:
    parser.add_argument("--runs-dir", default="runs", help="run folders to summarise (default: runs/)")
    parser.add_argument("--out", default="reports", help="report folder (default: reports/)")


def run(args) -> int:
    try:
        html = build_report(args.runs_dir, args.out)
    except ReportError as err:
        print(f"qmlnb report: {err}", file=sys.stderr)
        return 2
    print(f"report: {html}")
    return 0
