"""The positive-control task and its report: the controls must be able to say yes, and say loudly when they cannot."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qmlnb.lab import stages
from qmlnb.lab.report import positive, verdicts
from qmlnb.lab.tasks import positive_control as task


def rows(engineered_gain: float, natural_gain: float = 0.0, seeds=range(6), split_seeds=(0,), noise=0.02):
    """Synthetic positive_control.csv rows: quantum = RBF + gain (+ noise) per seed, for both kernels."""
    rng = np.random.default_rng(0)
    out = []
    for split_seed in split_seeds:
        for kernel in ("fidelity", "projected"):
            for labels, gain in (("natural", natural_gain), ("engineered", engineered_gain)):
                for seed in seeds:
                    rbf = 0.5 + rng.normal(0, noise)
                    out.append({"dataset": "digits", "classes": "3 vs 8", "n": 120, "n_qubits": 6, "bandwidth": 1.0,
                                "split_seed": split_seed, "labels": labels, "kernel": kernel, "seed": seed,
                                "g": 17.0, "n_train": 84, "n_test": 36, "quantum_accuracy": rbf + gain,
                                "quantum_balanced_accuracy": rbf + gain + rng.normal(0, noise),
                                "quantum_degenerate": False, "rbf_accuracy": rbf, "rbf_balanced_accuracy": rbf,
                                "rbf_degenerate": False, "stage": stages.CONTROLS})
    return pd.DataFrame(out)


def test_a_working_positive_control_detects_the_advantage_and_finds_none_on_real_labels():
    table = positive.positive_comparisons(rows(engineered_gain=0.3))
    lines = positive.positive_sentences(table)
    assert len(lines) == 2 and not positive.broken(table)
    for line, kernel in zip(lines, ("fidelity", "projected")):
        assert f"{kernel} kernel" in line and "g = 17" in line
        assert "On engineered labels the controls detect the advantage (quantum − rbf = +0.3" in line
        assert "on the real labels they find none" in line
    rbf = table[table["model"] == "rbf"]
    assert set(rbf["labels"]) == {"natural", "engineered"} and (rbf["pairs"] == 6).all()


def test_a_positive_control_that_is_not_positive_is_said_loudly():
    # the planted failure: on engineered labels the quantum kernel only ties its control
    table = positive.positive_comparisons(rows(engineered_gain=0.0))
    lines = positive.positive_sentences(table)
    assert positive.broken(table)
    assert all(line.split(": ", 1)[1].startswith(positive.BROKEN) for line in lines), lines
    assert all("does not exclude 0" in line for line in lines)
    # and with no engineered labels at all, nothing shows the controls can say yes
    only_natural = rows(engineered_gain=0.3)
    only_natural = only_natural[only_natural["labels"] == "natural"]
    assert positive.broken(positive.positive_comparisons(only_natural))


def test_split_seeds_pool_as_distinct_repeats():
    table = positive.positive_comparisons(rows(engineered_gain=0.3, seeds=range(3), split_seeds=(0, 1)))
    assert (table.loc[table["model"] == "rbf", "pairs"] == 6).all()  # 3 seeds x 2 splits, never merged
    assert "split_seed" not in " ".join(table["setting"])


def test_the_positive_control_joins_the_reports_holm_family():
    comparisons = positive.positive_comparisons(rows(engineered_gain=0.3))
    alone = verdicts.comparison_family(pd.DataFrame())
    family = verdicts.comparison_family(pd.DataFrame(), positive=comparisons)
    assert "positive_control" in family and "positive_control" not in alone
    assert family["positive_control"].attrs["size"] == 4  # 2 kernels x 2 labellings, nothing else here
    assert family["positive_control"]["level"].max() == pytest.approx(1 - 0.05 / 4)  # Holm: the first of 4 at 0.05/4
    assert positive.positive_sentences(positive.positive_comparisons(pd.DataFrame())) == []


def test_the_task_scores_both_kernels_on_both_labellings():
    metrics, tables = task.positive_control_run(n=60, n_qubits=4, seeds=[0, 1])
    table = tables[stages.POSITIVE_CONTROL_TABLE]
    assert len(table) == 2 * 2 * 2 and set(table["labels"]) == set(task.LABELS)
    assert metrics["task"] == stages.POSITIVE_CONTROL and set(metrics["g"]) == {"fidelity", "projected"}
    # g belongs to the inputs, so both labellings of a kernel record the same one
    assert (table.groupby("kernel")["g"].nunique() == 1).all()
    for kernel, g in metrics["g"].items():
        assert g > 0 and np.isclose(table.loc[table["kernel"] == kernel, "g"].iloc[0], g)
    assert ((table["quantum_balanced_accuracy"] >= 0) & (table["quantum_balanced_accuracy"] <= 1)).all()


@pytest.mark.parametrize("bad, match", [({"seeds": []}, "seeds must be a non-empty list"),
                                        ({"n_qubits": 0}, "n_qubits"), ({"cv": 1}, "cv"),
                                        ({"n_qubits": 500}, "at most")])
def test_bad_arguments_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        task.positive_control_run(**{"n": 60, "n_qubits": 4, "seeds": [0], **bad})
