"""Quantum feature maps simulated as batched state vectors.

Both maps supported here (Havlicek's ZZ map and PennyLane's IQP embedding)
are, per repetition, a layer of Hadamards followed by gates that are all
*diagonal* in the computational basis (P, RZ, CNOT-P-CNOT, MultiRZ).  So one
repetition is

    psi <- diag(exp(i * phase(x))) @ H^{(x)n} @ psi

and the phase of every amplitude is a linear function of per-gate angles:

    phase(x)[b] = sum_g angle_g(x) * code_g[b]

with a constant (2**n, n_gates) code matrix.  All N samples are therefore
simulated at once by one (N, n_gates) x (n_gates, 2**n) matrix product, one
complex exponential and a fast Walsh-Hadamard transform, with no Python loop
over samples or gates.  Amplitudes are in PennyLane's order (wire 0 is the
most significant bit of the basis index).

Where the C++ extension ``qmlnb._states_openmp`` is built, ``states`` uses it
instead: the same phase written as a quadratic form in the bits
(``_phase_form``, reduced mod 2 pi once), built per sample by doubling,
float32 cos/sin after one float64 range reduction, and in-cache
Walsh-Hadamard butterflies, one sample per thread (``native/states_openmp.cpp``).
The NumPy path above stays the fallback and the tests' second reference.
"""
from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass

import numpy as np

from .mps import MAX_BOND, MPSStates, mps_peak_bytes, zz_mps
from .validation import check_embeddings, check_fits_in_memory
from .._util import available_cores, check_option, check_positive_int, check_real


def _native_states():
    """The fused C++ state simulation (``qmlnb._states_openmp``), or None where it is not built (NumPy then)."""
    try:
        from qmlnb import _states_openmp
    except ImportError:
        return None
    return _states_openmp

KINDS = ("zz", "iqp")
ENTANGLEMENTS = ("linear", "circular", "full")
MAX_QUBITS = 30  # statevector limit: 2**30 complex64 amplitudes = 8 GiB for a single state
# method="auto" keeps state vectors up to this many qubits (if they fit in memory), then uses the MPS
AUTO_STATEVECTOR_MAX_QUBITS = 20
METHODS = ("auto", "statevector", "mps")
# Wires a FeatureMap may have: ``mps`` works at any n (memory O(N n chi^2));
# ``states`` stops at MAX_QUBITS.
MAX_MPS_QUBITS = 100_000
DEFAULT_BATCH_BYTES = 64 << 20  # float64 phases of one batch, by default
# Work space of one batch, in bytes per amplitude (row x 2**n), at its peak
# in ``_simulate``: float32 cos, sin, planar re/im (16) and a Hadamard
# product's result (8); the float64 phases (8 + 4) come before them.
BATCH_BYTES_PER_AMPLITUDE = 24


def entangled_pairs(n_qubits: int, entanglement: str) -> list[tuple[int, int]]:
    """Wire pairs (i, j) that get a two-qubit gate, in circuit order."""
    check_option(entanglement, "entanglement", ENTANGLEMENTS)
    if entanglement == "full":
        return list(itertools.combinations(range(n_qubits), 2))
    pairs = [(i, i + 1) for i in range(n_qubits - 1)]
    # with 2 qubits the closing pair (1, 0) would repeat (0, 1)
    if entanglement == "circular" and n_qubits > 2:
        pairs.append((n_qubits - 1, 0))
    return pairs


def hadamard_matrix(n_qubits: int) -> np.ndarray:
    """(2**n, 2**n) float32 matrix of H on each of n wires."""
    h = np.array([[1.0, 1.0], [1.0, -1.0]]) / np.sqrt(2.0)
    out = np.ones((1, 1))
    for _ in range(n_qubits):
        out = np.kron(out, h)
    return out.astype(np.float32)


def walsh_hadamard_(psi: np.ndarray, n_qubits: int) -> None:
    """Apply H on every wire, in place, to real rows psi of shape (rows, 2**n).

    H^{(x)n} = H^{(x)h} (x) H^{(x)(n-h)} is applied as two float32 matrix
    products on a (rows, 2**h, 2**(n-h)) view, so BLAS does the work:
    O(rows * 2**n * (2**h + 2**(n-h))) flops instead of n butterfly passes.
    Complex states are transformed as separate real and imaginary rows.
    """
    h = n_qubits // 2
    view = psi.reshape(psi.shape[0], 2**h, 2 ** (n_qubits - h))
    if h:
        view[...] = hadamard_matrix(h) @ view
    flat = psi.reshape(-1, 2 ** (n_qubits - h))
    flat[...] = flat @ hadamard_matrix(n_qubits - h)


@dataclass(frozen=True)
class FeatureMap:
    """A data-encoding circuit U(x) and its batched state-vector simulation.

    Parameters
    ----------
    n_qubits : int
        Number of wires; one feature per wire.  Up to ``MAX_MPS_QUBITS``
        (100,000); ``states`` stops at ``MAX_QUBITS`` (30) and ``mps`` covers the rest.
    reps : int
        Repetitions of the (Hadamard layer, diagonal layer) block.
    entanglement : {"linear", "circular", "full"}
        Pairs of wires that get two-qubit gates (``kind="zz"`` only; the IQP
        embedding always uses all pairs, as PennyLane's default pattern).
    bandwidth : float
        Features are multiplied by it before encoding (Shaydulin and Wild 2022).
    kind : {"zz", "iqp"}
        ``"zz"``: Havlicek et al. 2019.  ``"iqp"``: ``qml.IQPEmbedding``.
    """

    n_qubits: int = 8
    reps: int = 2
    entanglement: str = "linear"
    bandwidth: float = 1.0
    kind: str = "zz"

    def __post_init__(self):
        # bools are ints to Python, but n_qubits=True or bandwidth=True is a mistake, not 1; a value of the
        # wrong type is a TypeError (the vocabulary's checks below, all ValueErrors, judge the value)
        if isinstance(self.n_qubits, bool) or not isinstance(self.n_qubits, numbers.Integral):
            raise TypeError(f"n_qubits must be an integer, got {type(self.n_qubits).__name__} {self.n_qubits!r}")
        if not 1 <= self.n_qubits <= MAX_MPS_QUBITS:
            raise ValueError(f"n_qubits must be an integer in [1, {MAX_MPS_QUBITS}] (state vectors: at most "
                             f"{MAX_QUBITS}, beyond that FeatureMap.mps), got {self.n_qubits!r}")
        check_positive_int(self.reps, "reps")
        if isinstance(self.bandwidth, bool) or not isinstance(self.bandwidth, numbers.Real):
            raise TypeError(f"bandwidth must be a real number, got {type(self.bandwidth).__name__} {self.bandwidth!r}")
        check_real(self.bandwidth, "bandwidth", 0, math.inf, closed="neither")
        check_option(self.kind, "kind", KINDS)
        entangled_pairs(self.n_qubits, self.entanglement)  # validates the name

    @property
    def dim(self) -> int:
        """State-vector length 2**n_qubits."""
        return 2**self.n_qubits

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """Entangled wire pairs in circuit order."""
        if self.kind == "iqp":
            return list(itertools.combinations(range(self.n_qubits), 2))
        return entangled_pairs(self.n_qubits, self.entanglement)

    @property
    def n_gates(self) -> int:
        """Diagonal gates per repetition: one per wire and one per entangled pair."""
        return self.n_qubits + len(self.pairs)

    @property
    def layers(self) -> int:
        """Layer count L of the circuit U(x), the unit of a per-layer noise rate: one per repetition.

        ``DeviceNoise.for_map`` takes 2 L for the compute-uncompute circuit
        U(y)^dagger U(x).  Any other feature map (a circuit of its own) gives
        its layer count in the same unit, e.g. the repetitions of its block.
        """
        return self.reps

    # ------------------------------------------------------------------ angles
    def _angles(self, X: np.ndarray) -> np.ndarray:
        """(N, n + n_pairs) float64 gate angles; column order matches _codes."""
        x = X * self.bandwidth
        i, j = np.array(self.pairs, dtype=np.intp).reshape(-1, 2).T
        if self.kind == "zz":
            # P(2 x_k) on k; CNOT(i,j) P(2 (pi-x_i)(pi-x_j)) CNOT(i,j)
            return 2.0 * np.hstack([x, (np.pi - x[:, i]) * (np.pi - x[:, j])])
        # IQP: RZ(x_k) on k; MultiRZ(x_i x_j) on (i, j)
        return np.hstack([x, x[:, i] * x[:, j]])

    def _codes(self) -> np.ndarray:
        """(n + n_pairs, 2**n) float64, C-contiguous: each gate's phase per unit angle.

        Built row by row into the one output array, so building it needs
        only a few int32 rows of work space besides the result.
        """
        n = self.n_qubits
        index = np.arange(self.dim, dtype=np.int32)  # 2**30 still fits

        def bit(k):  # bit of wire k in every basis index, wire 0 most significant
            return (index >> (n - 1 - k)) & 1

        codes = np.empty((self.n_gates, self.dim))
        for k in range(n):
            codes[k] = bit(k)
        for g, (i, j) in enumerate(self.pairs):
            codes[n + g] = bit(i) ^ bit(j)  # b_i XOR b_j
        if self.kind == "iqp":
            # RZ(t) = diag(e^{-it/2}, e^{it/2}): phase (b - 1/2) t; MultiRZ(t) = exp(-i t/2 Z_i Z_j):
            # phase (parity - 1/2) t
            codes -= 0.5
        # zz: P(t) = diag(1, e^{it}) has phase b t; CNOT-P-CNOT puts e^{it} where b_i != b_j
        return codes

    # ------------------------------------------------------------------ states
    def states(self, X, *, batch_size: int | None = None) -> np.ndarray:
        """Simulate U(x)|0> for every row of X.

        Parameters
        ----------
        X : array_like, shape (N, n_qubits), real and finite
        batch_size : rows simulated together (default: about 64 MiB of
            float64 phases per batch).

        Returns
        -------
        S : ndarray, shape (N, 2**n_qubits), complex64, C-contiguous
            Unit-norm rows in PennyLane's amplitude order.

        Raises ``ValueError`` for bad X or gate angles that overflow float64,
        and ``InsufficientMemoryError`` if the peak memory (``peak_bytes``)
        does not fit, both before any work.
        """
        if self.n_qubits > MAX_QUBITS:
            raise ValueError(f"n_qubits={self.n_qubits} is beyond the state-vector limit of {MAX_QUBITS} qubits "
                             f"(2**{self.n_qubits} amplitudes per sample); use FeatureMap.mps(X), the exact "
                             "matrix-product states (kind='zz', linear or circular entanglement), with gram(M)")
        X = check_embeddings(X, self.n_qubits)
        self._check_angles(X)
        n = X.shape[0]
        batch_size = self._batch_size(batch_size)
        check_fits_in_memory(self.peak_bytes(n, batch_size),
                             f"states of {n} samples on {self.n_qubits} qubits (complex64) with their work arrays")
        out = np.empty((n, self.dim), dtype=np.complex64)
        native = _native_states()
        codes = None if native is not None else self._codes()
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            if native is not None:
                self._simulate_native(native, X[start:stop], out[start:stop])
            else:
                self._simulate(X[start:stop], codes, out[start:stop])
        return out

    def _batch_size(self, batch_size: int | None) -> int:
        if batch_size is None:
            return max(1, DEFAULT_BATCH_BYTES // (8 * self.dim))
        return check_positive_int(batch_size, "batch_size")

    def peak_bytes(self, n_samples: int, batch_size: int | None = None) -> int:
        """Most memory ``states`` holds for ``n_samples`` rows, in bytes (an upper bound).

        With the fused C++ kernel (``qmlnb._states_openmp``): the states, the
        batch's phase coefficients and each thread's work rows.  Without it
        (NumPy): the states (N x 2**n complex64), the phase codes (n_gates x 2**n
        float64: at 24 qubits they outweigh a few states by far), one batch's
        work arrays and, with ``reps`` > 1, the Hadamard factor matrices
        (built in float64, 2**ceil(n/2) squared).
        """
        d, gates = self.dim, self.n_gates
        rows = min(n_samples, self._batch_size(batch_size))
        states = n_samples * d * 8
        if _native_states() is not None:
            # the fused kernel: angles, the quadratic form's w, Q (and their reductions mod 2 pi), then per
            # thread (at most one per row) four float32 rows of 2**n and two float64 rows of 2**(n - n//2)
            n = self.n_qubits
            form = rows * (gates * 8 * 3 + (n + n * n + 1) * 8 * 3)
            threads = min(available_cores(), rows)
            return states + form + threads * (d * 16 + 2 ** (n - n // 2) * 16)
        codes = gates * d * 8 + 4 * d * 4  # the result and its int32 index rows
        batch = rows * d * BATCH_BYTES_PER_AMPLITUDE + rows * gates * 8 * 3  # amplitudes; angles and their terms
        hadamard = 16 * 4 ** (self.n_qubits - self.n_qubits // 2) if self.reps > 1 else 0
        return states + codes + batch + hadamard

    def _check_angles(self, X: np.ndarray) -> None:
        """Refuse features whose gate angles or phases would not be finite in float64.

        |angle| <= 2 (pi + |x|)^2 for both maps, and a phase sums at most
        n_gates angles with codes of modulus <= 1, so one bound from max |x|
        covers every gate without computing the (N, n_gates) angles.
        """
        largest = float(np.abs(X).max()) * float(self.bandwidth)
        bound = self.n_gates * 2.0 * (math.pi + largest) * (math.pi + largest)  # Python floats overflow to inf
        if not math.isfinite(bound):
            raise ValueError(f"features times bandwidth reach {largest:.3g}: the gate angles of the feature map "
                             "overflow float64 and the states would be NaN; scale the features down "
                             "(e.g. to [-pi, pi]) or lower the bandwidth")

    def _phase_form(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The phase of one repetition as a quadratic form in the bits, reduced mod 2 pi.

        ``phase(b) = const + sum_k w_k b_k + sum_{i<j} Q_ij b_i b_j``: P(2x) and
        RZ give ``w_k``; a pair's XOR is ``b_i + b_j - 2 b_i b_j``; IQP's codes
        carry ``-1/2`` per gate (``const``).  A phase is an integer combination of
        the coefficients, so reducing each of them mod 2 pi changes it by
        multiples of 2 pi only (and keeps float64 sums of them small).

        Returns ``w`` (B, n), ``Q`` (B, n, n) strictly upper triangular and
        ``const`` (B,), all float64 in [0, 2 pi), C-contiguous.
        """
        n = self.n_qubits
        angles = self._angles(X)
        single, pair = angles[:, :n], angles[:, n:]
        w = single.copy()
        Q = np.zeros((X.shape[0], n, n))
        for g, (i, j) in enumerate(self.pairs):
            w[:, i] += pair[:, g]
            w[:, j] += pair[:, g]
            a, b = min(i, j), max(i, j)
            Q[:, a, b] -= 2.0 * pair[:, g]
        if self.kind == "iqp":
            const = -0.5 * angles.sum(axis=1)
        else:
            const = np.zeros(X.shape[0])
        two_pi = 2.0 * np.pi
        return np.mod(w, two_pi), np.mod(Q, two_pi), np.mod(const, two_pi)

    def _simulate_native(self, native, X: np.ndarray, out: np.ndarray) -> None:
        """Write the (B, 2**n) complex64 states of one batch into ``out`` with the fused C++ kernel.

        Threads: the available cores, at most one per row of the batch, each
        with its own work rows (16 bytes per amplitude), as ``peak_bytes`` counts.
        """
        w, Q, const = self._phase_form(X)
        native.states(w, Q, const, self.reps, out, max(1, min(available_cores(), X.shape[0])))

    def _simulate(self, X: np.ndarray, codes: np.ndarray, out: np.ndarray) -> None:
        """Write the (B, 2**n) complex64 states of one batch of rows into ``out``."""
        # reduce the phases mod 2 pi in float64 so that float32 cos/sin stay
        # accurate to ~1e-7 however large the angles grow
        phase = self._angles(X) @ codes
        np.mod(phase, 2.0 * np.pi, out=phase)
        phase = phase.astype(np.float32)
        cos, sin = np.cos(phase), np.sin(phase)
        del phase
        # first block acts on |0..0>: H^{(x)n}|0> is the uniform superposition
        psi = np.empty((2,) + cos.shape, dtype=np.float32)  # planar re, im
        norm = np.float32(2.0 ** (-self.n_qubits / 2))
        re, im = psi
        np.multiply(cos, norm, out=re)
        np.multiply(sin, norm, out=im)
        for _ in range(self.reps - 1):
            walsh_hadamard_(psi.reshape(-1, self.dim), self.n_qubits)
            # (re, im) <- (re cos - im sin, re sin + im cos), in place
            re_sin = re * sin
            re *= cos
            re -= im * sin
            im *= cos
            im += re_sin
            del re_sin
        out.real, out.imag = re, im

    # ------------------------------------------------------------------ MPS
    @property
    def mps_bond_dim(self) -> int:
        """Padded bond dimension of ``mps``: 2**reps (linear), 4**reps (circular, n >= 3)."""
        self._check_mps_supported()
        return 4**self.reps if self._circular_ring else 2**self.reps

    @property
    def _circular_ring(self) -> bool:
        # with 2 qubits the closing pair would repeat (0, 1): the chain is linear
        return self.entanglement == "circular" and self.n_qubits > 2

    def _check_mps_supported(self) -> None:
        if self.kind != "zz" or self.entanglement == "full":
            what = "kind='iqp' (all pairs of wires)" if self.kind != "zz" else "entanglement='full'"
            raise ValueError(f"FeatureMap.mps has no bounded exact MPS for {what}: its bond dimension grows "
                             f"exponentially with n_qubits; use FeatureMap.states (state vectors, at most "
                             f"{MAX_QUBITS} qubits) or kind='zz' with entanglement 'linear' or 'circular'")
        chi = 4**self.reps if self._circular_ring else 2**self.reps
        if chi > MAX_BOND:
            raise ValueError(f"reps={self.reps} with {self.entanglement} entanglement needs bond dimension {chi} "
                             f"> {MAX_BOND} (2**reps linear, 4**reps circular); use fewer reps")

    def has_mps(self) -> bool:
        """True if ``mps`` can build this map's exact MPS (ZZ, linear or circular, bond <= MAX_BOND)."""
        try:
            self._check_mps_supported()
        except ValueError:
            return False
        return True

    def resolve_method(self, n_samples: int, method: str = "auto") -> str:
        """Which simulation ``method`` means for ``n_samples`` samples: ``"statevector"`` or ``"mps"``.

        ``"auto"``: state vectors while ``n_qubits <= AUTO_STATEVECTOR_MAX_QUBITS``
        (20) and ``states`` of ``n_samples`` would take at most half of the
        free memory; beyond that the MPS if this map has one, else state
        vectors (whose own checks then say why they cannot run).  A forced
        ``"mps"`` on a map without one raises ``ValueError`` here.
        """
        check_option(method, "method", METHODS)
        n_samples = check_positive_int(n_samples, "n_samples")
        if method == "mps":
            self._check_mps_supported()
            return "mps"
        if method == "statevector":
            return "statevector"
        if self.n_qubits <= AUTO_STATEVECTOR_MAX_QUBITS:
            from .validation import available_memory_bytes

            if self.peak_bytes(n_samples) <= 0.5 * available_memory_bytes():
                return "statevector"
        return "mps" if self.has_mps() else "statevector"

    def simulate(self, X, method: str = "auto"):
        """``states(X)`` or ``mps(X)`` as ``resolve_method(len(X), method)`` decides; both feed ``gram``."""
        chosen = self.resolve_method(len(X), method)
        return self.mps(X) if chosen == "mps" else self.states(X)

    def mps(self, X) -> MPSStates:
        """The exact matrix-product state of U(x)|0> for every row of X (no 2**n vector).

        Only the ZZ map with ``linear`` (bond dimension ``2**reps``) or
        ``circular`` (``4**reps``) entanglement has a bounded exact MPS;
        ``kind="iqp"`` and ``entanglement="full"`` raise ``ValueError``.
        All samples are built at once (a loop over sites only); see
        ``qmlnb.kernels.mps`` for the construction.

        Parameters
        ----------
        X : array_like, shape (N, n_qubits), real and finite

        Returns
        -------
        MPSStates
            ``tensors`` of shape (N, n_qubits, 2, chi, chi), complex64: 8 N n 2 chi^2 bytes.
            ``gram(M)`` gives the same kernel as ``gram(states(X))``.

        Raises ``ValueError`` for bad X, an unsupported map or overflowing
        angles, ``InsufficientMemoryError`` if the tensors do not fit, before any work.
        """
        self._check_mps_supported()
        X = check_embeddings(X, self.n_qubits)
        self._check_angles(X)
        chi, columns = self.mps_bond_dim, 2**self.reps
        check_fits_in_memory(mps_peak_bytes(X.shape[0], self.n_qubits, chi, columns, len(self.pairs)),
                             f"the MPS of {X.shape[0]} samples on {self.n_qubits} qubits (bond {chi}, complex64)")
        angles = self._angles(X)
        single, pair = angles[:, :self.n_qubits], angles[:, self.n_qubits:]
        return zz_mps(single, pair, self.reps, self._circular_ring)

    # ------------------------------------------------------------------ circuit
    def circuit(self, x, wires=None) -> None:
        """Apply the same map as PennyLane operations (inside a QNode).

        Used to draw the map in notebooks and as the reference in tests.
        ``x`` is one sample (n_qubits,) or, for PennyLane's parameter
        broadcasting, a batch (B, n_qubits).
        """
        import pennylane as qml

        wires = list(range(self.n_qubits)) if wires is None else list(wires)
        x = np.asarray(x, dtype=np.float64) * self.bandwidth
        if self.kind == "iqp":
            qml.IQPEmbedding(x, wires=wires, n_repeats=self.reps)
            return
        for _ in range(self.reps):
            for k, w in enumerate(wires):
                qml.Hadamard(wires=w)
                qml.PhaseShift(2.0 * x[..., k], wires=w)
            for i, j in self.pairs:
                qml.CNOT(wires=[wires[i], wires[j]])
                qml.PhaseShift(2.0 * (np.pi - x[..., i]) * (np.pi - x[..., j]), wires=wires[j])
                qml.CNOT(wires=[wires[i], wires[j]])

    def qnode(self, device: str = "default.qubit"):
        """A PennyLane QNode x -> state vector of this map (for reference and drawing)."""
        import pennylane as qml

        dev = qml.device(device, wires=self.n_qubits)

        @qml.qnode(dev)
        def state(x):
            self.circuit(x)
            return qml.state()

        return state
