"""Images shrunk to a few pixels by area averaging: one pixel per qubit for the "kernels at scale" stage.

>>> side = pixel_side(16, 28, 28)                 # 4: 16 qubits take a 4 x 4 image
>>> small = area_downsample(splits.X_train, side)  # (N, 1, 28, 28) -> (N, 1, 4, 4)
"""
from __future__ import annotations

import math

import numpy as np

from .._util import check_positive_int


def area_weights(size: int, side: int) -> np.ndarray:
    """(side, size) float64 matrix averaging ``size`` input pixels into ``side`` output pixels.

    Output pixel i covers the interval [i * size / side, (i + 1) * size / side)
    of the input; each input pixel counts with the length of its overlap, and
    each row sums to 1 (a box filter, exact when ``side`` divides ``size``,
    no interpolation or aliasing when it does not).
    """
    size = check_positive_int(size, "size")
    side = check_positive_int(side, "side")
    if side > size:
        raise ValueError(f"cannot downsample {size} pixels to {side}: the side must be at most {size}")
    edges = np.arange(side + 1) * (size / side)
    lo, hi = edges[:-1, None], edges[1:, None]
    pixel = np.arange(size)[None, :]
    overlap = np.clip(np.minimum(hi, pixel + 1) - np.maximum(lo, pixel), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def area_downsample(images, side: int) -> np.ndarray:
    """Images (N, C, H, W) averaged over boxes to (N, C, side, side) float64.

    ``side`` is at most min(H, W); ``side == H == W`` returns the images as
    they are (as float64).  Rows and columns are averaged separately
    (:func:`area_weights`), so the cost is O(N C H W side).
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be 4-D (N, C, H, W), got shape {images.shape}")
    _, _, height, width = images.shape
    side = check_positive_int(side, "side")
    if side > min(height, width):
        raise ValueError(f"cannot downsample {height} x {width} images to {side} x {side}: "
                         f"the side must be at most {min(height, width)}")
    rows, cols = area_weights(height, side), area_weights(width, side)
    return np.einsum("ih,nchw,jw->ncij", rows, images.astype(np.float64, copy=False), cols, optimize=True)


def pixel_side(n_qubits: int, height: int, width: int) -> int:
    """The side s with s * s == ``n_qubits`` that fits in an (height, width) image, else a ValueError saying why."""
    n_qubits = check_positive_int(n_qubits, "n_qubits")
    side = math.isqrt(n_qubits)
    if side * side != n_qubits:
        raise ValueError(f"features='pixels' takes one pixel per qubit from a square s x s image, so n_qubits must "
                         f"be a perfect square; {n_qubits} is not (nearest: {side * side} or {(side + 1) ** 2})")
    if side > min(height, width):
        raise ValueError(f"features='pixels' with n_qubits={n_qubits} needs a {side} x {side} image, but the images "
                         f"are {height} x {width}: at most {min(height, width) ** 2} qubits")
    return side

