"""Images as angles, one feature per qubit, scaled to [0, pi] on the fitting set's range.

The kernel experiments that do not need the trained QCNN encode images with
one of these: :func:`pca_angles` (n PCA components) or :func:`pixel_angles`
(the image area-averaged to s x s = n pixels).  Both fit their scale on the
first array given and apply it to the others, so a test set is encoded with
the training set's scale.
"""
from __future__ import annotations

import numpy as np


def pca_angles(X_fit: np.ndarray, *others: np.ndarray, n_components: int) -> list[np.ndarray]:
    """Flattened images -> ``n_components`` PCA features scaled to [0, pi] on ``X_fit``'s range.

    A quick, training-free embedding (one angle per qubit) for the kernel
    experiments that do not need the trained QCNN.  Returns float64 arrays of
    shape (N, n_components), first for ``X_fit``, then for each of ``others``.
    """
    from sklearn.decomposition import PCA

    flat = [np.asarray(x, dtype=np.float64).reshape(len(x), -1) for x in (X_fit, *others)]
    if n_components > min(flat[0].shape):
        raise ValueError(f"n_qubits={n_components} needs at least that many samples and pixels; "
                         f"the data has {flat[0].shape[0]} samples of {flat[0].shape[1]} pixels")
    pca = PCA(n_components=n_components, random_state=0).fit(flat[0])
    Z = [pca.transform(x) for x in flat]
    lo, hi = Z[0].min(axis=0), Z[0].max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return [np.clip((z - lo) / span, 0.0, 1.0) * np.pi for z in Z]


def pixel_angles(X_fit: np.ndarray, *others: np.ndarray, n_pixels: int) -> list[np.ndarray]:
    """Images (N, C, H, W) -> ``n_pixels`` = s * s area-averaged pixels, scaled to [0, pi] on ``X_fit``'s range.

    One pixel per qubit (``qmlnb.data.resample``: the image averaged over s x s
    boxes, channels averaged too; s = H gives the image itself).  One scale for
    all pixels (``X_fit``'s smallest and largest value), so the image keeps its
    contrast; a per-pixel scale would stretch the almost constant border pixels'
    noise to the full angle range.  Returns float64 (N, n_pixels) arrays, first
    for ``X_fit``, then for each of ``others``.
    """
    from .resample import area_downsample, pixel_side

    images = [np.asarray(x) for x in (X_fit, *others)]
    side = pixel_side(n_pixels, *images[0].shape[2:])
    flat = [area_downsample(x, side).mean(axis=1).reshape(len(x), -1) for x in images]
    lo, hi = float(flat[0].min()), float(flat[0].max())
    span = hi - lo if hi > lo else 1.0
    return [np.clip((z - lo) / span, 0.0, 1.0) * np.pi for z in flat]
