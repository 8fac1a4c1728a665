"""`python -m qmlnb bench shots` on a tiny case: the JSON holds the overheads the docs quote, checked estimates."""
import json

import pytest

from qmlnb.cli import main

pytestmark = pytest.mark.timeout(300)


def test_bench_shots_writes_overheads_from_paired_rounds(tmp_path):
    out = tmp_path / "shots.json"
    assert main(["bench", "shots", "--n", "120", "--n-qubits", "4", "--shots", "50,5000", "--noise", "--rounds", "2",
                 "--output", str(out), "--allow-dirty"]) == 0
    result = json.loads(out.read_text())
    calls = result["calls"]
    assert set(calls) == {"exact", "shots=50", "shots=5000", "shots=4096+noise"}
    for name in ("shots=50", "shots=5000", "shots=4096+noise"):
        entry = calls[name]
        times, exact = entry["timing"]["times_s"], calls["exact"]["timing"]["times_s"]
        assert entry["overhead_rounds"] == pytest.approx([a / b - 1 for a, b in zip(times, exact)])
        assert abs(entry["check"]["mean_error"]) <= 6 * entry["check"]["standard_error"] + 1e-9
    assert calls["shots=50"]["check"]["fraction_zero"] > calls["shots=5000"]["check"]["fraction_zero"]
    assert result["provenance"]["allow_dirty"] is True and 0 < result["off_diagonal"]["mean"] < 1
