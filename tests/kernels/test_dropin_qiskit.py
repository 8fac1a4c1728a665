"""QmlnbKernel beside Qiskit ML's FidelityStatevectorKernel: same matrices, same errors, same pipelines."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

pytest.importorskip("qiskit_machine_learning", reason="qiskit-machine-learning is an optional peer (extra qiskit)")

from qiskit import QuantumCircuit  # noqa: E402
from qiskit.circuit import Parameter, ParameterVector  # noqa: E402
from qiskit.circuit.library import pauli_feature_map, z_feature_map, zz_feature_map  # noqa: E402
from qiskit_machine_learning.algorithms import QSVC, QSVR, PegasosQSVC  # noqa: E402
from qiskit_machine_learning.kernels import FidelityStatevectorKernel  # noqa: E402
from qiskit_machine_learning.utils import algorithm_globals  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from qmlnb.kernels import gram  # noqa: E402
from qmlnb.kernels.qiskit_kernel import QmlnbKernel, row_ids  # noqa: E402

ATOL = 1e-6


def blueprint(cls_name: str, *args, **kwargs):
    """A deprecated BlueprintCircuit class (ZZFeatureMap, RealAmplitudes): its num_qubits can be set."""
    from qiskit.circuit import library

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return getattr(library, cls_name)(*args, **kwargs)


def both(feature_map, **kwargs):
    return QmlnbKernel(feature_map=feature_map, **kwargs), FidelityStatevectorKernel(feature_map=feature_map)


@pytest.fixture(scope="module")
def ad_hoc():
    """Qiskit ML's documented toy problem (the QSVC tutorial's ad hoc data), 2 features, small."""
    from qiskit_machine_learning.datasets import ad_hoc_data

    algorithm_globals.random_seed = 12345
    X_train, y_train, X_test, y_test = ad_hoc_data(training_size=10, test_size=4, n=2, gap=0.3, one_hot=False)
    return X_train, y_train, X_test, y_test


def custom_circuit():
    """Features from a ParameterVector and two loose Parameters: Qiskit binds them in circuit.parameters order."""
    v = ParameterVector("x", 2)
    b, a = Parameter("b"), Parameter("a")
    qc = QuantumCircuit(3)
    qc.h(range(3))
    qc.ry(v[0], 0)
    qc.rz(a * v[1], 1)
    qc.cx(0, 1)
    qc.rx(b + 0.3, 2)
    qc.crz(v[0] - a, 2, 0)
    qc.rzz(b, 1, 2)
    return qc


@pytest.mark.parametrize("make", [lambda: z_feature_map(2), lambda: zz_feature_map(2),
                                  lambda: zz_feature_map(2, reps=3, entanglement="full")],
                         ids=["z_feature_map", "zz_feature_map", "zz-reps3"])
def test_toy_problem_symmetric_and_rectangular(ad_hoc, make):
    X_train, _, X_test, _ = ad_hoc
    ours, theirs = both(make())
    K = ours.evaluate(X_train)
    assert K.shape == (20, 20) and K.dtype == np.float64
    np.testing.assert_allclose(K, theirs.evaluate(X_train), atol=ATOL)
    np.testing.assert_array_equal(K, K.T)
    R = ours.evaluate(X_test, X_train)
    assert R.shape == (8, 20)
    np.testing.assert_allclose(R, theirs.evaluate(X_test, X_train), atol=ATOL)


@pytest.mark.parametrize("make,width", [(lambda: pauli_feature_map(3, paulis=["Z", "XX", "YY", "XY"]), 3),
                                        (custom_circuit, 4)], ids=["pauli", "custom-parameter-order"])
def test_other_circuits(make, width):
    rng = np.random.default_rng(1)
    X, Y = rng.uniform(-np.pi, np.pi, (9, width)), rng.uniform(-np.pi, np.pi, (4, width))
    ours, theirs = both(make())
    np.testing.assert_allclose(ours.evaluate(X), theirs.evaluate(X), atol=ATOL)
    np.testing.assert_allclose(ours.evaluate(Y, X), theirs.evaluate(Y, X), atol=ATOL)


def test_one_dimensional_inputs_and_equal_y_are_as_qiskit():
    rng = np.random.default_rng(2)
    X, x = rng.uniform(-1, 1, (5, 2)), rng.uniform(-1, 1, 2)
    ours, theirs = both(zz_feature_map(2))
    for args in [(x,), (X, x), (x, X), (X, X.copy()), ([list(r) for r in X],)]:
        K, ref = ours.evaluate(*args), theirs.evaluate(*args)
        assert K.shape == ref.shape
        np.testing.assert_allclose(K, ref, atol=ATOL)
    for args in [(np.zeros((0, 2)),), (X, np.zeros((0, 2))), (np.zeros((0, 2)), X)]:  # no samples: empty, as Qiskit
        K, ref = ours.evaluate(*args), theirs.evaluate(*args)
        assert K.shape == ref.shape and K.dtype == ref.dtype


def test_feature_count_adjustment_as_qiskit():
    """A circuit whose num_qubits can be set is resized to the data's width, by Qiskit's own code."""
    X = np.random.default_rng(3).uniform(-1, 1, (6, 3))
    ours = QmlnbKernel(feature_map=blueprint("ZZFeatureMap", 2))
    theirs = FidelityStatevectorKernel(feature_map=blueprint("ZZFeatureMap", 2))
    np.testing.assert_allclose(ours.evaluate(X), theirs.evaluate(X), atol=ATOL)
    assert ours.feature_map.num_qubits == 3 and ours.num_features == theirs.num_features
    X4 = np.random.default_rng(4).uniform(-1, 1, (5, 4))  # resized again: the cached map is rebuilt
    np.testing.assert_allclose(ours.evaluate(X4), theirs.evaluate(X4), atol=ATOL)


def peer_errors():
    """(name, kernel factory, arguments) for every ValueError FidelityStatevectorKernel raises on input."""
    X2, X3 = np.zeros((3, 2)), np.zeros((3, 3))
    return [
        ("x 3-D", lambda: zz_feature_map(2), (np.zeros((2, 2, 2)),)),
        ("y 3-D", lambda: zz_feature_map(2), (X2, np.zeros((2, 2, 2)))),
        ("x and y widths differ", lambda: zz_feature_map(2), (X2, X3)),
        ("width the circuit cannot take", lambda: zz_feature_map(2), (X3,)),
        ("x empty 1-D", lambda: zz_feature_map(2), (np.array([]),)),
        ("y empty 1-D", lambda: zz_feature_map(2), (X2, np.array([]))),
        ("resized circuit with other parameter count", lambda: blueprint("RealAmplitudes", 2, reps=1), (X3,)),
    ]


@pytest.mark.parametrize("name,make,args", peer_errors(), ids=[e[0] for e in peer_errors()])
def test_every_value_error_of_the_peer(name, make, args):
    ours, theirs = QmlnbKernel(feature_map=make()), FidelityStatevectorKernel(feature_map=make())
    with pytest.raises(ValueError):
        theirs.evaluate(*args)
    with pytest.raises(ValueError):
        ours.evaluate(*args)


def test_stale_feature_count_after_resize_is_a_value_error():
    """Qiskit keeps num_features from construction: a resized circuit cannot go back. Both refuse."""
    ours, theirs = QmlnbKernel(feature_map=blueprint("ZZFeatureMap", 2)), \
        FidelityStatevectorKernel(feature_map=blueprint("ZZFeatureMap", 2))
    X3, X2 = np.zeros((2, 3)), np.zeros((2, 2))
    ours.evaluate(X3)
    theirs.evaluate(X3)
    with pytest.raises(ValueError):
        theirs.evaluate(X2)
    with pytest.raises(ValueError, match="3 parameters but the data has 2 features"):
        ours.evaluate(X2)


@pytest.mark.parametrize("bad,match", [(np.array([[np.nan, 0.1]]), "NaN"), (np.array([[1j, 0.1]]), "real"),
                                       (np.array([["a", "b"]]), "real")])
def test_values_qiskit_fails_on_later_are_value_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        QmlnbKernel(feature_map=zz_feature_map(2)).evaluate(bad)


def test_constructor_checks():
    from qiskit_machine_learning.exceptions import QiskitMachineLearningError

    with pytest.raises(QiskitMachineLearningError):  # as every Qiskit ML kernel
        QmlnbKernel()
    for bad in [{"shots": 0}, {"shots": 1.5}, {"shots": True}, {"shots": 10, "seed": -1}]:
        with pytest.raises(ValueError):
            QmlnbKernel(feature_map=zz_feature_map(2), **bad)
    from qmlnb.kernels import UnknownBackendError

    with pytest.raises(UnknownBackendError):
        QmlnbKernel(feature_map=zz_feature_map(2), backend="nope")


def test_qsvc_qsvr_and_svc_fits_match_the_peer(ad_hoc):
    X_train, y_train, X_test, y_test = ad_hoc
    ours, theirs = both(zz_feature_map(2))
    # a tight solver tolerance: libsvm's default (1e-3) moves the decision values by ~1e-4 for kernel entries
    # that differ by 1e-7 (complex64 states against complex128)
    a = QSVC(quantum_kernel=ours, tol=1e-10).fit(X_train, y_train)
    b = QSVC(quantum_kernel=theirs, tol=1e-10).fit(X_train, y_train)
    np.testing.assert_array_equal(a.predict(X_test), b.predict(X_test))
    np.testing.assert_allclose(a.decision_function(X_test), b.decision_function(X_test), atol=1e-4)
    assert a.score(X_test, y_test) == b.score(X_test, y_test)
    target = np.sin(X_train.sum(axis=1))
    r = QSVR(quantum_kernel=ours, tol=1e-10).fit(X_train, target)
    s = QSVR(quantum_kernel=theirs, tol=1e-10).fit(X_train, target)
    np.testing.assert_allclose(r.predict(X_test), s.predict(X_test), atol=1e-4)
    c = SVC(kernel=ours.evaluate).fit(X_train, y_train)
    d = SVC(kernel="precomputed").fit(theirs.evaluate(X_train), y_train)
    np.testing.assert_array_equal(c.predict(X_test), d.predict(theirs.evaluate(X_test, X_train)))


def test_pegasos_matches_the_peer(ad_hoc):
    X_train, y_train, X_test, _ = ad_hoc
    ours, theirs = both(zz_feature_map(2))
    a = PegasosQSVC(quantum_kernel=ours, C=1000, num_steps=60, seed=7).fit(X_train, y_train)
    b = PegasosQSVC(quantum_kernel=theirs, C=1000, num_steps=60, seed=7).fit(X_train, y_train)
    np.testing.assert_allclose(a.decision_function(X_test), b.decision_function(X_test), atol=1e-3)
    np.testing.assert_array_equal(a.predict(X_test), b.predict(X_test))


def test_pickles_with_its_fitted_model(ad_hoc):
    X_train, y_train, X_test, _ = ad_hoc
    kernel = QmlnbKernel(feature_map=zz_feature_map(2), shots=256, seed=5)
    model = QSVC(quantum_kernel=kernel).fit(X_train, y_train)  # the kernel has converted its circuit
    copy = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(copy.predict(X_test), model.predict(X_test))
    assert copy.quantum_kernel.shots == 256 and copy.quantum_kernel.seed == 5
    np.testing.assert_array_equal(copy.quantum_kernel.evaluate(X_train), kernel.evaluate(X_train))


def test_shots_same_seed_same_matrix_and_the_shots_gram():
    rng = np.random.default_rng(6)
    X, Y = rng.uniform(-1, 1, (12, 2)), rng.uniform(-1, 1, (5, 2))
    fm = zz_feature_map(2)
    k = QmlnbKernel(feature_map=fm, shots=200, seed=11, enforce_psd=False)
    K = k.evaluate(X)
    np.testing.assert_array_equal(K, k.evaluate(X))  # every call
    np.testing.assert_array_equal(K, QmlnbKernel(feature_map=fm, shots=200, seed=11,
                                                 enforce_psd=False).evaluate(X))  # every instance
    np.testing.assert_array_equal(K, K.T)
    assert not np.array_equal(K, QmlnbKernel(feature_map=fm, shots=200, seed=12, enforce_psd=False).evaluate(X))
    assert set(np.unique(np.round(K * 200, 9))) <= set(range(201))  # counts / shots
    # it is the shot-sampled Gram of qmlnb.kernels.gram, keyed by each sample's content
    S = k._circuit_map(2).states(X)
    np.testing.assert_array_equal(K, gram(S, shots=200, seed=11, ids=(row_ids(X),) * 2))
    # a rectangular call samples the same entries as the square one
    np.testing.assert_array_equal(k.evaluate(X[:4], X), K[:4])
    np.testing.assert_array_equal(k.evaluate(X[[3, 0]], X[[7, 1]]), K[np.ix_([3, 0], [7, 1])])
    R = k.evaluate(Y, X)
    np.testing.assert_array_equal(R, k.evaluate(Y, X))
    assert R.shape == (5, 12)


def test_shots_enforce_psd_and_agreement_with_the_peer():
    rng = np.random.default_rng(8)
    X = rng.uniform(-np.pi, np.pi, (16, 2))
    fm = zz_feature_map(2)
    raw = QmlnbKernel(feature_map=fm, shots=50, seed=1, enforce_psd=False).evaluate(X)
    assert np.linalg.eigvalsh(raw).min() < -1e-3  # 50 shots: not PSD, so the repair has work to do
    fixed = QmlnbKernel(feature_map=fm, shots=50, seed=1).evaluate(X)
    assert np.linalg.eigvalsh(fixed).min() > -1e-10
    # Qiskit's own projection of the same matrix (BaseKernel._make_psd)
    np.testing.assert_allclose(fixed, FidelityStatevectorKernel(feature_map=fm)._make_psd(raw), atol=1e-9)
    # the rectangular Gram is never projected, as in Qiskit
    np.testing.assert_array_equal(QmlnbKernel(feature_map=fm, shots=50, seed=1).evaluate(X[:3], X[3:]), raw[:3, 3:])
    # many shots: both estimators are unbiased around the exact kernel
    exact = FidelityStatevectorKernel(feature_map=fm).evaluate(X)
    algorithm_globals.random_seed = 3
    theirs = FidelityStatevectorKernel(feature_map=fm, shots=20000, enforce_psd=False).evaluate(X)
    ours = QmlnbKernel(feature_map=fm, shots=20000, seed=3, enforce_psd=False).evaluate(X)
    sigma = np.sqrt(exact * (1 - exact) / 20000) + 1e-12
    assert np.abs((ours - exact) / sigma).max() < 6 and np.abs((theirs - exact) / sigma).max() < 6
    assert abs(np.mean(ours - exact)) < 1e-3


def test_seed_drawn_from_algorithm_globals():
    algorithm_globals.random_seed = 42
    a = QmlnbKernel(feature_map=zz_feature_map(2), shots=100)
    algorithm_globals.random_seed = 42
    b = QmlnbKernel(feature_map=zz_feature_map(2), shots=100)
    assert a.seed == b.seed is not None
    assert QmlnbKernel(feature_map=zz_feature_map(2)).seed is None


def test_qiskit_is_not_imported_by_the_library():
    import subprocess
    import sys

    code = "import sys, qmlnb.kernels; print('qiskit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("entanglement", ["linear", "circular", "full"])
@pytest.mark.parametrize("reps", [1, 3])
def test_zz_feature_maps_run_on_the_built_in_simulator(entanglement, reps):
    from qmlnb.kernels import CircuitFeatureMap, FeatureMap

    fm = zz_feature_map(4, reps=reps, entanglement=entanglement)
    ours, theirs = both(fm)
    X = np.random.default_rng(9).uniform(-2, 2, (7, 4))
    np.testing.assert_allclose(ours.evaluate(X), theirs.evaluate(X), atol=ATOL)
    used = ours._circuit_map(4)
    assert isinstance(used, FeatureMap) and used.reps == reps and used.kind == "zz"
    # circuits that are not a built-in map keep the circuit simulator
    assert isinstance(QmlnbKernel(feature_map=custom_circuit())._circuit_map(4), CircuitFeatureMap)
    xx = QmlnbKernel(feature_map=pauli_feature_map(4, paulis=["Z", "XX"], entanglement=entanglement, reps=reps))
    assert isinstance(xx._circuit_map(4), CircuitFeatureMap)


def test_default_backend_is_the_native_one_where_built():
    from qmlnb.kernels import check_backend

    expected = "openmp" if check_backend("openmp")[0] else "cpu"
    assert QmlnbKernel(feature_map=zz_feature_map(2)).backend == expected
    assert QmlnbKernel(feature_map=zz_feature_map(2), backend="numba").backend == "numba"


def test_bench_dropin_records_the_peer_work_it_extrapolates(tmp_path):
    import json

    from qmlnb.cli import main

    out = tmp_path / "dropin.json"
    assert main(["bench", "dropin", "--sizes", "60", "--qubits", "3", "--peer-sample", "6", "--json", str(out),
                 "--allow-dirty"]) == 0
    [case] = json.loads(out.read_text())["cases"]
    assert case["n_train"] == 60 and case["n_test"] == 15
    # QSVC (scikit-learn's SVC) evaluates train x train at fit and test x train at predict, nothing else
    assert case["kernel_calls"] == [{"rows": 60, "columns": 60, "symmetric": True},
                                    {"rows": 15, "columns": 60, "symmetric": False}]
    peer = case["qiskit_ml"]
    assert peer["extrapolated"] is True and peer["statevectors"] == 60 + 15 + 60 and peer["pairs"] == 3600 + 900
    assert peer["kernel_s"] == pytest.approx(135 * peer["per_state_s"] + 4500 * peer["per_pair_s"])
    assert peer["max_abs_difference_on_sample"] < ATOL
    assert case["speedup_ours"] == pytest.approx(peer["fit_predict_s"] / case["ours_fit_predict"]["median_s"])


def test_a_circuit_with_angles_undefined_on_the_probes_keeps_the_circuit_simulator():
    """native_equivalent probes features in [-2, 2]; arcsin is undefined there: no built-in map, no error."""
    from qmlnb.kernels import CircuitFeatureMap

    v = ParameterVector("x", 2)
    qc = QuantumCircuit(2)
    qc.h([0, 1])
    qc.rz(v[0].arcsin(), 0)
    qc.rzz(v[1], 0, 1)
    ours, theirs = both(qc)
    X = np.random.default_rng(10).uniform(-0.9, 0.9, (5, 2))
    np.testing.assert_allclose(ours.evaluate(X), theirs.evaluate(X), atol=ATOL)
    assert isinstance(ours._circuit_map(2), CircuitFeatureMap)
