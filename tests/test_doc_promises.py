"""Behaviours the docs and docstrings promise that no other test pinned: each test here fails on code that breaks it.

1. the cpu MPS Gram renormalises per pair (``backends.cpu_blas.mps_log_overlaps``);
2. "concentrated" is about the off-diagonal spread, not its mean (``qsvm.diagnostics``);
3. ``pick: fastest`` ranks by the median (``lab.decisions``);
4. the final stage's headline tables never pool runs that differ in ``n_train`` (``lab.report.headline``);
5. the Gram headline keeps every thread count's row at its own largest N (``lab.report.tables``);
6. "already logged" is the answer of the store exported to, not of an earlier export (``lab.track``);
7. a redirect to another scheme on the same host is refused (``data.download``);
8. the ``mlp`` control head is nonlinear (``qcnn.model``).
"""
from __future__ import annotations

import http.server

import numpy as np
import pytest
import torch

from qmlnb.data.download import DownloadError, fetch
from qmlnb.kernels import FeatureMap, available_backends, gram
from qmlnb.lab.decisions import decide
from qmlnb.qcnn.model import HybridQCNN
from qmlnb.qsvm.diagnostics import CONCENTRATION_STD, kernel_diagnostics


# ---------------------------------------------------------------- 1. per-pair renormalisation of the cpu MPS Gram
@pytest.fixture(scope="module")
def deep_mps():
    """Four samples at 1,500 qubits: two near-identical pairs, far from each other.

    Within a pair the fidelity stays near 1 over every site; across pairs each
    site multiplies the environment by a small factor, so after 1,500 sites the
    cross-pair environments have shrunk by hundreds of orders of magnitude
    (they underflow) while the within-pair ones have not: one scale for a whole
    tile would overflow the within-pair environments or lose them.
    """
    n = 1500
    rng = np.random.default_rng(7)
    a, b = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    X = np.stack([a, a + 1e-3 * rng.standard_normal(n), b, b + 1e-3 * rng.standard_normal(n)])
    return FeatureMap(n_qubits=n, reps=1, entanglement="linear", bandwidth=2.0).mps(X)


def _relative_equal(K, ref, rtol):
    big = ref > 1e-300
    np.testing.assert_array_equal(K[~big] <= 1e-300, True)
    np.testing.assert_allclose(K[big], ref[big], rtol=rtol)


def test_cpu_mps_gram_renormalises_each_pair_of_a_tile_on_its_own(deep_mps):
    alone = np.array([[gram(deep_mps[i:i + 1], deep_mps[j:j + 1], backend="cpu")[0, 0] for j in range(4)]
                      for i in range(4)])
    # the setting means something: within a pair the fidelity is far from 0, across pairs it underflows
    assert alone[0, 1] > 1e-3 and alone[2, 3] > 1e-3
    assert alone[0, 2] == 0.0 and alone[1, 3] == 0.0
    one_tile = gram(deep_mps, backend="cpu", tile=4)
    assert np.isfinite(one_tile).all()
    _relative_equal(one_tile, alone, 1e-6)
    np.testing.assert_allclose(np.diag(one_tile), 1.0, atol=1e-4)  # complex64 tensors over 1,500 sites
    for backend in ("numba", "openmp"):
        if available_backends()[backend][0]:
            _relative_equal(gram(deep_mps, backend=backend), one_tile, 1e-4)  # float32 sums over 1,500 sites


# ---------------------------------------------------------------- 2. "concentrated" means a small off-diagonal spread
def _gram_with_offdiagonal(values: np.ndarray) -> np.ndarray:
    n = int(round((1 + np.sqrt(1 + 8 * len(values))) / 2))
    K = np.eye(n)
    K[np.triu_indices(n, 1)] = values
    return K + np.triu(K, 1).T


def test_concentrated_is_about_the_spread_not_the_mean():
    rng = np.random.default_rng(0)
    n = 40
    m = n * (n - 1) // 2
    # entries 0.5 +- 0.001: a large mean, but no spread: concentrated
    flat = kernel_diagnostics(_gram_with_offdiagonal(0.5 + 0.001 * rng.uniform(-1, 1, m)))
    assert flat["off_diagonal_mean"] == pytest.approx(0.5, abs=1e-3) and flat["concentrated"]
    # a small mean with a spread above the threshold: not concentrated
    spread = 4 * CONCENTRATION_STD
    values = np.abs(spread * rng.standard_normal(m))
    wide = kernel_diagnostics(_gram_with_offdiagonal(values))
    assert wide["off_diagonal_mean"] < 0.5 * values.max() and wide["off_diagonal_std"] > CONCENTRATION_STD
    assert not wide["concentrated"]


# ---------------------------------------------------------------- 3. pick: fastest ranks by the median
def _rows(value, times):
    return [{"run": f"runs/t/{value}-{i}", "value": value, "metric": t, "seed": i, "setting": "{}"}
            for i, t in enumerate(times)]


def test_pick_fastest_ranks_by_the_median_not_the_mean():
    # threads=2: median 1 s with one 100 s outlier (mean 13.4 s); threads=1: 2 s every time (mean 2 s).
    # Their IQRs do not overlap, so the median alone decides: the more expensive value wins.
    rows = _rows(1, [2.0] * 8) + _rows(2, [1.0] * 7 + [100.0])
    decision = decide(rows, "fastest", "threads", stage="threads")
    assert decision["value"] == 2
    assert "smallest median" in decision["reason"]


# ---------------------------------------------------------------- 7. no redirect to another scheme on the same host
class _RedirectToFtp(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(302)
        self.send_header("Location", "ftp://127.0.0.1/file")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_fetch_refuses_a_redirect_to_another_scheme_on_the_same_host(tmp_path):
    from test_data import _serve

    with _serve(_RedirectToFtp) as url:
        with pytest.raises(DownloadError, match=r"refusing to download ftp://127\.0\.0\.1/file: only https"):
            fetch(url + "file", tmp_path / "out" / "file", "0" * 32, timeout=5, progress=False)
    assert list((tmp_path / "out").iterdir()) == []


# ---------------------------------------------------------------- 8. the mlp control head is nonlinear
def test_mlp_head_is_nonlinear_and_linear_head_is_affine():
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)) * 3
    mlp = HybridQCNN((1, 8, 8), n_qubits=4, head="mlp", seed=0).classical
    linear = HybridQCNN((1, 8, 8), n_qubits=4, head="linear", seed=0).classical
    with torch.no_grad():
        def affine_defect(f):
            # an affine map satisfies f(a) + f(b) - f(0) == f(a + b); the fit residual says how far f is from one
            a, b = z[:32], z[32:]
            return float((f(a) + f(b) - f(torch.zeros_like(a)) - f(a + b)).abs().max())
        assert affine_defect(linear) < 1e-5
        assert affine_defect(mlp) > 1e-2


# ---------------------------------------------------------------- 4. final-stage rows never pool grid parameters
def test_final_tables_never_pool_runs_that_differ_in_n_train(tmp_path):
    from test_headline import fake_run, scores

    from qmlnb.lab.report import headline, load_runs

    for n_train, level in ((100, 0.6), (200, 0.9)):
        for seed in (0, 1):
            params = {"dataset": "digits", "seed": seed, "n_train": n_train, "backend": "openmp"}
            fake_run(tmp_path, "final", params, {
                "task": "qsvm", "stage": "final", "dataset": "digits", "mode": "sequential",
                "qcnn": scores(level), "qsvm": scores(level + 0.01),
                "timings": {"train_s": 10.0, "gram_s": 1.0, "svm_fit_s": 0.5},
                "baselines": {"rbf_svm_embeddings": {**scores(level - 0.01), "fit_s": 0.1},
                              "cnn": {**scores(level + 0.02), "fit_s": 3.0}}})
    tables = headline.final_tables(load_runs(tmp_path))
    assert sorted(t.attrs["setting"]["n_train"] for t in tables) == [100, 200]
    for table in tables:
        # every model's row (the QSVM and each baseline) holds the two seeds of its own n_train, nothing else
        assert set(table["n"]) == {2}, table
        level = 0.6 if table.attrs["setting"]["n_train"] == 100 else 0.9
        by_model = table.set_index("model")["balanced accuracy"]
        assert by_model["QSVM"] == pytest.approx(level + 0.01) and by_model["CNN"] == pytest.approx(level + 0.02)


# ---------------------------------------------------------------- 5. every thread count keeps its Gram headline row
def test_gram_headline_keeps_every_thread_count_at_its_own_largest_n():
    import pandas as pd

    from qmlnb.lab.report import gram_headline

    rows = []
    for threads, sizes in ((1, (800, 1600)), (2, (800,))):  # 2 threads never reached N = 1,600
        for n in sizes:
            rows.append({"stage": "gram-threads", "n_qubits": 12, "threads": threads, "n_samples": n,
                         "backend": "openmp", "gram_s": n / 1000 / threads})
    head = gram_headline(pd.DataFrame(rows))
    assert sorted(zip(head["threads"], head["N"])) == [(1, 1600), (2, 800)]


# ---------------------------------------------------------------- 6. "already logged" is the target store's answer
def test_a_run_logged_to_one_store_is_logged_again_when_exported_to_another(tmp_path):
    pytest.importorskip("mlflow", reason="the MLflow tracker (qmlnb's track extra)")
    from test_track import POINTS, fabricate_run

    from qmlnb.lab import track

    runs_dir = tmp_path / "runs"
    fabricate_run(runs_dir, POINTS[0])
    first = track.export(runs_dir, "mlflow", tmp_path / "store-a")
    assert (first["logged"], first["already_logged"]) == (1, 0)
    other = track.export(runs_dir, "mlflow", tmp_path / "store-b")
    assert (other["logged"], other["already_logged"]) == (1, 0)
    again = track.export(runs_dir, "mlflow", tmp_path / "store-b")
    assert (again["logged"], again["already_logged"]) == (0, 1)
