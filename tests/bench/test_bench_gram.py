"""`python -m qmlnb bench gram` on a tiny case: its JSON holds every section, and its numbers are consistent.

The timings themselves vary; what is checked is that every derived number (medians, ratios, GFLOP/s, pairs per
second, speedups) is the one its recorded times give, for the right backend, thread count and size.
"""
import json
import statistics

import pytest

from qmlnb.cli import main
from qmlnb.kernels import available_backends

N, N_QUBITS, REPEATS, THREADS = 96, 5, 3, (1, 2)


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "gram.json"
    assert main(["bench", "gram", "--n", str(N), "--n-qubits", str(N_QUBITS), "--states-n", "20",
                 "--states-qubits", "4", "--pennylane-n", "4", "--repeats", str(REPEATS), "--min-time", "0",
                 "--threads", ",".join(map(str, THREADS)), "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_bench_gram_writes_every_section(result):
    states = result["states"]
    assert (states["n"], states["n_qubits"]) == (20, 4) and states["max_abs_difference"] < 1e-6
    assert states["speedup"] == pytest.approx(states["pennylane_broadcast_s"] / states["qmlnb_s"], rel=1e-12)
    assert states["timing"]["qmlnb"]["n"] == states["timing"]["pennylane"]["n"] == REPEATS  # interleaved rounds
    assert states["timing"]["qmlnb"]["median_s"] == states["qmlnb_s"]
    assert result["params"]["n"] == N and result["params"]["repeats"] == REPEATS and result["gram_states_s"] > 0
    assert result["environment"]["machine"]["cores"] >= 1 and result["peak_rss_mib"] > 0


def test_bench_gram_rows_follow_from_their_times(result):
    usable = {name for name, (ok, _) in available_backends().items() if ok}
    rows = {(row["backend"], row["threads"]): row for row in result["gram"]}
    assert len(rows) == len(result["gram"])  # one row per backend and thread count
    assert set(rows) == {(b, t) for b in usable for t in THREADS}
    cherk = {c["threads"]: c for c in result["baselines"]["blas_cherk"]}
    assert list(cherk) == list(THREADS)
    dim = 2 ** N_QUBITS
    for c in cherk.values():
        assert len(c["all_seconds"]) == REPEATS and c["seconds"] == statistics.median(c["all_seconds"])
        assert c["gflops"] == pytest.approx(8 * N * N * dim / c["seconds"] / 1e9, rel=1e-12)
    for (backend, threads), row in rows.items():
        assert row["max_abs_difference_vs_cpu"] < 1e-5 and row["first_call_s"] > 0
        # the timing discipline: the warm-up apart, the statistics of the recorded times, load and noisy
        stats = row["timing"]
        assert stats["compile_s"] == row["first_call_s"] and stats["times_s"] == row["all_seconds"]
        assert stats["iqr_s"] == row["iqr_s"] == pytest.approx(stats["q3_s"] - stats["q1_s"])
        assert stats["load_before"] >= 0 and row["noisy"] == stats["noisy"] and stats["n"] == REPEATS
        assert len(row["all_seconds"]) == REPEATS and row["seconds"] == statistics.median(row["all_seconds"])
        # GFLOP/s = 8 N^2 2^n / s (the full matrix, as cherk's) and pairs per second = N^2 / s
        assert row["gflops"] == pytest.approx(8 * N * N * dim / row["seconds"] / 1e9, rel=1e-12)
        assert row["pairs_per_s"] == pytest.approx(N * N / row["seconds"], rel=1e-12)
        # against cherk at the same thread count: ratio of medians, and median of the rounds' ratios
        assert row["vs_cherk"] == pytest.approx(cherk[threads]["seconds"] / row["seconds"], rel=1e-12)
        rounds = [c / s for c, s in zip(cherk[threads]["all_seconds"], row["all_seconds"])]
        assert row["vs_cherk_median_of_rounds"] == pytest.approx(statistics.median(rounds), rel=1e-12)
        # against the same backend on 1 thread, timed in the same rounds
        one = rows[(backend, 1)]
        assert row["speedup_vs_1_thread"] == pytest.approx(one["seconds"] / row["seconds"], rel=1e-12)
        paired = [o / s for o, s in zip(one["all_seconds"], row["all_seconds"])]
        assert row["speedup_vs_1_thread_rounds"]["median"] == pytest.approx(statistics.median(paired), rel=1e-12)


def test_bench_gram_pennylane_kernel_against_the_fastest_backend(result):
    pennylane = result["baselines"]["pennylane_square_kernel_matrix"]
    assert (pennylane["n"], pennylane["pairs"]) == (4, 6) and pennylane["max_abs_difference"] < 1e-5
    assert pennylane["pairs_per_s"] == pytest.approx(6 / pennylane["seconds"], rel=1e-12)
    best = min(result["gram"], key=lambda row: row["seconds"])
    assert pennylane["best_backend"] == best["backend"]
    assert pennylane["speedup_pairs_per_s"] == pytest.approx(best["pairs_per_s"] / pennylane["pairs_per_s"],
                                                             rel=1e-12)


def test_bench_gram_times_tensorcircuit_as_a_peer(tmp_path):
    """--peers tensorcircuit: interleaved rounds of both, ratios from their medians, the same states."""
    pytest.importorskip("tensorcircuit", reason="TensorCircuit-NG is not installed (pip install .[compare])")
    out = tmp_path / "gram.json"
    assert main(["bench", "gram", "--n", "16", "--n-qubits", "3", "--states-n", "12", "--states-qubits", "4",
                 "--pennylane-n", "0", "--repeats", "2", "--min-time", "0", "--threads", "1",
                 "--backends", "cpu", "--peers", "tensorcircuit", "--peer-backend", "cpu",
                 "--json", str(out)]) == 0
    peer = json.loads(out.read_text())["peers"]["tensorcircuit"]
    timings = peer["timings"]
    assert {t["n"] for t in timings.values()} == {2}
    assert peer["states_speedup"] == pytest.approx(
        timings["tensorcircuit_states"]["median_s"] / timings["qmlnb_states"]["median_s"], rel=1e-12)
    assert peer["states_gram_speedup"] == pytest.approx(
        timings["tensorcircuit_states_gram"]["median_s"] / timings["qmlnb_states_gram"]["median_s"], rel=1e-12)
    assert peer["max_abs_difference_states"] < 1e-5 and peer["max_abs_difference_gram"] < 1e-5
    assert peer["versions"]["tensorcircuit-ng"] and peer["versions"]["jax"]


def test_bench_gram_refuses_an_unknown_peer(tmp_path):
    with pytest.raises(ValueError, match="unknown peer"):
        main(["bench", "gram", "--n", "8", "--n-qubits", "3", "--states-n", "4", "--states-qubits", "3",
              "--pennylane-n", "0", "--repeats", "1", "--threads", "1", "--backends", "cpu", "--peers", "qulacs"])
