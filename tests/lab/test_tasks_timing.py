"""The lab's stages time with qmlnb.timing and measure their comparisons in the same run.

Timings vary; what is checked is that every recorded statistic and ratio follows from the recorded times,
that the references (BLAS cherk, the cpu backend, 1 thread, sequential training) were run in the same call,
and that bad arguments are refused.
"""
import numpy as np
import pytest

from qmlnb import timing
from qmlnb._util import available_cores
from qmlnb.lab import tasks


@pytest.fixture(scope="module")
def numba_scaling():
    return tasks.gram_scaling("numba", sizes=[20, 40], qubits=[3], threads=2, repeats=3, min_time=0.0,
                              progress=False)


def test_gram_scaling_times_the_backend_beside_cherk_cpu_and_one_thread(numba_scaling):
    metrics, table = numba_scaling
    assert list(zip(table["n_qubits"], table["n_samples"])) == [(3, 20), (3, 40)]
    for _, row in table.iterrows():
        n, dim = row["n_samples"], row["dim"]
        assert dim == 8 and row["gram_n"] >= 3 and row["gram_min_s"] <= row["gram_s"]
        assert row["gram_iqr_s"] >= 0 and row["gram_compile_s"] > 0 and row["states_n"] >= 3
        # GFLOP/s: the full matrix's 8 N^2 2^n real flops over the median, as cherk's
        assert row["gflops"] == pytest.approx(8 * n * n * dim / row["gram_s"] / 1e9, rel=1e-12)
        assert row["cherk_gflops"] == pytest.approx(8 * n * n * dim / row["cherk_s"] / 1e9, rel=1e-12)
        # ratios of medians from the same interleaved rounds, with the quartiles of the per-round ratios
        assert row["vs_cherk"] == pytest.approx(row["cherk_s"] / row["gram_s"], rel=1e-12)
        assert row["speedup_vs_cpu"] == pytest.approx(row["cpu_s"] / row["gram_s"], rel=1e-12)
        assert row["speedup_vs_1_thread"] == pytest.approx(row["one_thread_s"] / row["gram_s"], rel=1e-12)
        for name in ("vs_cherk", "speedup_vs_cpu", "speedup_vs_1_thread"):
            assert row[f"{name}_q1"] <= row[f"{name}_q3"]
        assert row["max_abs_diff_vs_cpu"] < 1e-5 and row["load"] >= 0 and row["noisy"] in (True, False)
    largest = metrics["timing_largest"]
    assert largest["n_samples"] == 40 and set(largest) >= {"gram", "states", "cherk", "cpu", "one_thread"}
    # every interleaved side has the same number of rounds; its dict follows from its times
    assert largest["gram"]["n"] == largest["cherk"]["n"] == largest["cpu"]["n"] == largest["one_thread"]["n"]
    assert largest["gram"]["median_s"] == pytest.approx(np.median(largest["gram"]["times_s"]))
    assert largest["gram"]["median_s"] == pytest.approx(table["gram_s"].iloc[-1])
    assert metrics["timings"]["gram_s_largest"] == table["gram_s"].iloc[-1]
    assert metrics["noisy"] == bool(table["noisy"].any())


def test_gram_scaling_on_cpu_has_no_cpu_reference_and_one_thread_has_no_thread_reference():
    metrics, table = tasks.gram_scaling("cpu", sizes=[10], qubits=[2], threads=1, repeats=2, min_time=0.0,
                                        progress=False)
    assert "speedup_vs_cpu" not in table and "speedup_vs_1_thread" not in table and "vs_cherk" in table
    assert metrics["timings"]["speedup_vs_cpu_largest"] is None


@pytest.mark.parametrize("kwargs, match", [({"repeats": 0}, "repeats"), ({"sizes": [1]}, "sizes"),
                                           ({"qubits": [0]}, "qubits")])
def test_gram_scaling_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tasks.gram_scaling("cpu", **{"sizes": [10], "qubits": [2], **kwargs})


@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores")
def test_qcnn_run_measures_its_speedup_against_one_thread_in_the_same_run():
    metrics, tables = tasks.qcnn_run(n_train=40, epochs=2, threads=2, batch_size=16, compare="1-thread",
                                     compare_rounds=2, progress=False)
    comparison = metrics["comparison"]
    train, reference = metrics["timing"]["train"], comparison["reference_timing"]
    assert train["n"] == reference["n"] == 2  # paired rounds, each side warmed up once
    assert train["compile_s"] > 0 and reference["compile_s"] > 0
    assert metrics["speedup_vs_1_thread"] == pytest.approx(reference["median_s"] / train["median_s"], rel=1e-12)
    rounds = [r / t for r, t in zip(reference["times_s"], train["times_s"])]
    assert comparison["ratio"]["rounds"] == pytest.approx(rounds)
    assert comparison["reference_threads"] == 1 and metrics["threads"] == 2
    assert metrics["timings"]["train_s"] == train["median_s"] and isinstance(metrics["noisy"], bool)
    # the epochs: each fold's first apart, the later ones as repeats
    history = tables["history"]
    assert metrics["timings"]["epoch_n"] == len(history) - history["fold"].nunique()
    assert metrics["timings"]["first_epoch_s"] == pytest.approx(history.groupby("fold")["seconds"].first().median())


@pytest.mark.parametrize("compare, key", [("1-thread", "speedup_vs_1_thread"), ("sequential", "speedup_vs_sequential")])
def test_a_run_that_is_its_own_reference_is_warmed_up_like_the_runs_it_is_compared_with(compare, key):
    metrics, _ = tasks.qcnn_run(n_train=40, epochs=1, threads=1, batch_size=16, compare=compare, progress=False)
    assert metrics[key] == 1.0 and "reference_timing" not in metrics["comparison"]
    # one timed training after an untimed warm-up one: not a cold first call beside warm runs
    assert metrics["timing"]["train"]["n"] == 1 and metrics["timing"]["train"]["compile_s"] is not None
    assert metrics["timings"]["first_epoch_s"] is None and metrics["timings"]["epoch_n"] == 1


@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores")
def test_a_sequential_run_on_two_threads_is_measured_against_sequential_on_compare_threads():
    metrics, _ = tasks.qcnn_run(n_train=40, epochs=1, threads=2, batch_size=16, compare="sequential",
                                compare_threads=1, progress=False)
    comparison = metrics["comparison"]
    assert comparison["reference_mode"] == "sequential" and comparison["reference_threads"] == 1
    assert metrics["threads"] == 2 and metrics["timing"]["train"]["n"] == 1
    assert metrics["speedup_vs_sequential"] == pytest.approx(
        comparison["reference_timing"]["median_s"] / metrics["timing"]["train"]["median_s"], rel=1e-12)
    # compare_threads equal to the run's threads: the run is its own reference again
    same, _ = tasks.qcnn_run(n_train=40, epochs=1, threads=2, batch_size=16, compare="sequential",
                             compare_threads=2, progress=False)
    assert same["speedup_vs_sequential"] == 1.0 and same["comparison"]["reference"] == "the run itself"


def test_qcnn_run_refuses_bad_comparisons():
    with pytest.raises(ValueError, match="compare"):
        tasks.qcnn_run(n_train=40, epochs=1, threads=1, compare="2-threads", progress=False)
    with pytest.raises(ValueError, match="compare_rounds"):
        tasks.qcnn_run(n_train=40, epochs=1, threads=1, compare="1-thread", compare_rounds=0, progress=False)
    with pytest.raises(ValueError, match="compare_threads"):
        tasks.qcnn_run(n_train=40, epochs=1, threads=1, compare="sequential", compare_threads=-1, progress=False)


def test_epoch_timing_sets_each_folds_first_epoch_apart():
    class Result:
        history = [{"fold": f, "epoch": e, "seconds": s} for f, e, s in
                   [(0, 0, 5.0), (0, 1, 1.0), (0, 2, 2.0), (1, 0, 7.0), (1, 1, 3.0), (1, 2, 4.0)]]

    train = timing.Timing(times=[30.0], compile_s=None, load_before=1.0, load_after=3.0, cpu_s=20.0, wall_s=30.0,
                          cores=2)
    t = tasks.epoch_timing(Result(), train)
    assert sorted(t.times) == [1.0, 2.0, 3.0, 4.0] and t.compile_s == 6.0 and t.median == 2.5
    assert (t.load, t.cpu_s, t.cores) == (3.0, 20.0, 2)
    assert t.iqr == pytest.approx(np.percentile([1, 2, 3, 4], 75) - np.percentile([1, 2, 3, 4], 25))


@pytest.mark.skipif(available_cores() < 2, reason="needs 2 cores")
def test_a_parallel_mode_is_measured_against_sequential_training_of_the_same_work():
    metrics, _ = tasks.qcnn_run(n_train=40, epochs=1, threads=2, folds=2, workers=2, batch_size=16,
                                mode="fold-parallel", compare="sequential", progress=False)
    comparison = metrics["comparison"]
    assert comparison["reference_mode"] == "sequential" and comparison["reference_threads"] == 2
    assert metrics["processes"] == 2 and metrics["threads"] == 2
    assert metrics["speedup_vs_sequential"] == pytest.approx(
        comparison["reference_timing"]["median_s"] / metrics["timing"]["train"]["median_s"], rel=1e-12)


def test_gram_comparison_times_the_backend_beside_cpu_and_cherk_on_the_same_states():
    from qmlnb.kernels import FeatureMap

    S = FeatureMap(n_qubits=3).states(np.random.default_rng(0).uniform(0, np.pi, (30, 3)))
    out = tasks.gram_comparison(S, "numba", 1, repeats=3, min_time=0.0)
    gram_t, cherk_t, cpu_t = out["gram"], out["cherk"], out["cpu"]
    assert gram_t["n"] == cherk_t["n"] == cpu_t["n"] == 3 and gram_t["compile_s"] > 0
    assert out["gflops"] == pytest.approx(8 * 30 * 30 * 8 / gram_t["median_s"] / 1e9, rel=1e-12)
    assert out["vs_cherk"]["ratio"] == pytest.approx(cherk_t["median_s"] / gram_t["median_s"], rel=1e-12)
    assert out["speedup_vs_cpu"]["rounds"] == pytest.approx(
        [c / g for c, g in zip(cpu_t["times_s"], gram_t["times_s"])])
    assert out["noisy"] == any(t["noisy"] for t in (gram_t, cherk_t, cpu_t))
    assert "speedup_vs_cpu" not in tasks.gram_comparison(S, "cpu", 1, repeats=2, min_time=0.0)
