"""The kernel a device would estimate: finite shots, counter-based random numbers.

A device estimates entry (i, j) of a fidelity Gram from S shots of a circuit
as the frequency of one outcome: m ~ Binomial(S, P) with P = a k + b (k the
exact kernel value; a, b from the estimator and the noise, ``noise.outcome_map``),
reported as g m / S + h (``noise.estimate_map``).

Reproducibility.  The random numbers of entry (i, j) come from a counter-based
generator keyed by (seed, min(i, j), max(i, j)) alone: a splitmix64 mix of the
key, then of key + t * golden for the t-th uniform the draw consumes.  So the
estimate of an entry does not depend on the tile it falls in, the backend, the
number of threads, the order tiles are computed in or the Dask layout, and
K[i, j] == K[j, i].  Given the same exact kernel value the estimate is the
same bit for bit; backends agree on exact values to about 1e-6 (float32
states), so on the few entries where that difference straddles a step of
the sampler the counts of two backends can differ.

The indices are global sample ids.  A square Gram uses 0..N-1 unless
``ids`` says otherwise; for a rectangular Gram (test x train) give the ids the
rows and columns have in the whole data set, e.g. ``ids=(N_train + arange(N_test),
arange(N_train))``, so that no test entry shares its random numbers with a
training entry and every block of a larger Gram is the same as computed alone.

The binomial draw is exact: inversion (sequential search of the CDF) when
S min(P, 1 - P) < 10, else Hormann's BTRS transformed rejection with squeeze
(W. Hormann, "The generation of binomial random variates", J. Stat. Comput.
Simul. 46, 1993), both with 53-bit uniforms.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._util import check_int
from .noise import DeviceNoise, check_estimator, estimate_map, outcome_map
from .tiling import mirror_upper_

MAX_SHOTS = 2**53  # counts are exact float64 integers below this
_kernels = None


def _compile():
    """The numba kernels, compiled on first use (numba is imported lazily, like the backends)."""
    global _kernels
    if _kernels is not None:
        return _kernels
    import math

    import numba

    GOLDEN = np.uint64(0x9E3779B97F4A7C15)
    M1 = np.uint64(0xBF58476D1CE4E5B9)
    M2 = np.uint64(0x94D049BB133111EB)
    S30, S27, S31, S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
    TO_UNIT = 2.0 ** -53

    @numba.njit(inline="always", cache=True)
    def mix(z):  # splitmix64's finaliser: a bijection of uint64 with full avalanche
        z = (z ^ (z >> S30)) * M1
        z = (z ^ (z >> S27)) * M2
        return z ^ (z >> S31)

    @numba.njit(inline="always", cache=True)
    def entry_key(seed_key, lo, hi):
        return mix(mix(np.uint64(seed_key) ^ (np.uint64(lo) * GOLDEN)) + np.uint64(hi) * M1)

    @numba.njit(inline="always", cache=True)
    def uniform(key, t):  # the t-th uniform of an entry, in [0, 1), 53 bits
        return np.float64(mix(key + np.uint64(t) * GOLDEN) >> S11) * TO_UNIT

    @numba.njit(cache=True)
    def inversion(n, q, key):  # Binomial(n, q), n q < 10: search the CDF from 0
        r = q / (1.0 - q)
        g = r * (n + 1.0)
        q0 = math.exp(n * math.log1p(-q))
        bound = min(float(n), n * q + 10.0 * math.sqrt(n * q * (1.0 - q) + 1.0))
        t = 0
        while True:
            u = uniform(key, t)
            t += 1
            x = 0
            px = q0
            while u > px:
                u -= px
                x += 1
                if x > bound:
                    break
                px *= g / x - r
            if x <= bound:
                return x

    # log(k!) - [(k + 1/2) log(k + 1) - (k + 1) + log(2 pi) / 2], exact for k < 10 (Hormann 1993, Table 1)
    FC = np.array([0.08106146679532726, 0.04134069595540929, 0.02767792568499834, 0.02079067210376509,
                   0.01664469118982119, 0.01387612882307075, 0.01189670994589177, 0.01041126526197209,
                   0.009255462182712733, 0.008330563433362871])

    @numba.njit(inline="always", cache=True)
    def stirling_tail(k):
        if k < 10:
            return FC[int(k)]
        k1 = k + 1.0
        k1sq = k1 * k1
        return (1.0 / 12 - (1.0 / 360 - 1.0 / 1260 / k1sq) / k1sq) / k1

    @numba.njit(cache=True)
    def btrs(n, q, key):  # Binomial(n, q), n q >= 10, q <= 1/2: Hormann's BTRS
        spq = math.sqrt(n * q * (1.0 - q))
        b = 1.15 + 2.53 * spq
        a = -0.0873 + 0.0248 * b + 0.01 * q
        c = n * q + 0.5
        vr = 0.92 - 4.2 / b
        alpha = 0.0
        t = 0
        while True:
            u = uniform(key, t) - 0.5
            v = uniform(key, t + 1)
            t += 2
            us = 0.5 - abs(u)
            k = math.floor((2.0 * a / us + b) * u + c)
            if k < 0 or k > n:
                continue
            if us >= 0.07 and v <= vr:
                return k
            if alpha == 0.0:  # the slow path's constants, only when the squeeze fails
                alpha = (2.83 + 5.1 / b) * spq
                r = q / (1.0 - q)
                m = math.floor((n + 1) * q)
                nm = n - m + 1.0
                h = (m + 0.5) * math.log((m + 1.0) / (r * nm)) + stirling_tail(m) + stirling_tail(n - m)
            # log of the acceptance ratio with Stirling's series in place of lgamma (the same test)
            v = math.log(v * alpha / (a / (us * us) + b))
            nk = n - k + 1.0
            if v <= h + (n + 1.0) * math.log(nm / nk) + (k + 0.5) * math.log(nk * r / (k + 1.0)) \
                    - stirling_tail(k) - stirling_tail(n - k):
                return k

    @numba.njit(inline="always", cache=True)
    def estimate(kij, n, seed_key, lo, hi, a, b, g, h):
        p = a * kij + b
        if p <= 0.0:
            p = 0.0
        elif p >= 1.0:
            p = 1.0
        if n == 0:  # no shots: the device's expected value
            return g * p + h
        if p == 0.0:
            m = 0
        elif p == 1.0:
            m = n
        else:
            key = entry_key(seed_key, lo, hi)
            q = p if p <= 0.5 else 1.0 - p
            m = inversion(n, q, key) if n * q < 10.0 else btrs(n, q, key)
            if p > 0.5:
                m = n - m
        return g * (m / n) + h

    @numba.njit(parallel=True, cache=True)
    def estimate_block(K, rows, cols, n, seed_key, a, b, g, h):
        for i in numba.prange(K.shape[0]):
            ri = rows[i]
            for j in range(K.shape[1]):
                cj = cols[j]
                lo, hi = (ri, cj) if ri <= cj else (cj, ri)
                K[i, j] = estimate(K[i, j], n, seed_key, lo, hi, a, b, g, h)

    @numba.njit(inline="always", cache=True)
    def estimate_row(K, ids, i, n, seed_key, a, b, g, h):  # row i of the upper triangle
        ri = ids[i]
        for j in range(i, K.shape[0]):
            cj = ids[j]
            lo, hi = (ri, cj) if ri <= cj else (cj, ri)
            K[i, j] = estimate(K[i, j], n, seed_key, lo, hi, a, b, g, h)

    @numba.njit(parallel=True, cache=True)
    def estimate_upper(K, ids, n, seed_key, a, b, g, h):
        # rows t and N-1-t in one task, so every task has about N + 1 entries
        N = K.shape[0]
        for t in numba.prange((N + 1) // 2):
            estimate_row(K, ids, t, n, seed_key, a, b, g, h)
            if N - 1 - t != t:
                estimate_row(K, ids, N - 1 - t, n, seed_key, a, b, g, h)

    _kernels = estimate_block, estimate_upper, mix
    return _kernels


@dataclass(frozen=True)
class DeviceEstimate:
    """How a device estimates each Gram entry; applied to blocks of the exact Gram by global index.

    Parameters
    ----------
    shots : int >= 1, or None (the noisy expectation, no sampling noise)
    seed : int >= 0
    estimator : "fidelity" (compute-uncompute, frequency of 0^n) or "swap" (swap test, 2 P(0) - 1)
    noise : DeviceNoise or None
    mitigate : invert the noise model on the estimate (``noise.estimate_map``)
    n_qubits : qubits of the states (for the depolarising floor 2^-n and readout)
    """

    shots: int | None
    seed: int
    estimator: str
    noise: DeviceNoise | None
    mitigate: bool
    n_qubits: int

    def __post_init__(self):
        if self.shots is not None:  # plain ints: they go into JSON metadata (out=) and numba kernels
            object.__setattr__(self, "shots", check_int(self.shots, "shots", minimum=1))
            if self.shots >= MAX_SHOTS:
                raise ValueError(f"shots must be below 2**53, got {self.shots}")
        object.__setattr__(self, "seed", check_int(self.seed, "seed", minimum=0))
        check_estimator(self.estimator)
        if self.noise is not None and not isinstance(self.noise, DeviceNoise):
            raise TypeError(f"noise must be a qmlnb.kernels.DeviceNoise or None, got {type(self.noise).__name__}")
        if not isinstance(self.mitigate, bool):
            raise TypeError(f"mitigate must be True or False, got {self.mitigate!r}")
        if self.noise is not None and self.n_qubits < 1:
            raise ValueError("noise= needs states on qubits: a state dimension that is a power of 2, or an MPS")
        estimate_map(self.estimator, self.n_qubits, self.noise, self.mitigate)  # mitigate without noise: error

    @property
    def maps(self) -> tuple[float, float, float, float]:
        a, b = outcome_map(self.estimator, self.n_qubits, self.noise)
        g, h = estimate_map(self.estimator, self.n_qubits, self.noise, self.mitigate)
        return a, b, g, h

    def seed_key(self) -> np.uint64:
        _, _, mix = _compile()
        # np.uint64: a Python int below 2**63 would reach the kernels as int64 and mix signed with unsigned
        return np.uint64(mix(np.uint64(self.seed) ^ np.uint64(0x6A09E667F3BCC909)))

    def describe(self) -> dict:
        """JSON-able: recorded with out-of-core outputs so a resume never mixes two estimates."""
        return {"shots": self.shots, "seed": self.seed, "estimator": self.estimator, "mitigate": self.mitigate,
                "noise": None if self.noise is None else self.noise.describe()}

    def apply_(self, K: np.ndarray, rows: np.ndarray, cols: np.ndarray, *, symmetric: bool = False,
               n_threads: int | None = None) -> np.ndarray:
        """Replace the exact values of block ``K`` by their estimates, in place.

        K : ndarray, shape (R, C), float32 or float64, C-contiguous: exact kernel values
        rows, cols : int64 arrays, shapes (R,) and (C,): the global ids of K's rows and columns
        symmetric : K is a whole symmetric Gram with ``rows`` == ``cols``: only its upper
            triangle is estimated and mirrored (half the work; the same values)
        """
        import numba

        estimate_block, estimate_upper, _ = _compile()
        n = 0 if self.shots is None else int(self.shots)
        a, b, g, h = self.maps
        key = self.seed_key()
        previous = numba.get_num_threads()
        if n_threads is not None:
            numba.set_num_threads(min(n_threads, numba.config.NUMBA_NUM_THREADS))
        try:
            if symmetric:
                estimate_upper(K, rows, n, key, a, b, g, h)
                mirror_upper_(K)  # by cache-sized blocks: a mirrored write per entry would stride through K
            else:
                estimate_block(K, rows, cols, n, key, a, b, g, h)
        finally:
            numba.set_num_threads(previous)
        return K


def check_ids(ids, n_rows: int, n_cols: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Global (row ids, column ids), int64: default 0..N-1 and 0..M-1; validated shapes, >= 0."""
    if ids is None:
        return np.arange(n_rows, dtype=np.int64), np.arange(n_cols, dtype=np.int64)
    if not isinstance(ids, (tuple, list)) or len(ids) != 2:
        raise TypeError("ids must be a pair (row_ids, col_ids) of integer arrays")
    out = []
    for name, x, n in (("row", ids[0], n_rows), ("column", ids[1], n_cols)):
        x = np.asarray(x)
        if x.ndim != 1 or x.shape[0] != n or not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"{name} ids must be a 1-D integer array of length {n}, got {x.dtype} {x.shape}")
        if x.size and x.min() < 0:
            raise ValueError(f"{name} ids must be >= 0, got {x.min()}")
        out.append(np.ascontiguousarray(x, dtype=np.int64))
    if symmetric and not np.array_equal(out[0], out[1]):
        raise ValueError("a symmetric Gram (B omitted) needs the same row and column ids")
    return out[0], out[1]


def device_estimate(shots, seed, estimator, noise, mitigate, n_qubits) -> DeviceEstimate | None:
    """The ``DeviceEstimate`` that ``gram``'s arguments ask for, or None for the exact Gram."""
    if shots is None and noise is None:
        if mitigate:
            raise ValueError("mitigate=True needs the noise model it inverts (noise=DeviceNoise(...))")
        if estimator != "fidelity":
            check_estimator(estimator)
            raise ValueError(f"estimator={estimator!r} needs shots= or noise= (the exact Gram has no estimator)")
        return None
    if seed is None:
        if shots is not None:
            raise ValueError("shots= needs seed= (an int >= 0): the estimate is reproducible by design")
        seed = 0
    return DeviceEstimate(shots=shots, seed=seed, estimator=estimator, noise=noise, mitigate=mitigate,
                          n_qubits=n_qubits)
