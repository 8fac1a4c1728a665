"""`python -m qmlnb bench shots` on a tiny case: the JSON holds the overheads the docs quote, checked estimates."""
import json

import numpy as np
import pytest

from qmlnb.bench.shots import WithoutDraws
from qmlnb.cli import main
from qmlnb.kernels.shots import DeviceEstimate

pytestmark = pytest.mark.timeout(300)


def test_bench_shots_writes_overheads_from_paired_rounds(tmp_path):
    out = tmp_path / "shots.json"
    assert main(["bench", "shots", "--n", "120", "--n-qubits", "4", "--shots", "50,5000", "--noise", "--rounds", "2",
                 "--backend", "cpu,numba", "--output", str(out), "--allow-dirty"]) == 0
    result = json.loads(out.read_text())
    calls = result["calls"]
    estimates = ("shots=50", "shots=5000", "shots=4096+noise")
    assert set(calls) == {f"{b}/{c}" for b in ("cpu", "numba") for c in ("exact",) + estimates}
    for backend in ("cpu", "numba"):  # each backend's estimates against its own exact Gram of the same rounds
        exact = calls[f"{backend}/exact"]["timing"]["times_s"]
        for name in estimates:
            entry = calls[f"{backend}/{name}"]
            overheads = [a / b - 1 for a, b in zip(entry["timing"]["times_s"], exact)]
            assert entry["backend"] == backend and entry["overhead_rounds"] == pytest.approx(overheads)
            assert (entry["overhead_q1"], entry["overhead_q3"]) == pytest.approx(np.percentile(overheads, [25, 75]))
            assert result["overhead"][backend][name]["overhead"] == pytest.approx(entry["overhead"], abs=1e-3)
            cpu_seconds = entry["timing"]["cpu_s"] / calls[f"{backend}/exact"]["timing"]["cpu_s"]
            assert entry["overhead_cpu"] == pytest.approx(cpu_seconds - 1)
            assert abs(entry["check"]["mean_error"]) <= 6 * entry["check"]["standard_error"] + 1e-9
        assert calls[f"{backend}/shots=50"]["check"]["fraction_zero"] > \
            calls[f"{backend}/shots=5000"]["check"]["fraction_zero"]
    assert result["backends"] == ["cpu", "numba"]
    assert result["provenance"]["allow_dirty"] is True and 0 < result["off_diagonal"]["mean"] < 1


def test_bench_shots_times_both_samplers_in_the_same_rounds(tmp_path):
    pytest.importorskip("qmlnb._shots_openmp", reason="the native sampler is not built (setup.py build_ext)")
    out = tmp_path / "shots.json"
    assert main(["bench", "shots", "--n", "200", "--n-qubits", "4", "--shots", "50,5000", "--rounds", "2",
                 "--backend", "cpu", "--samplers", "--output", str(out), "--allow-dirty"]) == 0
    result = json.loads(out.read_text())
    calls, n_entries = result["calls"], 200 * 201 / 2
    assert result["sampler"] == "native" and set(result["samplers"]) == {"shots=50", "shots=5000", "pass"}
    copy = calls["sampler-copy/copy"]["median_s"]
    # the pass without draws and the exact Gram, in the unit of the draws' budget: wall ns per upper entry
    assert result["samplers"]["pass"]["native_ns_per_entry"] == pytest.approx(
        (calls["sampler-native/pass"]["median_s"] - copy) / n_entries * 1e9, abs=0.01)
    assert result["exact_ns_per_entry"] == {"cpu": pytest.approx(calls["cpu/exact"]["median_s"] / n_entries * 1e9,
                                                                 abs=0.01)}
    for name, summary in result["samplers"].items():
        if name == "pass":
            continue
        native, numba = calls[f"sampler-native/{name}"], calls[f"sampler-numba/{name}"]
        assert summary["native_ns_per_entry"] == pytest.approx((native["median_s"] - copy) / n_entries * 1e9, abs=0.01)
        assert summary["numba_ns_per_entry"] == pytest.approx((numba["median_s"] - copy) / n_entries * 1e9, abs=0.01)
        assert summary["speedup"] == pytest.approx(numba["median_s"] / native["median_s"], abs=0.01)
        assert "overhead" not in native  # the estimate alone is not a Gram call: no overhead of its own
    assert set(result["overhead"]) == {"cpu"}


def test_the_pass_without_draws_writes_every_entry_and_draws_none():
    pytest.importorskip("qmlnb._shots_openmp", reason="the native sampler is not built (setup.py build_ext)")
    K = np.random.default_rng(0).uniform(0.1, 0.9, (50, 50)).astype(np.float32)
    K = (K + K.T) / 2
    ids = np.arange(50, dtype=np.int64)
    spec = WithoutDraws(shots=1000, seed=0, estimator="fidelity", noise=None, mitigate=False, n_qubits=4)
    assert spec.maps == (0.0, 0.0, 1.0, 0.0)
    out = spec.apply_(K.copy(), ids, ids, symmetric=True, n_threads=2, sampler="native")
    assert out.shape == K.shape and not np.any(out)  # P = 0: count 0 for every entry, the diagonal too
    # the same pass with the identity map would draw: the zeros come from the map, not from skipped entries
    drawn = DeviceEstimate(shots=1000, seed=0, estimator="fidelity", noise=None, mitigate=False, n_qubits=4)
    assert np.all(drawn.apply_(K.copy(), ids, ids, symmetric=True, n_threads=2, sampler="native") > 0)
