"""Exact matrix-product states (MPS) of the ZZ feature map, and their overlaps.

Why an MPS is exact here
------------------------
One repetition of the ZZ map is ``D(x) H^{(x)n}``, with ``D`` diagonal:
``D[b] = exp(i sum_k a_k b_k + i sum_(k,k+1) c_k (b_k XOR b_k+1))`` where
``a_k = 2 x_k`` and ``c_k = 2 (pi - x_k)(pi - x_k+1)``.  After ``r``
repetitions an amplitude is a sum over the bits of the ``r - 1`` inner layers
of a product of local terms on an ``r x n`` grid whose only couplings are
between neighbouring columns (the XOR phases) and neighbouring layers of one
column (the Hadamard signs ``(-1)^(b b')``).  Carrying the ``r`` bits of one
column across a bond makes the sum a product of matrices: an exact MPS of
bond dimension ``2**r`` (the Schmidt ranks of the states are exactly this).
Circular entanglement adds the pair (n-1, 0); carrying the first column's
bits along the whole chain as well closes it exactly with bond ``4**r``.
Nothing of size ``2**n`` is ever formed, so any number of qubits works.

Site tensors
------------
``A_k[s, alpha, beta]`` with physical bit ``s`` and bond indices ``alpha``
(left) and ``beta`` (right).  Bond index ``beta`` of the linear map encodes
the column's bits ``beta_1 .. beta_r`` (layer 1 most significant) and the
physical bit is the last layer's, ``s = beta_r``::

    A_k[s, alpha, beta] = [s == beta_r] 2^(-r/2) sign(beta) exp(i a_k |beta|) exp(i c_k-1 |alpha XOR beta|)

with ``|.|`` the number of set bits and ``sign(beta) = prod_l (-1)^(beta_l beta_l-1)``
(``beta_0 = 0``, the initial ``|0>``).  All sites share one padded bond
dimension ``chi``: the first site only uses left index 0 and the last site
only right index 0 (its sum over the last column is folded in), so zero
padding keeps the state exact and lets the overlap of two states start from
``E = e_0 e_0^T`` and end at ``E[0, 0]``.

Overlaps without underflow
--------------------------
``<a|b>`` is contracted site by site through the ``chi x chi`` environment
``E <- sum_s A_s^H E B_s``.  For unrelated samples the overlap shrinks about
geometrically with n (about 2^-n for random angles), which leaves float32
after ~120 sites and float64 after ~1000.  ``E`` is therefore divided by its
largest modulus after every site and the logarithm of that factor is carried
(``log_overlap``); only the final kernel value ``exp(2 log|<a|b>|)`` meets the
output dtype's range: the smallest kernel value that is not rounded to zero is
the smallest subnormal of the output dtype (about 4.9e-324 in float64,
1.4e-45 in float32; values below 2.2e-308 / 1.2e-38 lose relative precision).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Largest bond dimension ``FeatureMap.mps`` builds: (2, chi, chi) complex64 per
# site and sample is 512 KiB at 256, and a pair's contraction costs ~4 chi^3.
MAX_BOND = 256
COMPLEX64 = np.dtype(np.complex64)  # NumPy's own descriptor object


@dataclass(frozen=True)
class MPSStates:
    """The exact MPS of N samples on n qubits, all with one padded bond dimension.

    Attributes
    ----------
    tensors : ndarray, shape (N, n, 2, chi, chi), complex64, C-contiguous
        ``tensors[i, k, s]`` is the ``chi x chi`` matrix of sample ``i``,
        site (wire) ``k`` and physical bit ``s``; wire 0 is the first site
        (PennyLane's most significant bit).  Site 0 uses only left bond
        index 0 and site n-1 only right bond index 0.  Memory: ``N n 2 chi^2``
        complex64 values (8 bytes each), i.e. O(N n chi^2).
    """

    tensors: np.ndarray

    def __post_init__(self):
        t = self.tensors
        if not isinstance(t, np.ndarray) or t.ndim != 5 or t.shape[2] != 2 or t.shape[3] != t.shape[4]:
            shape = getattr(t, "shape", None)
            raise ValueError(f"MPSStates.tensors must be an array of shape (N, n, 2, chi, chi), got shape {shape}")
        if t.shape[0] == 0 or t.shape[1] == 0 or t.shape[3] == 0:
            raise ValueError(f"MPSStates.tensors is empty (shape {t.shape})")
        if t.dtype != np.complex64 or not t.flags.c_contiguous:
            raise ValueError(f"MPSStates.tensors must be C-contiguous complex64, got {t.dtype}"
                             f"{'' if t.flags.c_contiguous else ' (not C-contiguous)'}")
        if t.dtype is not COMPLEX64:
            # An unpickled array carries its own copy of the complex64 descriptor (equal, not the same
            # object); native code that compares descriptors by identity refused such tensors on Dask
            # workers.  A view with NumPy's own descriptor costs nothing and keeps every backend safe.
            object.__setattr__(self, "tensors", t.view(COMPLEX64))

    def __reduce__(self):
        """Pickle as ``MPSStates(tensors)``, so a copy sent to another process (a Dask worker) is validated again."""
        return MPSStates, (self.tensors,)

    @property
    def n_samples(self) -> int:
        return self.tensors.shape[0]

    @property
    def n_qubits(self) -> int:
        return self.tensors.shape[1]

    @property
    def bond_dim(self) -> int:
        """The padded bond dimension chi."""
        return self.tensors.shape[3]

    @property
    def shape(self) -> tuple:
        """``tensors.shape``: (N, n, 2, chi, chi); ``shape[0]`` is the number of samples."""
        return self.tensors.shape

    @property
    def nbytes(self) -> int:
        return self.tensors.nbytes

    def __len__(self) -> int:
        return self.n_samples

    def __getitem__(self, rows) -> MPSStates:
        """The states of some samples: a slice (a view for step 1) or a 1-D array of indices (a copy)."""
        if not isinstance(rows, slice):
            rows = np.asarray(rows)
            if rows.ndim != 1 or not (np.issubdtype(rows.dtype, np.integer) or rows.dtype == bool):
                raise TypeError(f"MPSStates are indexed by samples only (M[i0:i1] or M[indices]), got {rows!r}")
        return MPSStates(np.ascontiguousarray(self.tensors[rows]))

    def to_dense(self) -> np.ndarray:
        """(N, 2**n) complex128 state vectors in PennyLane's amplitude order (small n only, for checks)."""
        if self.n_qubits > 20:
            raise ValueError(f"to_dense builds 2**n amplitudes per sample; refusing n_qubits={self.n_qubits} > 20")
        t = self.tensors.astype(np.complex128)
        # psi[i, bits..., beta]: start with left index 0 of site 0
        psi = t[:, 0, :, 0, :]  # (N, 2, chi)
        for k in range(1, self.n_qubits):
            psi = np.einsum("nxa,nsab->nxsb", psi, t[:, k]).reshape(self.n_samples, -1, self.bond_dim)
        return np.ascontiguousarray(psi[:, :, 0])

    def norms(self) -> np.ndarray:
        """(N,) float64 norms ||psi_i||, by contracting each state with itself (with per-site rescaling)."""
        return np.exp(0.5 * self_log_overlap(self.tensors))


# most work memory self_log_overlap holds at once (it goes through the samples in batches that fit)
SELF_OVERLAP_WORK_BYTES = 256 << 20


def _self_overlap_batch(chi: int) -> tuple[int, int]:
    """(samples per batch of :func:`self_log_overlap`, work bytes per sample): a site (2, chi, chi) in
    complex128 for each side of :func:`paired_log_overlaps` (one conjugated in place), its half-contracted form,
    the old and the new environment and one product being added to it (the moduli come after the product is
    freed)."""
    per_sample = (32 + 32 + 32 + 16 + 16 + 16) * chi * chi
    return max(1, SELF_OVERLAP_WORK_BYTES // per_sample), per_sample


def self_overlap_work_bytes(n_samples: int, chi: int) -> int:
    """Most work memory :func:`self_log_overlap` holds for ``n_samples`` MPS of bond ``chi`` (bytes)."""
    rows, per_sample = _self_overlap_batch(chi)
    return min(n_samples, rows) * per_sample


def self_log_overlap(tensors: np.ndarray) -> np.ndarray:
    """(N,) float64 log <psi_i|psi_i> of (N, n, 2, chi, chi) site tensors, O(N n chi^3), batched over N.

    At most ``SELF_OVERLAP_WORK_BYTES`` of work memory: the samples are taken in batches that fit.
    """
    rows = _self_overlap_batch(tensors.shape[3])[0]
    if tensors.shape[0] > rows:
        return np.concatenate([_self_log_overlap(tensors[i:i + rows]) for i in range(0, tensors.shape[0], rows)])
    return _self_log_overlap(tensors)


def _self_log_overlap(tensors: np.ndarray) -> np.ndarray:
    overlap, log_scale = paired_log_overlaps(tensors, tensors)
    with np.errstate(divide="ignore"):
        return np.log(np.abs(overlap.real)) + log_scale


def paired_log_overlaps(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """<a_p|b_p> of P aligned pairs of MPS, as (mantissa, log scale), batched over the pairs (no loop over them).

    Parameters
    ----------
    a, b : ndarray, shape (P, n, 2, chi, chi), complex64 or complex128
        Site tensors of the two states of each pair (``MPSStates.tensors`` rows).

    Returns
    -------
    (overlap, log_scale) : (P,) complex128 and (P,) float64 with <a_p|b_p> =
    overlap * exp(log_scale).  The environment is divided by its largest
    modulus after every site, so it cannot underflow, and the log of that
    factor accumulated.  O(P n chi^3) time, O(P chi^2) work memory per site.
    """
    n_pairs, n_sites, _, chi, _ = a.shape
    env = np.zeros((n_pairs, chi, chi), dtype=np.complex128)
    env[:, 0, 0] = 1.0
    log_scale = np.zeros(n_pairs)
    for k in range(n_sites):
        ak, bk = a[:, k].astype(np.complex128), b[:, k].astype(np.complex128)  # copies: ak is conjugated in place
        # E'[b, b'] = sum_s sum_{x, y} conj(A_s[x, b]) E[x, y] B_s[y, b'] as stacked matmuls (2x faster than
        # einsum at bond 4, 5x at bond 16, where einsum took about as long as the openmp Gram itself)
        half = np.matmul(env[:, None], bk)
        at = np.conjugate(ak, out=ak).transpose(0, 1, 3, 2)
        env = np.matmul(at[:, 0], half[:, 0])
        env += np.matmul(at[:, 1], half[:, 1])
        scale = np.abs(env).max(axis=(1, 2))
        scale[scale == 0] = 1.0
        env /= scale[:, None, None]
        log_scale += np.log(scale)
    return env[:, 0, 0], log_scale


def check_mps(M, name: str, finite: bool = True) -> MPSStates:
    """``M`` as validated ``MPSStates`` (finite tensors), else a ValueError/TypeError naming ``name``.

    ``finite=False`` leaves the pass over the entries to the caller (a backend's native norms' check makes it:
    see :func:`refuse_non_finite`)."""
    if not isinstance(M, MPSStates):
        raise TypeError(f"{name} must be MPSStates (FeatureMap.mps) when the other operand is, got {type(M).__name__}")
    if finite and not np.isfinite(M.tensors.view(np.float32)).all():
        refuse_non_finite(name)
    return M


def refuse_non_finite(name: str):
    raise ValueError(f"{name} contains NaN or infinite MPS tensor entries")


def column_tables(reps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per column configuration beta in [0, 2**reps): bit counts, signs, last-layer bits, pair XOR counts.

    Returns ``popcount (c,)``, ``sign (c,)``, ``last (c,)`` as int/float64 and
    ``hamming (c, c)`` = number of layers where alpha and beta differ.
    """
    c = 2**reps
    beta = np.arange(c)
    bits = (beta[:, None] >> (reps - 1 - np.arange(reps))[None, :]) & 1  # (c, r), layer 1 first
    popcount = bits.sum(axis=1)
    previous = np.hstack([np.zeros((c, 1), dtype=bits.dtype), bits[:, :-1]])
    sign = np.where((bits * previous).sum(axis=1) % 2 == 1, -1.0, 1.0)
    hamming = (bits[:, None, :] != bits[None, :, :]).sum(axis=2)
    return popcount, sign, bits[:, -1], hamming


def zz_mps(single: np.ndarray, pair: np.ndarray, reps: int, circular: bool) -> MPSStates:
    """The exact MPS of the ZZ map for all samples at once (loops over sites only).

    Parameters
    ----------
    single : ndarray, shape (N, n), float64
        Angles ``a_k`` of ``P(a_k)`` on wire k (``2 x_k``).
    pair : ndarray, shape (N, n - 1) or (N, n) with ``circular``, float64
        Angles ``c_k`` of the pair (k, k+1) (the last column: the pair (n-1, 0)).
    reps : repetitions r (bond 2**r, or 4**r with ``circular``)
    circular : close the chain with the pair (n-1, 0) (needs n >= 3)

    Returns
    -------
    MPSStates with tensors (N, n, 2, chi, chi) complex64.
    """
    n_samples, n = single.shape
    c = 2**reps
    popcount, sign, last, hamming = column_tables(reps)
    mask = (last[None, :] == np.arange(2)[:, None]).astype(np.float64)  # (2, c): [s == beta_r]
    amp = 2.0 ** (-reps / 2) * sign  # (c,)
    chi = c * c if circular else c
    out = np.zeros((n_samples, n, 2, chi, chi), dtype=np.complex64)

    def column(k):
        """(N, c) f_k(beta) = 2^(-r/2) sign(beta) exp(i a_k |beta|)."""
        return amp[None, :] * np.exp(1j * single[:, k, None] * popcount[None, :])

    def coupling(angle):
        """(N, c, c) exp(i c |alpha XOR beta|) for pair angles (N,)."""
        return np.exp(1j * angle[:, None, None] * hamming[None, :, :])

    for k in range(n):
        f = column(k)  # (N, c)
        if k == 0:
            # no left neighbour: left index 0 only
            site = mask[None, :, None, :] * f[:, None, None, :]  # (N, 2, 1, c)
        else:
            site = mask[None, :, None, :] * (f[:, None, :] * coupling(pair[:, k - 1]))[:, None]  # (N, 2, c, c)
        if circular:
            if k == 0:
                # right index (gamma, beta) with gamma = beta: remember the first column
                block = np.zeros((n_samples, 2, 1, c, c), dtype=np.complex128)
                block[:, :, 0, np.arange(c), np.arange(c)] = site[:, :, 0, :]
                out[:, 0, :, 0, :] = block.reshape(n_samples, 2, c * c)
            elif k < n - 1:
                # identity on gamma: A[s, (g, a), (g, b)] = site[s, a, b]
                view = out[:, k].reshape(n_samples, 2, c, c, c, c)
                for g in range(c):
                    view[:, :, g, :, g, :] = site
            else:
                # close the ring: sum over the last column with the (n-1, 0) coupling to gamma
                close = coupling(pair[:, n - 1])  # (N, beta, gamma)
                # A[s, (g, a), 0] = sum_b site[s, a, b] close[b, g]
                last_site = np.einsum("nsab,nbg->nsga", site, close)
                out[:, k, :, :, 0] = last_site.reshape(n_samples, 2, c * c)
            continue
        if k == n - 1:
            out[:, k, :, : site.shape[2], 0] = site.sum(axis=3)  # fold the sum over the last column
        else:
            out[:, k, :, : site.shape[2], :] = site
    return MPSStates(out)


def mps_peak_bytes(n_samples: int, n_qubits: int, chi: int, columns: int, n_pairs: int | None = None) -> int:
    """Upper bound of ``FeatureMap.mps``'s memory in bytes, the larger of its two phases.

    Computing the gate angles: the validated features, their scaled copy, the
    pair terms and the stacked angles (float64).  Building the MPS
    (``zz_mps``): the features and angles still held, the complex64 tensors
    and one site's complex128 work arrays.  ``n_pairs`` (default ``n_qubits``,
    the circular count) is the number of entangled pairs.
    """
    n_pairs = n_qubits if n_pairs is None else n_pairs
    gates = n_qubits + n_pairs
    features = n_samples * 2 * n_qubits * 8  # the input as given and its validated float64 copy
    angles = n_samples * (n_qubits + 4 * n_pairs + 2 * gates) * 8
    tensors = n_samples * n_qubits * 2 * chi * chi * 8
    work = n_samples * (6 * columns * columns + 2 * chi * chi + 3 * columns) * 16
    return features + max(angles, n_samples * gates * 8 + tensors + work)
