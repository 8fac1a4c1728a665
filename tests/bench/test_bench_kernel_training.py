"""`python -m qmlnb bench kernel-training` on a tiny case: the same kernel on both sides, the extrapolation said."""
import json

import pytest

from qmlnb.bench.kernel_training import fit_cost
from qmlnb.cli import main

pytestmark = pytest.mark.timeout(300)


def test_fit_cost_recovers_per_state_and_per_entry_seconds():
    a, b = fit_cost((10, 30), (10 * 0.02 + 100 * 1e-4, 30 * 0.02 + 900 * 1e-4))
    assert a == pytest.approx(0.02) and b == pytest.approx(1e-4)
    assert fit_cost((10, 20), (2.0, 3.0)) == (pytest.approx(0.2), 0.0)  # sublinear (noise): no negative entry cost


def test_bench_kernel_training_writes_an_extrapolated_speedup(tmp_path):
    pytest.importorskip("qiskit_machine_learning", reason="the Qiskit ML side needs the optional extra `compare`")
    out = tmp_path / "kt.json"
    assert main(["bench", "kernel-training", "--n", "12", "--qubits", "3", "--layers", "1", "--qiskit-samples", "3,6",
                 "--rounds", "2", "--repeats", "2", "--json", str(out), "--allow-dirty"]) == 0
    result = json.loads(out.read_text())
    assert result["setting"]["parameters"] == 3 and result["max_abs_kernel_difference"] < 1e-5
    qiskit = result["qiskit_ml"]
    assert qiskit["extrapolated"] is True and qiskit["gram_evaluations_per_step"] == 7
    assert qiskit["step_s_at_n"] == pytest.approx(7 * qiskit["gram_s_at_n"])
    assert len(result["speedup"]["per_round"]) == 2 and result["speedup"]["ratio_of_medians"] > 0
    assert result["provenance"]["allow_dirty"] is True
