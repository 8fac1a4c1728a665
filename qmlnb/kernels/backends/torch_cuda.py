"""``torchcuda``: the Gram matrix as complex64 matrix products with torch on CUDA GPUs.

Per output tile (only tiles on or above the diagonal when K is symmetric)
one ``a @ b.mH`` product (cuBLAS cgemm; the conjugate transpose is a flag,
never a copy), then |.|^2 in place on the product's float32 view.  States
that fit on the GPU are copied there once; states that do not stay in pinned
host memory and are streamed tile by tile, the next tile's copy overlapping
the current tile's product (separate CUDA streams).  Several GPUs share the
tiles round-robin (``qmlnb.kernels.multi_gpu``).

Two entry points:

- ``gram(A, B, out=..., ...)`` (through ``qmlnb.kernels.gram(..., backend="torchcuda")``):
  NumPy in, NumPy out, all visible GPUs.  Tiles come back to the host as they
  finish, overlapping the next products.
- ``gram_device(A, B, device=..., dtype=...)``: K left on one device as a
  torch tensor (inputs may already be there, e.g. from
  ``qmlnb.kernels.states_torch``), for work that continues on the GPU.

The algorithm is written for any torch device; only ``_CudaStreamCopier`` and
the placement decision ``_place`` contain CUDA-specific code (streams, pinned
memory, free device memory).  On the CPU device the same tile loop runs with
plain synchronous copies, which is how it is tested without a GPU.
"""
from __future__ import annotations

import contextlib

import numpy as np

from ..multi_gpu import gram_tiles_on_devices
from ..tiling import tile_pairs
from ..validation import InsufficientMemoryError, check_states, check_unit_norms
from ..._util import check_positive_int

INSTALL = (
    "install a CUDA build of torch on a machine with an NVIDIA GPU and driver "
    "(https://pytorch.org/get-started/locally/, e.g. pip install torch --index-url "
    "https://download.pytorch.org/whl/cu126); the default install is the CPU build"
)
DEFAULT_TILE = 4096
CAPABILITIES = frozenset({"states", "out", "client"})  # qmlnb.kernels.registry.CAPABILITIES: no MPS kernel
# fraction of the free device memory the backend plans to use
DEVICE_MEMORY_FRACTION = 0.8


def probe() -> tuple[bool, str]:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a hard dependency
        return False, f"torch is not installed ({exc})"
    if torch.version.cuda is None:
        return False, f"torch has no CUDA device here (torch {torch.__version__} is a CPU-only build)"
    if not torch.cuda.is_available():
        return False, (f"torch has no CUDA device here (torch {torch.__version__}, built for CUDA "
                       f"{torch.version.cuda}, finds no GPU or driver)")
    names = sorted({torch.cuda.get_device_name(k) for k in range(torch.cuda.device_count())})
    return True, f"torch {torch.__version__} on {torch.cuda.device_count()} CUDA device(s): {', '.join(names)}"


@contextlib.contextmanager
def exact_float32_matmul():
    """Turn TF32 off for the duration (and restore the user's setting).

    With TF32 cuBLAS rounds the inputs of float32 and complex64 products to a
    10-bit mantissa, about 1e-3 relative error: far outside the 1e-5 agreement
    every backend promises.
    """
    import torch

    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


# ---------------------------------------------------------------- the algorithm (any device)
def abs2(product):
    """|product|^2 as a float32 tensor; ``product`` (complex64, scratch) is squared in place."""
    import torch

    parts = torch.view_as_real(product)
    parts.square_()
    return parts.sum(dim=-1)


def symmetrize_upper(block):
    """The square tile with its lower triangle replaced by the transposed upper one.

    A diagonal tile of A A^H is symmetric in exact arithmetic, but (i, j) and
    (j, i) are rounded differently by the product; copying one onto the other
    makes K exactly symmetric, as the CPU backends' mirroring does.
    """
    import torch

    return torch.triu(block) + torch.triu(block, 1).T


def tile_blocks(A, B, pairs, copier):
    """Yield ``((i0, i1, j0, j1), block)``: the float32 |A_i B_j^H|^2 tile of every pair.

    Parameters
    ----------
    A : torch.Tensor, shape (N, d), complex64
        On the compute device (resident) or in host memory (streamed).
    B : torch.Tensor, shape (M, d), complex64, or None for the symmetric A A^H
    pairs : list of (i0, i1, j0, j1)
        Row-major order (``tiling.tile_pairs``), so a row tile is copied once
        for all its column tiles.
    copier : _Copier
        Moves tiles to the compute device; the next pair's column tile is
        requested before the current product so that a CUDA copier overlaps
        the two.
    """
    cols = A if B is None else B
    row_key, a = None, None
    upcoming = copier.start(cols[pairs[0][2] : pairs[0][3]]) if pairs else None
    for k, (i0, i1, j0, j1) in enumerate(pairs):
        if row_key != (i0, i1):
            a, row_key = copier.wait(copier.start(A[i0:i1])), (i0, i1)
        b = copier.wait(upcoming)
        if k + 1 < len(pairs):
            upcoming = copier.start(cols[pairs[k + 1][2] : pairs[k + 1][3]])
        block = abs2(a @ b.mH)
        if B is None and i0 == j0:
            block = symmetrize_upper(block)
        yield (i0, i1, j0, j1), block


def tiles_to_host(A, B, pairs, out, copier, advance=lambda n: None) -> None:
    """Compute ``pairs`` and write them (and, if symmetric, their mirrors) into ``out``.

    ``out`` is a torch view of the host output (N, M) float32 or float64;
    pairs of one call must not overlap those of a concurrent call.
    """
    for (i0, i1, j0, j1), block in tile_blocks(A, B, pairs, copier):
        copier.to_host(block, out[i0:i1, j0:j1])
        if B is None and i0 != j0:
            copier.to_host(block.T.contiguous(), out[j0:j1, i0:i1])
        advance(1)
    copier.finish()


class _Copier:
    """Copies between host and a torch device, each complete when it returns.

    Used on the CPU device (where host to "device" is free) and as the
    interface that ``_CudaStreamCopier`` implements asynchronously.
    """

    def __init__(self, device):
        self.device = device

    def start(self, rows):
        """Begin moving ``rows`` to the device; returns a handle for ``wait``."""
        return rows.to(self.device)

    def wait(self, handle):
        """The device tensor of a ``start`` handle, usable by the next product."""
        return handle

    def to_host(self, block, dest) -> None:
        """Write device tile ``block`` into host view ``dest`` (cast to its dtype)."""
        dest.copy_(block)

    def finish(self) -> None:
        """Return once every ``to_host`` has landed in host memory."""


class _CudaStreamCopier(_Copier):
    """CUDA only: copies on two side streams, overlapping the products.

    Host-to-device copies of (pinned) state tiles run on ``h2d``; finished K
    tiles go device-to-host on ``d2h`` into pinned staging tiles (torch's
    caching host allocator recycles them), and are copied into the NumPy
    output ``IN_FLIGHT`` tiles later, so the GPU never waits for the host.
    """

    IN_FLIGHT = 2

    def __init__(self, device):
        import torch

        super().__init__(device)
        self.torch = torch
        self.compute = torch.cuda.current_stream(device)
        self.h2d = torch.cuda.Stream(device)
        self.d2h = torch.cuda.Stream(device)
        self.pending = []  # (copied event, pinned staging tile, host destination)

    def start(self, rows):
        if rows.device == self.device:  # resident states: a view, nothing to copy
            return rows, None
        with self.torch.cuda.stream(self.h2d):
            tile = rows.to(self.device, non_blocking=True)  # async because rows is pinned
            copied = self.torch.cuda.Event()
            copied.record(self.h2d)
        return tile, copied

    def wait(self, handle):
        tile, copied = handle
        if copied is not None:
            self.compute.wait_event(copied)
            # allocated on h2d, read on compute: keep the allocator from reusing it early
            tile.record_stream(self.compute)
        return tile

    def to_host(self, block, dest) -> None:
        ready = self.torch.cuda.Event()
        ready.record(self.compute)
        staging = self.torch.empty(block.shape, dtype=block.dtype, pin_memory=True)
        with self.torch.cuda.stream(self.d2h):
            self.d2h.wait_event(ready)
            staging.copy_(block, non_blocking=True)
            block.record_stream(self.d2h)
            copied = self.torch.cuda.Event()
            copied.record(self.d2h)
        self.pending.append((copied, staging, dest))
        while len(self.pending) > self.IN_FLIGHT:
            self._land_oldest()

    def _land_oldest(self) -> None:
        copied, staging, dest = self.pending.pop(0)
        copied.synchronize()
        dest.copy_(staging)

    def finish(self) -> None:
        while self.pending:
            self._land_oldest()


def _copier(device) -> _Copier:
    return _CudaStreamCopier(device) if device.type == "cuda" else _Copier(device)


# ---------------------------------------------------------------- placement and memory
def _free_bytes(device) -> int:
    """Bytes free for new allocations on ``device`` (RAM for the CPU device)."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    from ..validation import available_memory_bytes

    return available_memory_bytes()


def _workspace_bytes(tile: int) -> int:
    """Device scratch per tile in flight: the complex64 product, its abs2 and one mirror copy."""
    return tile * tile * (8 + 4 + 4)


def _place(states, device, tile: int, reserved: int, what: str) -> str:
    """``"resident"`` if ``states`` (host or device tensors) fit on ``device``, else ``"streamed"``.

    ``reserved``: bytes the caller needs on the device besides states and
    tiles (K itself for ``gram_device``).  Raises InsufficientMemoryError,
    with the numbers, when even streaming three tiles at a time won't fit.
    """
    budget = DEVICE_MEMORY_FRACTION * _free_bytes(device)
    on_host = [s for s in states if s is not None and s.device != device]
    d = states[0].shape[1]
    workspace = 3 * _workspace_bytes(tile)
    if device.type != "cuda" or sum(s.numel() * 8 for s in on_host) + workspace + reserved <= budget:
        return "resident"
    streamed = 3 * tile * d * 8 + workspace + reserved  # a row tile and two column tiles
    if streamed > budget:
        raise InsufficientMemoryError(
            f"{what} needs {streamed / 2**30:.2f} GiB on {device} even when streaming tiles of {tile} states "
            f"but only {budget / 2**30:.2f} GiB is usable ({DEVICE_MEMORY_FRACTION:.0%} of free); use a smaller tile"
        )
    return "streamed"


def _to(states, device, placement: str):
    """The states where the tile loop reads them: on the device, or pinned on the host."""
    if states is None:
        return None
    if placement == "resident":
        return states.to(device)
    host = states.cpu()  # states on another GPU are streamed from the host too
    return host if host.is_pinned() else host.pin_memory()


# ---------------------------------------------------------------- inputs and devices
def _cuda_devices() -> list:
    import torch

    return [torch.device("cuda", k) for k in range(torch.cuda.device_count())]


def _resolve_device(device):
    """A torch device with its index ("cuda" -> "cuda:<current>"); None: the current CUDA device.

    Without a usable CUDA device, None and "cuda" raise BackendUnavailableError saying why.
    """
    import torch

    device = torch.device("cuda" if device is None else device)
    if device.type == "cuda":
        from ..registry import get_backend

        get_backend("torchcuda")  # the registry's one check and message when there is no usable CUDA device
        if device.index is None:  # tensors report an index; compare like with like
            device = torch.device("cuda", torch.cuda.current_device())
    return device


def _as_states_tensor(S, name: str):
    """S as a (N, d) complex64 torch tensor with finite amplitudes, on the device it came on."""
    import torch

    if not isinstance(S, torch.Tensor):
        return torch.from_numpy(check_states(S, name))
    if S.ndim != 2:
        raise ValueError(f"{name} must be a 2-D state matrix (n_samples, 2**n_qubits), got shape {tuple(S.shape)}")
    if S.shape[0] == 0 or S.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(S.shape)})")
    if S.dtype == torch.bool:
        raise ValueError(f"{name} must be numeric, got dtype {S.dtype}")
    S = S.resolve_conj().to(torch.complex64).contiguous()
    if not bool(torch.isfinite(torch.view_as_real(S)).all()):
        raise ValueError(f"{name} contains NaN or infinite amplitudes")
    return S


def _torch_float_dtype(dtype):
    import torch

    if dtype in (torch.float32, torch.float64):
        return dtype
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        np_dtype = None
    if np_dtype == np.float32:
        return torch.float32
    if np_dtype == np.float64:
        return torch.float64
    raise ValueError(f"dtype must be float32 or float64, got {dtype}")


# ---------------------------------------------------------------- entry points
def gram_device(A, B=None, *, device=None, tile: int = DEFAULT_TILE, dtype=np.float64):
    """Fidelity Gram matrix K[i, j] = |<a_i|b_j>|^2 left on a torch device.

    Parameters
    ----------
    A : numpy.ndarray or torch.Tensor, shape (N, d), complex
        Unit state rows (ValueError otherwise), on the host or already on
        ``device`` (``states_torch``).
    B : same, shape (M, d), optional
        Omitted: the symmetric K = |A A^H|^2, computing only upper tiles.
    device : torch.device or str, optional
        Default: the current CUDA device (BackendUnavailableError without one).
        Any torch device works; the CPU device runs the same tile loop.
    tile : int
        Tile edge in rows.
    dtype : float32 or float64 (NumPy or torch dtype)

    Returns
    -------
    K : torch.Tensor, shape (N, N) or (N, M), ``dtype``, on ``device``
    """
    import torch

    device = _resolve_device(device)
    tile = check_positive_int(tile, "tile")
    out_dtype = _torch_float_dtype(dtype)
    A = _as_states_tensor(A, "A")
    B = None if B is None else _as_states_tensor(B, "B")
    if B is not None and B.shape[1] != A.shape[1]:
        raise ValueError(f"A and B have different state dimensions: {A.shape[1]} and {B.shape[1]}")
    for S, name in ((A, "A"), (B, "B")):
        if S is not None:  # norms computed where the states are, only N numbers come back
            check_unit_norms(torch.linalg.vector_norm(S, dim=1).double().cpu().numpy(), name)
    n, m = A.shape[0], (A if B is None else B).shape[0]
    k_bytes = n * m * out_dtype.itemsize
    what = f"a {n} x {m} {str(out_dtype).removeprefix('torch.')} Gram matrix"
    if k_bytes > DEVICE_MEMORY_FRACTION * _free_bytes(device):
        raise InsufficientMemoryError(
            f"{what} needs {k_bytes / 2**30:.2f} GiB but only {_free_bytes(device) / 2**30:.2f} GiB is free on "
            f"{device}; use gram(..., backend='torchcuda') to get it on the host"
        )
    placement = _place([A, B], device, tile, k_bytes, what)
    A, B = _to(A, device, placement), _to(B, device, placement)
    K = torch.empty((n, m), dtype=out_dtype, device=device)
    copier = _copier(device)
    with exact_float32_matmul():
        for (i0, i1, j0, j1), block in tile_blocks(A, B, tile_pairs(n, None if B is None else m, tile), copier):
            K[i0:i1, j0:j1] = block
            if B is None and i0 != j0:
                K[j0:j1, i0:i1] = block.T
    return K


def gram_on_devices(A, B, *, out, tile: int, devices) -> np.ndarray:
    """Fill host ``out`` with |A B^H|^2, tiles dealt round-robin over ``devices``.

    ``A``/``B`` are validated complex64 NumPy arrays (B None: symmetric),
    ``out`` a (N, M) float32/float64 NumPy array; ``devices`` torch devices
    (the CPU device repeated is how the multi-device path is tested).
    """
    import torch

    host_A = torch.from_numpy(A)
    host_B = None if B is None else torch.from_numpy(B)
    out_view = torch.from_numpy(out)
    what = f"the states of a {A.shape[0]} x {out.shape[1]} Gram matrix"
    placements = {device: _place([host_A, host_B], device, tile, 0, what) for device in devices}
    if "streamed" in placements.values():  # pin once, shared by every device that streams
        host_A, host_B = _to(host_A, None, "streamed"), _to(host_B, None, "streamed")

    threads = torch.get_num_threads()

    def work(device, pairs, advance):
        if device.type == "cpu":
            # a worker thread starts with OpenMP's default thread count, not the caller's: on a CPU device
            # the products would then split their sums differently from the same tiles on one device
            torch.set_num_threads(threads)
        context = torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()
        with context:
            a, b = _to(host_A, device, placements[device]), _to(host_B, device, placements[device])
            tiles_to_host(a, b, pairs, out_view, _copier(device), advance)

    with exact_float32_matmul():
        gram_tiles_on_devices(A, B, tile, devices, work, desc="torchcuda Gram tiles")
    return out


def gram(A, B=None, *, out, tile, n_threads):
    """Registry entry point: every visible CUDA device; ``n_threads`` is unused (the GPUs do the work)."""
    return gram_on_devices(A, B, out=out, tile=tile, devices=_cuda_devices())
