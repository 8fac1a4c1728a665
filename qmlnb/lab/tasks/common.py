"""What every task shares: the run folder, saving a run, loading data, skipping a run that cannot apply here.

Every task returns plain data (dicts of metrics, pandas tables); :func:`save_run`
writes them into the run folder with ``qmlnb.lab.runs``' atomic writes:
``params.json``, the tables as CSV, then ``metrics.json`` (with
``provenance.environment()``).  The sweep writes the final ``status.json``.

A run that cannot apply on this machine (dataset files absent, Gram backend not
usable here) raises :class:`qmlnb.lab.runs.RunSkipped`; the sweep records it as
skipped with the reason instead of as a failure.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import provenance, runs, stages
from ... import _util
from ..._util import project_root
from ..runs import RunSkipped


def run_dir(task: str = "notebook") -> Path:
    """Folder this run writes to: ``$QMLNB_RUN_DIR`` under a sweep, else ``<project>/runs/interactive/<task>/``.

    ``task`` names the folder of a run made by hand (e.g. :data:`.stages.QCNN`).

    ``<project>`` is :func:`qmlnb._util.project_root`, whatever the working directory
    (a notebook opened in JupyterLab runs in ``notebooks/``, and writes nothing there).
    ``runs/`` is git-ignored, and the summary only reads folders with a
    ``status.json`` (written by the sweep), so interactive runs never reach it.
    """
    folder = Path(os.environ.get(runs.RUN_DIR_ENV) or project_root() / "runs" / stages.INTERACTIVE / task)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_run(folder: str | os.PathLike, params: dict, metrics: dict, tables: dict | None = None) -> Path:
    """Write ``params.json``, each table as ``<name>.csv`` and, last, ``metrics.json`` (all atomic).

    ``metrics`` gets an ``environment`` entry (machine, versions, git commit, time)
    from :func:`qmlnb.lab.provenance.environment` and a ``stage``: the grid's
    (``$QMLNB_STAGE``, set by the sweep) when there is one, else the ``stage``
    ``metrics`` names, else ``interactive`` (:func:`qmlnb.lab.stages.current_stage`), and a
    ``dataset_fallback`` ``{"asked", "used", "reason"}`` when the sweep ran this point on a fallback
    dataset (``$QMLNB_DATASET_FALLBACK``: the grid's first choice was not in the data directory).
    """
    folder = Path(folder)
    _util.atomic_write_json(folder / runs.PARAMS_FILE, params)
    for name, table in (tables or {}).items():
        runs.write_table(folder / f"{name}.csv", pd.DataFrame(table))
    metrics = {**metrics, "stage": stages.current_stage(metrics.get("stage"))}
    fallback = os.environ.get(runs.DATASET_FALLBACK_ENV)
    if fallback:
        metrics["dataset_fallback"] = json.loads(fallback)
    _util.atomic_write_json(folder / runs.METRICS_FILE, {**metrics, "environment": provenance.environment()})
    return folder


def load_data(dataset: str, classes=(3, 8), n_train: int | None = None, seed: int = 0, grayscale: bool = False):
    """``qmlnb.data.load_splits`` with absent files turned into :class:`RunSkipped` (data dir: ``$QMLNB_DATA_DIR``)."""
    from ...data import DataNotFoundError, load_splits

    try:
        return load_splits(dataset, classes=None if classes is None else tuple(classes), n_train=n_train or None, seed=seed, grayscale=grayscale)
    except DataNotFoundError as err:
        raise RunSkipped(f"dataset {dataset!r} is not in the data directory: {err}") from err


def check_backend(backend: str) -> None:
    """Raise :class:`RunSkipped` when a known Gram backend cannot run here (unknown names stay errors)."""
    from ...kernels.registry import unusable_reason

    why = unusable_reason(backend)  # an unknown name: UnknownBackendError, a ValueError
    if why:
        raise RunSkipped(why)


def take(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of a stratified subset of ``n`` of the labels ``y`` (all of them when n is 0 or >= len(y))."""
    from ...data import stratified_split

    if not n or n >= len(y):
        return np.arange(len(y))
    return stratified_split(y, n, np.random.default_rng(seed), "subset")[0]


def timing_columns(prefix: str, t) -> dict:
    """A Timing as flat table columns: median, IQR, min, n, compile_s (``<prefix>_s`` is the median)."""
    return {f"{prefix}_s": t.median, f"{prefix}_iqr_s": t.iqr, f"{prefix}_min_s": t.min, f"{prefix}_n": t.n,
            f"{prefix}_compile_s": t.compile_s}


def ratio_columns(name: str, r: dict) -> dict:
    """A ``qmlnb.timing.ratio`` as flat columns: the ratio of medians and the quartiles of the per-round ratios."""
    return {name: r["ratio"], f"{name}_q1": r["q1"], f"{name}_q3": r["q3"]}


DIAGNOSTIC_SCALARS = ("off_diagonal_mean", "off_diagonal_std", "effective_rank", "gaussian_gamma",
                      "gaussian_correlation", "alignment", "bandwidth", "bandwidth_at_grid_edge", "support_fraction",
                      "concentrated", "gaussian_like", "n_samples_diagnosed")


def flat_diagnostics(diagnostics: dict | None) -> tuple[dict, list[str]]:
    """A ``qmlnb.qsvm.diagnostics.kernel_diagnostics`` result as (flat scalars, warning sentences).

    The scalars (:data:`DIAGNOSTIC_SCALARS`, plus ``bandwidth_grid`` as a
    string) become one report column each; the warnings stay a list.  None or
    {} (a model without a Gram) gives ({}, []).
    """
    if not diagnostics:
        return {}, []
    flat = {key: diagnostics.get(key) for key in DIAGNOSTIC_SCALARS}
    grid = diagnostics.get("bandwidth_grid")
    flat["bandwidth_grid"] = None if grid is None else " ".join(f"{g:g}" for g in grid)
    return flat, list(diagnostics.get("warnings") or [])
