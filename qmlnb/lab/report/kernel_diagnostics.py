"""The report's kernel diagnostics: one row per QSVM run with its training Gram's diagnostics, and the
concentration plot drawn from that table (what ``qmlnb.qsvm.diagnostics`` measured, as ``tasks.qsvm_run``
recorded it)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...qsvm.diagnostics import at_grid_edge
from ...qsvm.svm import DEFAULT_CS
from .. import stages
from ..tasks import qsvm as qsvm_task
from .controls import SCORE, _column, _flag, _task_frame

DIAGNOSTIC_COLUMNS = ("off_diagonal_mean", "off_diagonal_std", "gaussian_correlation", "alignment", "effective_rank",
                      "bandwidth", "bandwidth_grid", "bandwidth_at_grid_edge", "support_fraction")


def kernel_diagnostics_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per QSVM run: its training Gram's diagnostics (``tasks.qsvm_run``'s ``kernel_diagnostics``).

    Columns: stage, dataset, classes, backend, n_qubits, seed, the
    :data:`DIAGNOSTIC_COLUMNS` (off-diagonal mean and std, correlation with the
    best Gaussian, alignment, effective rank, chosen bandwidth, its grid and
    whether it sits on the grid's edge, support-vector fraction), the C chosen by cross-validation with its
    grid and whether it sits on the grid's edge (also said in ``warnings``), the QSVM's
    score, ``g_fidelity`` / ``g_projected`` (the geometric difference of each quantum kernel against the RBF
    control, where recorded) and the projected kernel's score, ``degenerate`` and ``warnings`` (the
    diagnostics' sentences, "; "-joined).
    Runs recorded before the diagnostics existed are left out.
    """
    from .load import select_task

    runs = select_task(frame, stages.QSVM)
    spread = qsvm_task.DIAGNOSTICS.join("off_diagonal_std")
    if runs.empty or spread not in runs:
        return pd.DataFrame()
    runs = runs[runs[spread].notna()]
    task = _task_frame(runs, ())
    out = pd.DataFrame({"stage": task["stage"], "dataset": task["dataset"], "classes": task["classes"],
                        "backend": _column(runs, "backend"), "n_qubits": _column(runs, "n_qubits"),
                        "seed": task["seed"]})
    for name in DIAGNOSTIC_COLUMNS:
        out[name] = _column(runs, qsvm_task.DIAGNOSTICS.join(name))
    # C is chosen by cross-validation over qmlnb.qsvm.svm.DEFAULT_CS (C="auto"): flagged at the grid's edge like
    # the bandwidth (a C on the edge may want a wider grid); NaN where the run fixed C or recorded none
    out["C"] = pd.to_numeric(_column(runs, qsvm_task.PARAMS.join("C")), errors="coerce")
    out["C_grid"] = " ".join(f"{c:g}" for c in DEFAULT_CS)
    out["C_at_grid_edge"] = [at_grid_edge(c, DEFAULT_CS) if pd.notna(c) else None for c in out["C"]]
    out[SCORE] = _column(runs, qsvm_task.SCORES.join(SCORE))
    # the geometric difference g(K_rbf || K) of each quantum kernel against the RBF control (qsvm.geometric)
    for kernel in ("fidelity", "projected"):
        out[f"g_{kernel}"] = _column(runs, qsvm_task.GEOMETRIC_DIFFERENCE.join(kernel))
    out["projected_" + SCORE] = _column(runs, qsvm_task.PROJECTED_SCORES.join(SCORE))
    out["degenerate"] = [_flag(v) for v in _column(runs, qsvm_task.SCORES.join("degenerate"), False)]
    out["warnings"] = ["; ".join([*(w if isinstance(w, list) else []),
                                  *([f"C={c:g} sits on its grid's edge ({out['C_grid'].iloc[0]})"] if edge else [])])
                       for w, c, edge in zip(_column(runs, "kernel_warnings", None), out["C"], out["C_at_grid_edge"])]
    return out.sort_values(["stage", "dataset", "classes", "n_qubits", "seed"]).reset_index(drop=True)


def plot_kernel_concentration(diagnostics: pd.DataFrame):
    """Off-diagonal mean and std of the training Gram against qubits, one line per bandwidth.

    ``diagnostics`` is :func:`kernel_diagnostics_table`.  The mean panel
    shows 2^-n (a fully concentrated fidelity kernel's mean), the std panel
    the concentration threshold of ``qmlnb.qsvm.diagnostics``.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    from ...qsvm.diagnostics import CONCENTRATION_STD

    data = diagnostics.copy()
    data["bandwidth"] = [f"{b:g}" if pd.notna(b) else "?" for b in data["bandwidth"]]
    qubits = np.array(sorted(data["n_qubits"].dropna().unique()), dtype=float)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for ax, column, title in ((axes[0], "off_diagonal_mean", "off-diagonal mean"),
                              (axes[1], "off_diagonal_std", "off-diagonal std")):
        sns.lineplot(data=data, x="n_qubits", y=column, hue="bandwidth", style="dataset", marker="o", ax=ax,
                     errorbar=None)
        ax.set(yscale="log", xlabel="qubits", ylabel=title, title=title)
    if qubits.size:
        axes[0].plot(qubits, 2.0 ** -qubits, color="grey", linestyle=":", marker="x", label="2^-n")
    axes[1].axhline(CONCENTRATION_STD, color="red", linestyle="--", label=f"concentrated below {CONCENTRATION_STD}")
    for ax in axes:
        ax.legend(fontsize=8)
    return fig
