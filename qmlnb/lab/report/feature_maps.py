"""The report's "Feature maps": the quantum-kernel SVM per feature map beside the RBF SVM, each map named.

A row is one map (its ``feature_map_label``: name and the short hash of its
circuit spec, so two maps sharing a name stay apart) and one setting
(dataset, qubits, training size); seeds are pooled as mean and std.
"""
from __future__ import annotations

import pandas as pd

from .. import stages
from ..tasks import feature_map as feature_map_task
from .load import select_stage
from .tables import _spread

KEYS = ["dataset", "feature_map_label", "n_qubits", "n_train", "feature_map_gates"]


def feature_map_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Balanced accuracy of the QSVM and of the RBF control per map (mean, ``_std``, ``n`` runs)."""
    runs = select_stage(frame, stages.FEATURE_MAPS, stages.FEATURE_MAP_TASK)
    columns = [*KEYS, "n", "qsvm_balanced_accuracy", "qsvm_balanced_accuracy_std", "rbf_balanced_accuracy",
               "rbf_balanced_accuracy_std", "bandwidth"]
    if runs.empty or "feature_map_label" not in runs:
        return pd.DataFrame(columns=columns)
    groups = runs.groupby(KEYS, dropna=False, sort=True)
    out = _spread(groups, {"qsvm_balanced_accuracy": feature_map_task.SCORES.join("balanced_accuracy"),
                          "rbf_balanced_accuracy": feature_map_task.RBF_BALANCED_ACCURACY})
    out["n"] = groups.size()
    out["bandwidth"] = groups["bandwidth"].median()
    return out.reset_index()[columns]
