"""bench feature-maps: the targets block says which of the issue's speed targets a run met and by how much."""
from __future__ import annotations

import pytest

from qmlnb.bench.feature_maps import targets


def result(zz: float, qiskit_ml: float | None, tensorcircuit: float | None) -> dict:
    return {"zz": {"circuit_over_feature_map": {"median": zz}},
            "pauli": {"qiskit_ml": {"speedup_ours": qiskit_ml} if qiskit_ml is not None else {"skipped": "x"},
                      "tensorcircuit": {"speedup_ours": {"median": tensorcircuit}} if tensorcircuit is not None
                      else {"skipped": "x"}}}


def test_met_targets_are_missed_by_one():
    t = targets(result(0.9, 250.0, 3.0))
    assert all(row["met"] and row["missed_by"] == 1.0 for row in t.values())


def test_missed_targets_say_by_how_much():
    t = targets(result(3.0, 50.0, 0.25))
    assert t["zz_circuit_over_feature_map_at_most"] == {"measured": 3.0, "target": 1.5, "met": False,
                                                        "missed_by": pytest.approx(2.0)}
    assert t["qiskit_ml_speedup_at_least"]["missed_by"] == pytest.approx(2.0)
    assert t["tensorcircuit_speedup_above"]["missed_by"] == pytest.approx(4.0)
    assert not t["tensorcircuit_speedup_above"]["met"]


def test_a_skipped_peer_has_no_verdict():
    t = targets(result(1.0, None, None))
    assert t["qiskit_ml_speedup_at_least"]["met"] is None and t["tensorcircuit_speedup_above"]["measured"] is None
