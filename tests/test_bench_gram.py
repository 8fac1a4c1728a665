"""`python -m qmlnb bench gram` on a tiny case: its JSON holds every section, and the results agree."""
import json

from qmlnb.cli import main


def test_bench_gram_writes_every_section(tmp_path):
    out = tmp_path / "gram.json"
    assert main(["bench", "gram", "--n", "96", "--n-qubits", "5", "--states-n", "20", "--states-qubits", "4",
                 "--pennylane-n", "4", "--repeats", "2", "--threads", "1,2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["states"]["max_abs_difference"] < 1e-6
    backends = {row["backend"] for row in result["gram"]}
    assert "cpu" in backends
    for row in result["gram"]:
        assert row["max_abs_difference_vs_cpu"] < 1e-5
        assert len(row["all_seconds"]) == 2 and row["gflops"] > 0
        assert row["speedup_vs_1_thread"] is not None
    assert [c["threads"] for c in result["baselines"]["blas_cherk"]] == [1, 2]
    pennylane = result["baselines"]["pennylane_square_kernel_matrix"]
    assert pennylane["pairs"] == 6 and pennylane["max_abs_difference"] < 1e-5
    assert result["environment"]["machine"]["cores"] >= 1 and result["peak_rss_mib"] > 0
