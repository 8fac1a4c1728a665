"""Tiles of a Gram matrix: which blocks to compute and how to mirror them."""
from __future__ import annotations

import numpy as np


def tile_ranges(n: int, tile: int) -> list[tuple[int, int]]:
    """[(start, stop), ...] covering range(n) in blocks of at most ``tile``."""
    return [(start, min(n, start + tile)) for start in range(0, n, tile)]


def tile_pairs(n_rows: int, n_cols: int | None, tile: int) -> list[tuple[int, int, int, int]]:
    """Blocks (i0, i1, j0, j1) of the output to compute.

    ``n_cols is None`` means the symmetric case: only blocks on or above the
    diagonal (j0 >= i0), which ``mirror_upper_`` later copies down.
    """
    rows = tile_ranges(n_rows, tile)
    if n_cols is None:
        return [(i0, i1, j0, j1) for a, (i0, i1) in enumerate(rows) for (j0, j1) in rows[a:]]
    return [(i0, i1, j0, j1) for (i0, i1) in rows for (j0, j1) in tile_ranges(n_cols, tile)]


def mirror_upper_(out: np.ndarray, block: int = 256) -> None:
    """Copy the upper triangle of square ``out`` onto its lower triangle, in place.

    Goes block by block (256 x 256 float64 = 512 KiB, a core's L2) so that
    the strided transposed reads stay in cache.
    """
    blocks = tile_ranges(out.shape[0], block)
    for a, (i0, i1) in enumerate(blocks):
        diag = out[i0:i1, i0:i1]
        lower = np.tril_indices(i1 - i0, -1)
        diag[lower] = diag.T[lower]
        for j0, j1 in blocks[a + 1 :]:
            out[j0:j1, i0:i1] = out[i0:i1, j0:j1].T
