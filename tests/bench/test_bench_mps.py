"""`python -m qmlnb bench mps` on a tiny case: every section is written and its derived numbers follow from its times."""
import json
import subprocess
import sys

import numpy as np
import pytest

from qmlnb.cli import main

AER = subprocess.run([sys.executable, "-c", "import qiskit_aer"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "mps.json"
    assert main(["bench", "mps", "--n-sweep", "40", "--sweep-qubits", "20", "--qubit-sweep", "8",
                 "--qubit-sweep-n", "30", "--targets", "", "--repeats", "3", "--exact-qubits", "6",
                 "--aer-entries", "3" if AER else "0", "--aer-qubits", "8", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_bench_mps_writes_every_section(result):
    assert result["complete"] and result["environment"]["git"]["commit"]
    assert set(result["exactness"]["max_abs_difference"]) == set(result["backends"])
    assert max(result["exactness"]["max_abs_difference"].values()) < 1e-5
    assert [(c["n"], c["n_qubits"]) for c in result["configs"]] == [(40, 20), (30, 8)]


def test_bench_mps_rows_follow_from_their_times(result):
    for config in result["configs"]:
        assert config["distinct_entries"] == config["n"] * (config["n"] + 1) // 2
        for backend, stats in config["gram"].items():
            assert stats["repeats"] == 3 and len(stats["all_s"]) == 3
            assert stats["median_s"] == pytest.approx(float(np.median(stats["all_s"])), rel=1e-12)
            assert stats["iqr_s"] == pytest.approx(stats["q3_s"] - stats["q1_s"], rel=1e-12)
            assert stats["entries_per_s"] == pytest.approx(config["distinct_entries"] / stats["median_s"], rel=1e-12)
            assert stats["entries_per_cpu_s"] > 0
            assert stats["states_plus_gram_s"] == pytest.approx(config["states"]["median_s"] + stats["median_s"])
            assert isinstance(stats["conditions"]["noisy"], bool)
        best = min(config["gram"], key=lambda b: config["gram"][b]["median_s"])
        assert config["best_backend"] == best and config["peak_traced_mib"] > 0


def test_bench_mps_kernels_are_not_the_identity_and_rates_follow(result):
    """A bandwidth per configuration with a median off-diagonal entry >= 1e-2 on its calibration samples."""
    peak = result["machine"]["fma_gflops_per_core"]
    assert peak > 1 and max(result["machine"]["probes_gflops"]) == pytest.approx(peak)
    assert max(result["exactness"]["max_rel_difference_above_1e-30"].values()) < 1e-4
    for config in result["configs"]:
        assert 0 < config["bandwidth"] <= 1 and config["median_offdiagonal"] >= 1e-3
        assert config["flops_per_site_pair"] == 8 * (2 ** config["reps"]) ** 3
        for stats in config["gram"].values():
            ns = stats["conditions"]["cpu_s"] / (3 * config["distinct_entries"] * config["n_qubits"]) * 1e9
            assert stats["ns_per_site_pair_cpu"] == pytest.approx(ns, rel=1e-12)
            assert stats["fraction_of_peak"] == pytest.approx(config["flops_per_site_pair"] / ns / peak, rel=1e-12)


def test_bench_mps_openmp_parts_time_the_check_and_the_kernel_alone(result):
    """The openmp row's parts: the norms' check and the native kernel, whose ns per site-pair follow."""
    peak = result["machine"]["fma_gflops_per_core"]
    for config in result["configs"]:
        if "openmp" not in config["gram"]:
            continue
        parts = config["gram"]["openmp"]["parts"]
        kernel, check = parts["kernel"], parts["norms_check"]
        assert kernel["repeats"] == 3 and check["repeats"] == 3 and check["cpu_s_per_call"] > 0
        ns = kernel["conditions"]["cpu_s"] / (3 * config["distinct_entries"] * config["n_qubits"]) * 1e9
        assert kernel["ns_per_site_pair_cpu"] == pytest.approx(ns, rel=1e-12)
        assert kernel["fraction_of_peak"] == pytest.approx(config["flops_per_site_pair"] / ns / peak, rel=1e-12)


@pytest.mark.skipif(not AER, reason="qiskit-aer not installed (pip install .[compare])")
def test_bench_mps_aer_agrees_and_its_ratio_follows(result):
    small = result["configs"][1]
    aer = small["aer_mps"]
    assert aer["entries"] == 3 and aer["max_abs_difference"] < 1e-5
    assert aer["samples"] == 3 and len(aer["all_run_s"]) == 3
    assert aer["run_s"] == pytest.approx(float(np.median(aer["all_run_s"])), rel=1e-12)
    assert aer["max_rel_difference_above_1e-30"] < 1e-4 and aer["median_value"] > 1e-4
    assert aer["entries_per_s_run"] == pytest.approx(3 / aer["run_s"])
    best = small["gram"][small["best_backend"]]["entries_per_s"]
    assert aer["ratio_best_backend_vs_aer_run"] == pytest.approx(best / aer["entries_per_s_run"])
    assert "aer_mps" not in result["configs"][0]  # 20 qubits is not in --aer-qubits
