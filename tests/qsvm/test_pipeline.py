"""run_qsvm_experiment and the baselines: results shape, agreement, bad input."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

import qmlnb.qsvm.pipeline as pipeline_module
from qmlnb.qsvm.baselines import BASELINES, KNOWN_BASELINES, check_baselines, fit_baseline, make_baseline, run_baselines
from qmlnb.data import load_splits
from qmlnb.qsvm.pipeline import embed, run_qsvm_experiment

N_QUBITS = 4
SVM = dict(bandwidths=(0.1, 0.5), Cs=(0.1, 1.0, 10.0))


class ProjectionEmbedder(torch.nn.Module):
    """Stand-in for a trained HybridQCNN: PCA of the pixels squashed to angles in (0, pi)."""

    def __init__(self, X_train: np.ndarray, n_out: int):
        super().__init__()
        pca = PCA(n_out, random_state=0).fit(X_train.reshape(len(X_train), -1))
        scale = np.sqrt(pca.explained_variance_)
        self.register_buffer("components", torch.tensor(pca.components_.T / scale, dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(pca.mean_, dtype=torch.float32))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.flatten(1) - self.mean) @ self.components
        return math.pi * torch.sigmoid(z)


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", classes=(3, 8), seed=0)


@pytest.fixture(scope="module")
def stand_in(digits):
    model = ProjectionEmbedder(digits.X_train, N_QUBITS)
    return SimpleNamespace(model=model, metrics={"test": {"balanced_accuracy": 0.5}}, timings={"train": 0.0})


@pytest.fixture(scope="module")
def result(digits, stand_in):
    return run_qsvm_experiment(digits, None, SVM, trained=stand_in, cv=3)


def test_embed_batches_like_one_call(digits, stand_in):
    whole = stand_in.model.embed(torch.from_numpy(digits.X_test)).numpy()
    batched = embed(stand_in.model, digits.X_test, batch_size=7)
    assert batched.shape == (len(digits.y_test), N_QUBITS) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, whole, rtol=1e-6)
    with pytest.raises(ValueError, match="4-D"):
        embed(stand_in.model, digits.X_test[:, 0])


def test_result_layout(result, digits):
    assert set(result) >= {"dataset", "qcnn", "qsvm", "baselines", "timings", "gram_backend"}
    assert result["gram_backend"] == "cpu"
    assert result["dataset"]["n_train"] == len(digits.y_train)
    assert set(result["baselines"]) == set(BASELINES)
    for model in [result["qsvm"], *result["baselines"].values()]:
        assert set(model["metrics"]) == {"accuracy", "f1", "roc_auc", "balanced_accuracy", "degenerate"}
        assert all(0.0 <= v <= 1.0 for v in model["metrics"].values())
    assert set(result["timings"]) == {"qcnn_train", "embedding", "states", "gram", "svm_select", "svm_fit",
                                      "predict", "baselines", "total"}
    assert all(v >= 0 for v in result["timings"].values())
    parts = sum(v for k, v in result["timings"].items() if k != "total")
    assert parts <= result["timings"]["total"] * 1.01
    assert result["qsvm"]["params"]["n_qubits"] == N_QUBITS
    json.dumps(result)  # plain data, ready for metrics.json


def test_models_classify_digits(result):
    # 3 vs 8 from four principal components: every model is well above chance
    assert result["qsvm"]["metrics"]["balanced_accuracy"] >= 0.9
    assert result["baselines"]["rbf_svm_embeddings"]["metrics"]["balanced_accuracy"] >= 0.9
    assert result["baselines"]["linear_svm_pixels"]["metrics"]["balanced_accuracy"] >= 0.9


def test_qsvm_metrics_match_a_direct_fit(result, digits, stand_in):
    """The pipeline's numbers are those of QuantumKernelSVC on the same embeddings."""
    from qmlnb.metrics import classification_metrics
    from qmlnb.qsvm.svm import QuantumKernelSVC

    E_train = embed(stand_in.model, digits.X_train)
    E_test = embed(stand_in.model, digits.X_test)
    clf = QuantumKernelSVC(n_qubits=N_QUBITS, cv=3, **SVM).fit(E_train, digits.y_train)
    expected = classification_metrics(digits.y_test, clf.predict(E_test), clf.decision_function(E_test))
    assert result["qsvm"]["metrics"] == pytest.approx(expected)
    assert result["qsvm"]["params"]["C"] == clf.C_ and result["qsvm"]["params"]["bandwidth"] == clf.bandwidth_


def test_multiclass_baselines():
    splits = load_splits("digits", classes=(0, 1, 7), seed=1)
    model = ProjectionEmbedder(splits.X_train, N_QUBITS)
    E_train, E_test = embed(model, splits.X_train), embed(model, splits.X_test)
    out = run_baselines(E_train, E_test, splits.X_train, splits.X_test, splits.y_train, splits.y_test, cv=3,
                        n_classes=3, names=("logreg_embeddings",))
    assert out["logreg_embeddings"]["metrics"]["balanced_accuracy"] >= 0.85
    assert not math.isnan(out["logreg_embeddings"]["metrics"]["roc_auc"])


def test_bad_input_is_rejected_before_training(digits, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("training started before the input was checked")

    monkeypatch.setattr(pipeline_module, "embed", no_training)
    with pytest.raises(ValueError, match="unknown QuantumKernelSVC parameters \\['bandwith'\\]"):
        run_qsvm_experiment(digits, object(), {"bandwith": 0.1})
    with pytest.raises(ValueError, match="unknown baselines \\['knn'\\]"):
        run_qsvm_experiment(digits, object(), {}, baselines=("knn",))
    with pytest.raises(ValueError, match="pass a train_config"):
        run_qsvm_experiment(digits, None, {})


def test_embedding_width_must_match_n_qubits(digits, stand_in):
    with pytest.raises(ValueError, match="n_qubits'\\]=8 but the QCNN embeds into 4"):
        run_qsvm_experiment(digits, None, {"n_qubits": 8}, trained=stand_in, baselines=())


def test_bad_baseline_input(digits):
    X = digits.X_train.reshape(len(digits.X_train), -1)
    with pytest.raises(ValueError, match="unknown baselines \\['knn'\\]; known baselines: rbf_svm_embeddings"):
        fit_baseline("knn", X, digits.y_train, X, digits.y_train)
    with pytest.raises(ValueError, match="single class"):
        fit_baseline("logreg_embeddings", X, np.zeros(len(X), dtype=int), X, digits.y_train)
    with pytest.raises(ValueError, match="X_test has 3 features but X_train has 64"):
        fit_baseline("logreg_embeddings", X, digits.y_train, X[:, :3], digits.y_train)



def test_baseline_names_are_checked_in_one_place(digits):
    assert check_baselines(list(BASELINES)) == tuple(BASELINES)
    assert check_baselines(()) == ()
    for name in BASELINES:  # every listed baseline has a model: a grid search, or fit_rbf_alignment's
        if name == "rbf_svm_embeddings_alignment":
            with pytest.raises(ValueError, match="not a grid search; fit it with fit_baseline or fit_rbf_alignment"):
                make_baseline(name, cv=2)
        elif name == "rbf_svm_pixels_full":  # its gamma grid is in units of 1 / n_pixels
            with pytest.raises(ValueError, match="pass n_features"):
                make_baseline(name, cv=2)
            assert make_baseline(name, cv=2, n_features=64).cv.n_splits == 2
        else:
            assert make_baseline(name, cv=2).cv.n_splits == 2
    with pytest.raises(ValueError, match="^unknown baselines \\['knn', 'tree'\\]; known baselines: "
                                         + ", ".join(KNOWN_BASELINES) + "$"):  # the optional ones too
        check_baselines(("logreg_embeddings", "knn", "tree"))
    with pytest.raises(ValueError, match="sequence of names.*got the string 'logreg_embeddings'"):
        check_baselines("logreg_embeddings")
    with pytest.raises(ValueError, match="unknown baselines \\['knn'\\]"):
        make_baseline("knn", cv=2)
    X = digits.X_train
    with pytest.raises(ValueError, match="unknown baselines \\['knn'\\]"):
        run_baselines(X, X, X, X, digits.y_train, digits.y_train, names=("knn",))


# ---------------------------------------------------------------- with the real QCNN
def test_pipeline_trains_the_qcnn(digits):
    from qmlnb.qcnn.train import TrainConfig

    config = TrainConfig(n_qubits=N_QUBITS, epochs=1, batch_size=32, progress=False)
    result = run_qsvm_experiment(digits, config, SVM, baselines=("logreg_embeddings",), cv=3)
    assert set(result["qcnn"]["metrics"]) == {"accuracy", "f1", "roc_auc", "balanced_accuracy", "degenerate"}
    assert result["timings"]["qcnn_train"] > 0
    assert result["qsvm"]["params"]["n_qubits"] == N_QUBITS
    # even a briefly trained CNN front end separates 3 from 8 for the kernel SVM
    assert result["qsvm"]["metrics"]["balanced_accuracy"] >= 0.8


def test_bench_arguments_and_smoke_run(tmp_path, monkeypatch):
    from qmlnb.bench import results
    from qmlnb.bench.qsvm import parse_baselines, parse_ids, parse_seeds
    from qmlnb.cli import main

    assert parse_ids("3,8") == (3, 8) and parse_ids("all") is None and parse_seeds("0,2") == (0, 2)
    assert parse_baselines("all") == tuple(BASELINES) and parse_baselines("none") == ()
    assert parse_baselines("logreg_pixels, rbf_svm_pixels_full") == ("logreg_pixels", "rbf_svm_pixels_full")
    with pytest.raises(SystemExit, match="--baselines: unknown baselines \\['knn'\\]"):
        parse_baselines("logreg_pixels,knn")
    for bad in ("3", "3,3", "a,b"):
        with pytest.raises(ValueError, match="class"):
            parse_ids(bad)
    for bad in ("0,0", "-1", "x"):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)
    monkeypatch.setattr(results, "git_commit", lambda: {"commit": "abc", "dirty": False})
    out = tmp_path / "qsvm.json"
    assert main(["bench", "qsvm", "--datasets", "digits", "--classes", "3,8", "--n-train", "120", "--seeds", "0,1", "--n-qubits", "4",
                 "--epochs", "1", "--repeats", "1", "--cv", "2", "--backend", "cpu", "--backends", "cpu,numba",
                 "--baselines", "rbf_svm_embeddings_alignment,rbf_svm_pixels,logreg_pixels", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    task = result["tasks"][0]
    assert task["backend"] == "cpu" and task["seeds"] == [0, 1] and task["classes"] == [3, 8]
    summary = task["summary"]
    # --baselines: exactly the subset asked for, beside the QSVM and the QCNN
    assert set(summary) == {"qsvm", "qcnn", "rbf_svm_embeddings_alignment", "rbf_svm_pixels", "logreg_pixels"}
    diff = summary["rbf_svm_embeddings_alignment"]["reference_minus_model"]
    assert diff["n"] == 2 and diff["mean_difference"] == pytest.approx(
        summary["qsvm"]["mean"] - summary["rbf_svm_embeddings_alignment"]["mean"])
    assert 0.9 <= task["agreement"]["numba"]["min"] <= 1.0
    assert "diagnostics" in task["runs"][0]["pipeline"]["qsvm"]
    assert task["timing"]["c_search"]["max_abs_difference_of_cv_scores"] < 1e-9
    assert result["provenance"]["dirty"] is False and result["provenance"]["allow_dirty"] is False


def test_fitted_model_gram_projected_kernel_and_geometric_difference(digits, stand_in, result):
    """return_model hands back the fitted QSVM and its Gram; projected scores the projected kernel of the same map;
    g(K_rbf || K) is recorded for each quantum kernel against the RBF control's own Gram."""
    from qmlnb.kernels import projected_features, projected_gram
    from qmlnb.qsvm.baselines import rbf_gram
    from qmlnb.qsvm.geometric import geometric_difference

    full = run_qsvm_experiment(digits, None, SVM, trained=stand_in, cv=3, baselines=("rbf_svm_embeddings_alignment",),
                               projected=True, return_model=True)
    clf, K = full["model"], full["train_gram"]
    assert K.shape == (len(digits.y_train),) * 2 and K is clf.train_kernel_
    assert full["qsvm"]["metrics"] == result["qsvm"]["metrics"]  # the same fit as without the extras
    E_train = embed(stand_in.model, digits.X_train)
    from sklearn.metrics import balanced_accuracy_score

    predicted = clf.predict(embed(stand_in.model, digits.X_test))  # the returned model is the one scored
    assert balanced_accuracy_score(digits.y_test, predicted) == full["qsvm"]["metrics"]["balanced_accuracy"]
    projected = full["projected"]
    assert projected["params"]["gamma_projected"] == pytest.approx(2 * projected["params"]["gamma"])
    assert projected["metrics"]["balanced_accuracy"] > 0.8
    rbf_gamma = full["baselines"]["rbf_svm_embeddings_alignment"]["params"]["gamma"]
    K_proj = projected_gram(projected_features(clf.feature_map(clf.bandwidth_), E_train),
                            gamma=projected["params"]["gamma_projected"])
    expected = {"fidelity": geometric_difference(rbf_gram(E_train, gamma=rbf_gamma), K),
                "projected": geometric_difference(rbf_gram(E_train, gamma=rbf_gamma), K_proj)}
    assert full["geometric_difference"] == pytest.approx(expected)
    assert set(result["geometric_difference"]) == {"fidelity"}
    json.dumps({k: v for k, v in full.items() if k not in ("model", "train_gram")})
