"""The Gram backends by name, imported only when asked for.

A backend is a module of ``qmlnb.kernels.backends`` with

- ``INSTALL``: the install step that makes it usable (shown in errors);
- ``DEFAULT_TILE``: its default tile edge in rows;
- ``CAPABILITIES``: what it computes, a subset of :data:`CAPABILITIES` (the Gram
  entry point asks :func:`supports`, never ``hasattr``);
- ``probe() -> (usable: bool, reason: str)``: cheap, never raises (ask it through
  :func:`check_backend`);
- ``gram(A, B, *, out, tile, n_threads)``: fills ``out`` (N, M) float32 or
  float64 with |A B^H|^2 (``B is None``: the symmetric A A^H, computing
  only upper tiles) from validated C-contiguous complex64 states.

Importing a backend module must not import its heavy dependency (numba,
torch, pycuda, cupy, the native extension); ``probe`` and ``gram`` do that.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .._util import check_option

BACKENDS = {
    "cpu": "qmlnb.kernels.backends.cpu_blas",
    "numba": "qmlnb.kernels.backends.numba_jit",
    "openmp": "qmlnb.kernels.backends.openmp_native",
    "torchcuda": "qmlnb.kernels.backends.torch_cuda",
    "pycuda": "qmlnb.kernels.backends.pycuda_kernel",
    "cupy": "qmlnb.kernels.backends.cupy_blas",
}


# what a backend may declare: "states" (Gram of state vectors), "mps" (of matrix-product states: ``gram_mps``),
# "out" (tiles written to a file, qmlnb.kernels.out_of_core), "client" (tiles as Dask tasks, qmlnb.kernels.distributed),
# "upper" (gram/gram_mps(..., mirror=False) leave a symmetric Gram's lower triangle to the caller),
# "mps_norms" (``mps_self_log_overlap(tensors, n_threads)``: gram's norms' check of MPS inputs, finding non-finite
# entries too, instead of NumPy's)
CAPABILITIES = ("states", "mps", "out", "client", "upper", "mps_norms")


class BackendError(RuntimeError):
    """A Gram backend cannot be used."""


class UnknownBackendError(BackendError, ValueError):
    """No backend of that name exists."""


class BackendUnavailableError(BackendError):
    """The backend exists but cannot run on this machine."""


def _module(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise UnknownBackendError(f"unknown Gram backend {name!r}; known backends: {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


def check_backend(name: str) -> tuple[bool, str]:
    """(usable, reason): can the backend ``name`` run on this machine?

    The one answer to that question: :func:`get_backend`, :func:`available_backends`
    and the lab's skip decisions all ask here.  Probes only this backend (its
    heavy dependency is imported, the others are not touched).  An unknown
    name raises :class:`UnknownBackendError`.
    """
    return _module(name).probe()


def unusable_reason(name: str) -> str | None:
    """None when the backend ``name`` can run here, else the one sentence that says why not
    ("Gram backend 'torchcuda' cannot run here: <probe's reason>"): every refusal and skip quotes it."""
    usable, reason = check_backend(name)
    return None if usable else f"Gram backend {name!r} cannot run here: {reason}"


def supports(name: str, capability: str) -> bool:
    """Does the backend ``name`` declare ``capability`` (one of :data:`CAPABILITIES`)?  Imports nothing heavy."""
    check_option(capability, "capability", CAPABILITIES)
    return capability in _module(name).CAPABILITIES


def get_backend(name: str) -> ModuleType:
    """The backend module, after checking that it can run here (never a fallback)."""
    module = _module(name)
    why = unusable_reason(name)
    if why:
        raise BackendUnavailableError(f"{why}. To enable it: {module.INSTALL}")
    return module


def available_backends() -> dict[str, tuple[bool, str]]:
    """{name: (usable, reason)} for every known backend on this machine."""
    return {name: check_backend(name) for name in BACKENDS}
