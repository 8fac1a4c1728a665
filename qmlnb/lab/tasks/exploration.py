"""The ``explore`` task (notebook 00-explore.ipynb): images, their angles and the Gram of one setting, drawn."""
from __future__ import annotations

import numpy as np

from . import common
from .spec import BACKEND, CLASSES, DATASET, SEED, Param, TaskSpec
from .. import stages
from ... import timing
from ..._util import Interval, IsInstance
from ...data.angles import pca_angles


def explore(dataset: str = "digits", classes=(3, 8), n_samples: int = 120, n_qubits: int = 4, kind: str = "zz",
            entanglement: str = "linear", bandwidth: float = 0.2, reps: int = 2, backend: str = "cpu", seed: int = 0):
    """Everything the exploration notebook shows for one choice of settings.

    Returns a dict: ``images`` (k, H, W) float32 samples, ``labels`` their class
    names, ``X`` (n_samples, n_qubits) PCA angles, ``y`` int64 labels,
    ``K`` (n_samples, n_samples) float64 Gram sorted by label, ``gram_s``
    median seconds (``timing``: the :class:`qmlnb.timing.Timing` as a dict),
    ``circuit`` the text drawing of the feature map on the first sample.
    """
    import pennylane as qml

    from ...kernels import FeatureMap, gram

    common.check_backend(backend)
    splits = common.load_data(dataset, classes=classes, seed=seed, grayscale=True)
    n = min(n_samples, len(splits.y_train))
    order = np.argsort(splits.y_train[:n], kind="stable")
    images = splits.X_train[:n][order]
    y = splits.y_train[:n][order]
    X = pca_angles(images, n_components=n_qubits)[0]
    fm = FeatureMap(n_qubits=n_qubits, reps=reps, entanglement=entanglement, bandwidth=bandwidth, kind=kind)
    S = fm.states(X)
    timed = timing.measure(lambda: gram(S, backend=backend))
    K, gram_s = timed.value, timed.median
    # up to four samples of each class, for the image strip
    picks = [int(i) for c in np.unique(y) for i in np.flatnonzero(y == c)[:4]]
    return {"images": images[picks, 0], "labels": [splits.class_names[y[i]] for i in picks], "X": X, "y": y, "K": K,
            "gram_s": gram_s, "timing": timed.as_dict(), "circuit": qml.draw(fm.qnode())(X[0]), "class_names": splits.class_names}


def plot_exploration(result: dict):
    """Sample images and the kernel heatmap of an :func:`explore` result: a matplotlib Figure, shown with ``display``.

    The figure is built without pyplot, so nothing shows it before it is complete: with ipykernel 7 a
    widget's message, handled on another thread, flushes pyplot's open figures (matplotlib-inline's
    post-execute hook), and the explorer's Run button then showed a half-drawn figure.
    """
    from matplotlib.figure import Figure
    import seaborn as sns

    k = len(result["images"])
    fig = Figure(figsize=(max(1.6 * k, 7), 8))
    axes = fig.subplot_mosaic([[f"i{i}" for i in range(k)], ["K"] * k], height_ratios=[1, 4])
    for i, (image, label) in enumerate(zip(result["images"], result["labels"])):
        axes[f"i{i}"].imshow(image, cmap="gray")
        axes[f"i{i}"].set_title(label, fontsize=9)
        axes[f"i{i}"].axis("off")
    ax = axes["K"]
    sns.heatmap(result["K"], ax=ax, cmap="viridis", vmin=0, vmax=1, square=True, xticklabels=False, yticklabels=False)
    # the class boundary (samples are sorted by class): bright blocks on the diagonal, dark off it, separate them
    for edge in class_edges(result["y"]):
        ax.axhline(edge, color="white", linewidth=1.2)
        ax.axvline(edge, color="white", linewidth=1.2)
    ax.set_title(f"fidelity kernel, samples sorted by class ({result['gram_s'] * 1e3:.1f} ms); kernel-target "
                 f"alignment {kernel_alignment(result):.3f}")
    return fig


def class_edges(y) -> list[int]:
    """Where a label sorted (n,) array changes class: the heatmap's boundary lines (row indices)."""
    y = np.asarray(y)
    return [int(i) for i in np.flatnonzero(y[1:] != y[:-1]) + 1]


def kernel_alignment(result: dict) -> float:
    """The kernel-target alignment of an :func:`explore` result's Gram and labels (1: the kernel is the ideal
    +-1 label kernel; about 0: it ignores the classes): the quantity the QSVM's bandwidth search maximises."""
    from ...qsvm.svm import kernel_target_alignment

    return float(kernel_target_alignment(result["K"], result["y"]))


SPEC = TaskSpec(
    name=stages.EXPLORE, notebook="notebooks/00-explore.ipynb",
    params=(DATASET, CLASSES,
            Param("n_samples", 120, Interval(int, 2)), Param("n_qubits", 4, Interval(int, 1)),
            Param("kind", "zz", IsInstance(str)), Param("entanglement", "linear", IsInstance(str)),
            Param("bandwidth", 0.2, Interval(float, 0, closed="neither")), Param("reps", 2, Interval(int, 1)),
            BACKEND, SEED),
    metrics=("backend", "n_samples", "n_qubits", "timings", "timings.gram_s"))  # written by the notebook
