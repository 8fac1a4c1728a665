"""``openmp``: the C++ extension ``qmlnb._openmp`` (pybind11, OpenMP, SIMD).

The extension (``native/gram_openmp.cpp``) hands output tiles to OpenMP
threads with a dynamic schedule (only upper tiles in the symmetric case,
each written to its place and its mirror), blocks the state dimension for
the caches, and computes complex dot products in a register-blocked
micro-kernel on planar float32 panels.  It writes straight into ``out``
with the GIL released; ``n_threads`` is that call's OpenMP thread count.
"""
from __future__ import annotations

INSTALL = (
    "build the extension: pip install -e . (needs a C++17 compiler with OpenMP, e.g. g++ with libgomp; "
    "QMLNB_MARCH=none builds a portable binary)"
)
# 256 x 256 tiles: the per-thread accumulators (512 KiB) and packed panels fit in L2
DEFAULT_TILE = 256
# "upper": gram(..., mirror=False) leaves the symmetric Gram's lower triangle to the caller (the shot-sampled
# estimate writes it); gram_mps takes mirror= too and writes the mirror anyway (beside an MPS contraction per pair
# the mirror's writes cost nothing to speak of)
CAPABILITIES = frozenset({"states", "mps", "out", "client", "upper", "mps_norms"})  # qmlnb.kernels.registry.CAPABILITIES


def probe() -> tuple[bool, str]:
    try:
        from qmlnb import _openmp
    except ImportError as exc:
        return False, f"the native extension qmlnb._openmp is not built: {exc}"
    rows, cols = _openmp.MICRO_TILE
    return True, f"C++ OpenMP extension ({_openmp.SIMD} micro-kernel, {rows} x {cols} complex dot products)"


def gram(A, B=None, *, out, tile, n_threads, mirror=True):
    from qmlnb import _openmp

    _openmp.gram(A, B, out, tile, n_threads, mirror)
    return out


# MPS states: the extension qmlnb._mps_openmp (native/mps_openmp.cpp), built beside qmlnb._openmp
# 128 rows share each packed group of 16 columns (packing and mirror writes repeat per tile)
MPS_DEFAULT_TILE = 128


def _mps_extension():
    try:
        from qmlnb import _mps_openmp
    except ImportError as exc:
        from ..registry import BackendUnavailableError

        raise BackendUnavailableError(f"the native MPS extension qmlnb._mps_openmp is not built ({exc}); "
                                      f"to enable it: {INSTALL}") from exc
    return _mps_openmp


def gram_mps(A, B=None, *, out, tile, n_threads, mirror=True):
    """Fill ``out`` with |<A_i|B_j>|^2 of validated ``MPSStates`` (C++: SIMD over 16 pairs, OpenMP over tiles);
    ``mirror`` is taken for the "upper" capability, and the lower triangle is written either way."""
    _mps_extension().gram(A.tensors, None if B is None else B.tensors, out, tile, n_threads)
    return out


def mps_self_log_overlap(tensors, n_threads):
    """(N,) float64 log <psi_i|psi_i> of (N, n, 2, chi, chi) complex64 site tensors, NaN for a sample with a NaN or
    infinite entry (C++: float64, SIMD over 8 samples, OpenMP over groups; ``gram``'s norms' check, which then
    needs no finiteness pass of its own).  Equal to ``qmlnb.kernels.mps.self_log_overlap`` to rounding."""
    return _mps_extension().self_log_overlap(tensors, n_threads)
