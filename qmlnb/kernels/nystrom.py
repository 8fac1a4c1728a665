"""Nystrom approximation of the quantum fidelity kernel.

With M landmark samples L, C = K(X, L) (N x M) and W = K(L, L) (M x M),

    K(X, X) ~ C W^+ C^T = (C W^{-1/2}) (C W^{-1/2})^T,

so the rows of ``C W^{-1/2}`` are explicit features for a linear model: the
cost drops from N^2 to N*M kernel entries.  W^{-1/2} comes from W's
eigen-decomposition; eigenvalues below ``eig_cutoff`` times the largest are
dropped (a pseudo-inverse), because the Gram is computed from float32 states
and its tiny eigenvalues are rounding noise that W^{-1/2} would blow up.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, check_random_state

from .feature_map import FeatureMap
from .gram import gram
from .registry import get_backend
from .tiling import tile_pairs
from .validation import MAX_THREADS, check_embeddings, check_states, check_threads, check_unit_rows
from .._util import check_option, check_positive_int, check_real

LANDMARK_METHODS = ("uniform", "kmeans++")


class NystroemQuantumKernel(TransformerMixin, BaseEstimator):
    """Nystrom features of the fidelity kernel of a feature map (scikit-learn transformer).

    Parameters
    ----------
    feature_map : FeatureMap
        Maps embeddings X (N, n_qubits) to states.
    n_components : int
        Number M of landmarks (at most the number of samples given to ``fit``).
    landmarks : {"uniform", "kmeans++"}
        How landmarks are picked among the fitted samples: uniformly without
        replacement, or by k-means++ seeding on the embeddings (spread out,
        which usually lowers the error for the same M).
    backend : str
        Gram backend (see ``available_backends()``).
    eig_cutoff : float
        Relative eigenvalue cutoff for W^{-1/2}.
    n_threads : int, optional
        Backend threads.
    random_state : int, RandomState or None

    Attributes
    ----------
    landmark_indices_ : ndarray (M,) int, rows of the fitted X used as landmarks
    landmark_states_ : ndarray (M, 2**n) complex64
    normalization_ : ndarray (M, M) float64, W^{-1/2}
    rank_ : int, eigenvalues of W kept
    """

    def __init__(self, feature_map: FeatureMap | None = None, n_components: int = 100, *, landmarks: str = "uniform",
                 backend: str = "cpu", eig_cutoff: float = 1e-6, n_threads: int | None = None, random_state=None):
        self.feature_map = feature_map
        self.n_components = n_components
        self.landmarks = landmarks
        self.backend = backend
        self.eig_cutoff = eig_cutoff
        self.n_threads = n_threads
        self.random_state = random_state

    def _check_params(self, n_samples: int) -> FeatureMap:
        feature_map = FeatureMap() if self.feature_map is None else self.feature_map
        if not isinstance(feature_map, FeatureMap):
            raise TypeError(f"feature_map must be a qmlnb FeatureMap, got {type(feature_map).__name__}")
        m = check_positive_int(self.n_components, "n_components")
        if m > n_samples:
            raise ValueError(f"n_components={m} landmarks cannot be chosen among {n_samples} samples")
        check_option(self.landmarks, "landmarks", LANDMARK_METHODS)
        check_real(self.eig_cutoff, "eig_cutoff", 0, 1, closed="left")
        get_backend(self.backend)
        return feature_map

    def fit(self, X, y=None):
        """Choose M landmarks among the rows of X (N, n_qubits) and compute W^{-1/2}."""
        X = np.asarray(X)
        feature_map = self._check_params(X.shape[0] if X.ndim == 2 else 0)
        X = check_embeddings(X, feature_map.n_qubits)
        rng = check_random_state(self.random_state)
        m = self.n_components
        if self.landmarks == "uniform":
            indices = np.sort(rng.choice(X.shape[0], size=m, replace=False))
        else:
            from sklearn.cluster import kmeans_plusplus

            _, indices = kmeans_plusplus(X, m, random_state=rng)
            indices = np.sort(indices)
        self.feature_map_ = feature_map
        self.landmark_indices_ = indices
        self.landmark_states_ = feature_map.states(X[indices])
        W = gram(self.landmark_states_, backend=self.backend, n_threads=self.n_threads)
        eigvals, eigvecs = np.linalg.eigh(W)
        keep = eigvals > self.eig_cutoff * eigvals.max()
        vecs = eigvecs[:, keep]
        self.normalization_ = (vecs / np.sqrt(eigvals[keep])) @ vecs.T
        self.rank_ = int(keep.sum())
        self.n_features_in_ = feature_map.n_qubits
        return self

    def transform(self, X) -> np.ndarray:
        """Features F (N, M) float64 of X (N, n_qubits) with F F^T ~ K(X, X)."""
        check_is_fitted(self, "normalization_")
        X = check_embeddings(X, self.feature_map_.n_qubits)
        return self.transform_states(self.feature_map_.states(X))

    def transform_states(self, S) -> np.ndarray:
        """Features F (N, M) float64 of states S (N, 2**n) complex64."""
        check_is_fitted(self, "normalization_")
        S = check_states(S, "S")
        if S.shape[1] != self.landmark_states_.shape[1]:
            raise ValueError(f"states have dimension {S.shape[1]}, the landmarks {self.landmark_states_.shape[1]}")
        C = gram(S, self.landmark_states_, backend=self.backend, n_threads=self.n_threads)
        return C @ self.normalization_


def relative_frobenius_error(S, features, *, backend: str = "cpu", tile: int = 2048,
                             n_threads: int | None = None):
    """||K - F F^T||_F / ||K||_F for K = gram(S), computed tile by tile (K is never held).

    Parameters
    ----------
    S : array_like, shape (N, d), complex unit states
    features : array_like, shape (N, M), real (e.g. ``NystroemQuantumKernel.transform``),
        or a list of such arrays (one pass over K scores them all; a list of errors is returned)
    tile : edge of the tiles of K computed at a time (memory ~ 2 * tile^2 * 8 bytes)

    Only tiles on or above the diagonal are computed; off-diagonal tiles
    count twice because K and F F^T are symmetric.
    """
    from tqdm.auto import tqdm

    from .gram import default_threads
    from .out_of_core import compute_tile

    S = check_states(S, "S")
    check_unit_rows(S, "S")
    many = isinstance(features, (list, tuple))
    Fs = [np.asarray(F, dtype=np.float64) for F in (features if many else [features])]
    for F in Fs:
        if F.ndim != 2 or F.shape[0] != S.shape[0]:
            raise ValueError(f"features must have shape ({S.shape[0]}, M), got {F.shape}")
    tile = check_positive_int(tile, "tile")
    n_threads = check_threads(min(default_threads(), MAX_THREADS) if n_threads is None else n_threads)
    module = get_backend(backend)
    residuals, total = np.zeros(len(Fs)), 0.0
    for pair in tqdm(tile_pairs(S.shape[0], None, tile), desc="Nystrom error tiles", unit="tile"):
        i0, i1, j0, j1 = pair
        K = compute_tile(module, S, None, pair, tile=tile, n_threads=n_threads, dtype=np.float64)
        weight = 1.0 if i0 == j0 else 2.0
        for f, F in enumerate(Fs):
            residuals[f] += weight * float(np.sum((K - F[i0:i1] @ F[j0:j1].T) ** 2))
        total += weight * float(np.sum(K**2))
    errors = np.sqrt(residuals / total).tolist()
    return errors if many else errors[0]
