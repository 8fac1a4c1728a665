"""The SVM on a precomputed quantum kernel, its classical baselines and controls, and the end-to-end pipeline.

>>> from qmlnb.qsvm import QuantumKernelSVC, run_qsvm_experiment
>>> svc = QuantumKernelSVC(n_qubits=4, backend="cpu").fit(X_train, y_train)   # bandwidth and C chosen
>>> svc.score(X_test, y_test)
>>> run_kernel_comparison(A_train, y_train, A_test, y_test)   # the QSVM beside an RBF SVM on the same features

The names below are imported on first use (PEP 562): the package costs nothing until one is asked for.
"""
from __future__ import annotations

from .._util import lazy_exports

_EXPORTS = {
    "QuantumKernelSVC": "svm", "fit_precomputed": "svm", "kernel_target_alignment": "svm",
    "DEFAULT_BANDWIDTHS": "svm", "DEFAULT_CS": "svm", "scaled_bandwidths": "svm", "bandwidth_grid": "svm",
    "BANDWIDTH_RULES": "svm",
    "BASELINES": "baselines", "run_baselines": "baselines", "fit_rbf_alignment": "baselines",
    "kernel_diagnostics": "diagnostics",
    "embed": "pipeline", "run_qsvm_experiment": "pipeline", "run_kernel_comparison": "pipeline",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
