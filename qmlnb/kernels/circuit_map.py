"""``CircuitFeatureMap``: any :class:`~qmlnb.kernels.circuit.Circuit`, simulated for all samples at once.

The circuit is compiled once per map (``circuit_program.compile_program``) into
a short program of steps.  Where the C++ extension ``qmlnb._circuit_openmp``
is built, the program runs there, one sample at a time in cache, samples in
parallel (``circuit_native``: diagonal runs as sums of Walsh characters,
evaluated as a quadratic form in the bits or by a float64 Walsh-Hadamard
transform).  Otherwise, and as the reference the tests compare it with, it
runs here as batched NumPy passes:

- **diagonal runs**: consecutive diagonal gates (Z, S, T, RZ, P, CZ, CRZ, CP,
  RZZ) and basis permutations (X, CX, SWAP) between them become *one* phase
  vector per sample, ``phase = angles(X) @ codes + constant``: the (N, G) gate
  angles times a (G, 2**n) table of each gate's phase per unit angle, as in
  ``FeatureMap``.  A permutation P is carried lazily (the stored state is
  ``P^-1 psi``), a later diagonal gate is conjugated through it (its code is
  read at the permuted basis index), so ``CX P(t) CX`` is one phase column
  and the permutation vanishes; a permutation still pending when a
  non-diagonal gate comes is applied as one gather of the state.
- **one-qubit steps**: consecutive one-qubit gates on one wire are multiplied
  into one 2x2 matrix per sample (or one constant matrix) and applied as a
  strided batched product on the (B, 2**w, 2, 2**(n-w-1)) view of the states;
  a constant step that multiplies to a phase times the identity (H H, the basis
  changes between two Pauli terms) is dropped at compile time and its phase kept.
- RXX, RYY and RZX are basis changes around RZZ; U3, RX, RY, SX, H, Y are 2x2 steps.
- The gates before the first one that reads x act on the same state for every
  sample: they are simulated once, on one row.

Memory is checked (``peak_bytes``) before any work; NumPy simulates rows in
batches of about ``DEFAULT_BATCH_BYTES`` of states so that each pass over a
batch stays in cache.  Amplitudes are in PennyLane's order (wire 0 most significant).
"""
from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field, replace

import numpy as np

from .circuit import Circuit
from .circuit_program import _Diagonal, _angles, _bits, _permute, compile_program, inverse_gather
from .feature_map import FeatureMap
from .gate_matrices import FIXED_PHASE, one_qubit_matrices
from .mps import MPSStates
from .validation import check_embeddings, check_fits_in_memory
from .._util import available_cores, check_positive_int, check_real

MAX_QUBITS = 30  # state vectors: 2**30 complex64 amplitudes (8 GiB) per sample
DEFAULT_BATCH_BYTES = 4 << 20  # complex64 states of one batch: a few MiB keep every pass in cache
NATIVE_BATCH_BYTES = 64 << 20  # the C++ kernel: angles and per-sample matrices of one batch
DEFAULT_MAX_BOND = 256  # the exact MPS refuses circuits whose bond bound exceeds this (before work)

def _unit_phase(name: str, wires, index: np.ndarray, n: int) -> np.ndarray:
    """(2**n,) float64 phase of a diagonal gate per unit angle at the (permuted) basis ``index``."""
    b = [_bits(index, n, w).astype(np.float64) for w in wires]
    if name == "gphase":
        return np.full(index.shape, -1.0)
    if name == "rz":
        return b[0] - 0.5
    if name == "p":
        return b[0]
    if name == "cp":
        return b[0] * b[1]
    if name == "crz":
        return b[0] * (b[1] - 0.5)
    if name == "rzz":
        return np.abs(b[0] - b[1]) - 0.5  # exp(-i t/2 z_a z_b): (parity - 1/2) t
    if name == "cz":
        return math.pi * b[0] * b[1]
    return FIXED_PHASE[name] * b[0]


@dataclass
class _CompiledDiagonal:
    exprs: list               # G angle expressions
    codes: np.ndarray | None  # (G, 2**n) float64
    constant: np.ndarray | None  # (2**n,) float64 phase, or None
    gather: np.ndarray | None    # indices: psi = stored[:, gather], or None when the permutation is the identity


def _compile_diagonal(run: _Diagonal, n: int) -> _CompiledDiagonal:
    d = 2**n
    # snapshots[k]: where each stored basis index sits after the first k permutations
    snapshots = [np.arange(d, dtype=np.int64)]
    for name, wires in run.perms:
        snapshots.append(_permute(snapshots[-1], n, name, wires))
    codes = np.empty((len(run.gates), d)) if run.gates else None
    for row, (name, wires, _, where) in enumerate(run.gates):
        codes[row] = _unit_phase(name, wires, snapshots[where], n)
    constant = None
    for name, wires, where in run.constant:
        phase = _unit_phase(name, wires, snapshots[where], n)
        constant = phase if constant is None else constant + phase
    return _CompiledDiagonal([g[2] for g in run.gates], codes, constant, inverse_gather(snapshots[-1]))


def _apply_one_qubit(psi: np.ndarray, n: int, wire: int, u: np.ndarray) -> None:
    """psi (B, 2**n) complex64 <- (U on ``wire``) psi, in place; u (B or 1, 2, 2) complex."""
    if u.shape[0] == 1 and not np.iscomplexobj(np.real_if_close(u)):
        # a constant real matrix (H, RY(c), X): real arithmetic on the interleaved (re, im) floats
        view = psi.view(np.float32).reshape(psi.shape[0], 2**wire, 2, 2 ** (n - wire))
        a0, a1 = view[:, :, 0, :], view[:, :, 1, :]
        r = u[0].real.astype(np.float32)
        new1 = a0 * r[1, 0]
        new1 += a1 * r[1, 1]
        a0 *= r[0, 0]
        a0 += a1 * r[0, 1]
        a1[...] = new1
        return
    view = psi.reshape(psi.shape[0], 2**wire, 2, 2 ** (n - wire - 1))
    a0, a1 = view[:, :, 0, :], view[:, :, 1, :]
    u = u.astype(np.complex64)
    u00, u01, u10, u11 = (u[:, i, j, None, None] for i in (0, 1) for j in (0, 1))
    if u.shape[0] == 1 and u[0, 0, 1] == 0 and u[0, 1, 0] == 0:  # a constant diagonal: two scalings
        a0 *= u00
        a1 *= u11
        return
    new1 = a0 * u10
    new1 += a1 * u11
    a0 *= u00
    a0 += a1 * u01
    a1[...] = new1


@dataclass(frozen=True)
class CircuitFeatureMap:
    """Any data-encoding circuit as a feature map, with ``FeatureMap``'s interface.

    Parameters
    ----------
    circuit : Circuit
        Gates on ``circuit.n_qubits`` wires whose angles read ``circuit.n_features`` features.
    bandwidth : float > 0
        The features are multiplied by it before the angles are computed.
    max_bond : int, optional
        ``mps``: the largest bond dimension allowed.  Exact MPS (``cutoff`` 0):
        a circuit whose bond bound exceeds it (default ``DEFAULT_MAX_BOND``) is
        refused before work.  With ``truncate=True`` the bond is cut to it.
    cutoff : float >= 0
        ``mps`` with ``truncate=True``: singular values below ``cutoff`` times
        the largest are dropped too.
    truncate : bool
        Opt-in truncated MPS (``mps_with_discarded`` gives the discarded weight per sample; ``mps`` warns).

    ``states(X)`` gives (N, 2**n) complex64 rows, ``mps(X)`` ``MPSStates`` for
    circuits whose two-qubit gates act on neighbouring wires; both feed ``gram``.
    """

    circuit: Circuit
    bandwidth: float = 1.0
    max_bond: int | None = None
    cutoff: float = 0.0
    truncate: bool = False
    _programs: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.circuit, Circuit):
            raise TypeError(f"circuit must be a qmlnb.kernels.circuit.Circuit, got {type(self.circuit).__name__}")
        if isinstance(self.bandwidth, bool) or not isinstance(self.bandwidth, numbers.Real):
            raise TypeError(f"bandwidth must be a real number, got {type(self.bandwidth).__name__} {self.bandwidth!r}")
        check_real(self.bandwidth, "bandwidth", 0, math.inf, closed="neither")
        check_positive_int(self.max_bond, "max_bond", none_ok=True)
        check_real(self.cutoff, "cutoff", 0, 1, closed="left")
        if not isinstance(self.truncate, bool):
            raise TypeError(f"truncate must be True or False, got {self.truncate!r}")
        if self.cutoff > 0 and not self.truncate:
            raise ValueError("cutoff > 0 truncates the MPS: pass truncate=True to opt in")

    # ------------------------------------------------------------------ description
    @property
    def n_qubits(self) -> int:
        return self.circuit.n_qubits

    @property
    def n_features(self) -> int:
        return self.circuit.n_features

    @property
    def layers(self) -> int:
        """Layer count L of U(x) for a per-layer noise rate (``DeviceNoise.for_map``): the circuit's gate depth.

        ``FeatureMap.layers`` counts repetitions of its block instead; a rate
        quoted per repetition of a custom block is given with
        ``DeviceNoise(depolarising=p, layers=L)`` directly.
        """
        return self.circuit.depth()

    @property
    def dim(self) -> int:
        return 2**self.n_qubits

    @property
    def name(self) -> str:
        return self.circuit.name

    def spec_hash(self) -> str:
        """Short hash of the circuit's spec (``Circuit.spec_hash``); the bandwidth is not part of it."""
        return self.circuit.spec_hash()

    @property
    def label(self) -> str:
        """``name#hash``: how tables and reports name this map."""
        return f"{self.name}#{self.spec_hash()}"

    def with_bandwidth(self, bandwidth: float) -> "CircuitFeatureMap":
        return replace(self, bandwidth=bandwidth)

    # ------------------------------------------------------------------ checks
    def _check_X(self, X) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim == 2 and X.shape[1] != self.n_features:
            raise ValueError(f"X has {X.shape[1]} feature columns but the circuit {self.label} reads "
                             f"{self.n_features} (x[0]..x[{self.n_features - 1}])")
        return check_embeddings(X, self.n_features) * self.bandwidth

    def _batch_rows(self, batch_size: int | None) -> int:
        if batch_size is None:
            native = self._program()[2]
            if native is not None:  # each sample is simulated in its thread's cache: a batch bounds the inputs only
                return max(1, NATIVE_BATCH_BYTES // native.batch_bytes(1))
            return max(1, DEFAULT_BATCH_BYTES // (8 * self.dim))
        return check_positive_int(batch_size, "batch_size")

    def peak_bytes(self, n_samples: int, batch_size: int | None = None) -> int:
        """Most memory ``states`` holds for ``n_samples`` rows, in bytes (an upper bound).

        The states (N x 2**n complex64); the compiled phase tables (one float64
        row per parameterised diagonal gate of the largest run, plus int64
        permutation work rows); one batch's work (phases float64, complex
        exponentials and strided temporaries, 40 bytes per amplitude).  With the
        C++ kernel, NumPy's tables and work cover the constant prefix (one row)
        only; the kernel adds its arrays (``NativeProgram.table_bytes``), one
        batch's angles and per-sample matrices, and each thread's work rows.
        """
        d = self.dim
        rows = min(n_samples, self._batch_rows(batch_size))
        prefix, rest, native = self._program()
        steps = prefix if native is not None else prefix + rest
        per_run = max([0] + [len(s.gates) for s in steps if isinstance(s, _Diagonal)])
        tables = per_run * d * 8 + 6 * d * 8
        if native is not None:
            # NumPy simulates the constant prefix on one row; the kernel: its tables, the batch's angles and
            # per-sample matrices, each thread's work rows
            threads = min(available_cores(), rows)
            return (n_samples * d * 8 + tables + d * 48 + native.table_bytes() + native.batch_bytes(rows)
                    + threads * native.thread_bytes())
        return n_samples * d * 8 + tables + rows * (d * 40 + per_run * 8)

    # ------------------------------------------------------------------ states
    def states(self, X, *, batch_size: int | None = None) -> np.ndarray:
        """Simulate U(x)|0> for every row of X.

        Parameters
        ----------
        X : array_like, shape (N, n_features), real and finite
        batch_size : rows simulated together (default: about 4 MiB of states per batch with NumPy; with the
            C++ kernel, about 64 MiB of angles and per-sample matrices).

        Returns
        -------
        S : ndarray, shape (N, 2**n_qubits), complex64, C-contiguous; unit rows in PennyLane's order.

        Raises ValueError for bad X or non-finite angles and
        ``InsufficientMemoryError`` when ``peak_bytes`` does not fit, before any work.
        """
        if self.n_qubits > MAX_QUBITS:
            raise ValueError(f"n_qubits={self.n_qubits} is beyond the state-vector limit of {MAX_QUBITS} qubits; "
                             "use CircuitFeatureMap.mps(X) (two-qubit gates on neighbouring wires) with gram(M)")
        X = self._check_X(X)
        n_samples = X.shape[0]
        rows = self._batch_rows(batch_size)
        check_fits_in_memory(self.peak_bytes(n_samples, rows),
                             f"states of {n_samples} samples on {self.n_qubits} qubits ({self.label}, complex64)")
        theta = self.circuit.theta_dict
        self._check_angles(X, theta)
        prefix, rest, native = self._program()
        start_state = self._start_state()
        out = np.empty((n_samples, self.dim), dtype=np.complex64)
        numpy_rest = self._compiled(rest) if native is None else None
        for start in range(0, n_samples, rows):
            stop = min(n_samples, start + rows)
            batch = out[start:stop]
            if native is not None:
                native.run(X[start:stop], theta, start_state[0], batch, max(1, min(available_cores(), stop - start)))
                continue
            batch[...] = start_state
            self._run(numpy_rest, batch, X[start:stop], theta)
            # many float32 passes drift the norm by ~1e-7 per gate; unit rows keep K[i, i] = 1 to float32 precision
            norms = np.sqrt(np.einsum("ij,ij->i", batch.view(np.float32), batch.view(np.float32), dtype=np.float64))
            batch /= norms.astype(np.float32)[:, None]
        return out

    def _program(self) -> tuple[list, list, object]:
        """(prefix, rest, native): the compiled steps before and from the first one that reads x or theta, and
        the rest as a ``NativeProgram`` for the C++ kernel (None where ``qmlnb._circuit_openmp`` is not built).
        Compiled once per map (the bandwidth does not enter)."""
        from .circuit_native import NativeProgram, native_extension

        use_native = native_extension() is not None
        if use_native not in self._programs:
            prefix, rest = self._split_prefix(compile_program(self.circuit))
            native = NativeProgram.compile(rest, self.n_qubits) if use_native else None
            self._programs[use_native] = (prefix, rest, native)
        return self._programs[use_native]

    def _start_state(self) -> np.ndarray:
        """(1, 2**n) complex64: the constant prefix applied to |0..0> (the same for every sample), computed once."""
        if "start" not in self._programs:
            start = np.zeros((1, self.dim), dtype=np.complex64)
            start[0, 0] = 1.0
            self._run(self._compiled(self._program()[0]), start, np.zeros((1, self.n_features)), {})
            self._programs["start"] = start
        return self._programs["start"]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_programs"] = {}  # compiled again where unpickled (its extension may differ)
        return state

    def _compiled(self, steps: list) -> list:
        """The steps for the NumPy simulation (``_run``): diagonal runs as phase tables."""
        n = self.n_qubits
        return [_compile_diagonal(s, n) if isinstance(s, _Diagonal) else s for s in steps]

    @staticmethod
    def _split_prefix(steps: list) -> tuple[list, list]:
        """Steps before the first one whose angles depend on x (or theta: kept per sample for later training)."""
        for k, step in enumerate(steps):
            exprs = [g[2] for g in step.gates] if isinstance(step, _Diagonal) else [a for _, angles in step.gates
                                                                                   for a in angles]
            if not all(e.is_constant() for e in exprs):
                return steps[:k], steps[k:]
        return steps, []

    def _check_angles(self, X: np.ndarray, theta: dict) -> None:
        """Refuse (ValueError naming the gate and the sample) any angle that is not finite, before any simulation."""
        seen = set()
        for g in self.circuit.gates:
            for a in g.angles:
                if a in seen or a.is_constant():
                    continue
                seen.add(a)
                values = np.asarray(a.evaluate(X, theta), dtype=np.float64)
                if not np.isfinite(values).all():
                    row = int(np.flatnonzero(~np.isfinite(np.broadcast_to(values, (X.shape[0],))))[0])
                    raise ValueError(f"the angle {a} of gate {g.name} on wires {g.wires} is not finite for sample "
                                     f"{row}; scale the features down or check the angle expressions")

    def _run(self, program: list, psi: np.ndarray, X: np.ndarray, theta: dict) -> None:
        """Apply the compiled steps to the (B, 2**n) complex64 states ``psi`` in place."""
        n = self.n_qubits
        for step in program:
            if isinstance(step, _CompiledDiagonal):
                phase = None
                if step.exprs:
                    # reduce mod 2 pi in float64 so that float32 cos/sin stay accurate however large the angles
                    phase = np.stack(_angles(step.exprs, X, theta), 1) @ step.codes
                if step.constant is not None:
                    phase = step.constant[None] if phase is None else phase + step.constant
                if phase is not None:
                    phase = np.mod(phase, 2.0 * np.pi).astype(np.float32)
                    # real cos and sin are several times faster than a complex exp
                    factor = np.empty(phase.shape, dtype=np.complex64)
                    np.cos(phase, out=factor.real)
                    np.sin(phase, out=factor.imag)
                    psi *= factor
                if step.gather is not None:
                    psi[...] = psi[:, step.gather]
                continue
            u = None
            for name, angles in step.gates:
                m = one_qubit_matrices(name, _angles(angles, X, theta) if angles else [])
                u = m if u is None else m @ u
            _apply_one_qubit(psi, n, step.wire, u)

    # ------------------------------------------------------------------ methods, MPS
    def has_mps(self) -> bool:
        """True if ``mps`` can build this map's MPS: neighbouring two-qubit gates and (exact) a bond bound within
        ``max_bond``."""
        try:
            self._check_mps_supported()
        except ValueError:
            return False
        return True

    def _check_mps_supported(self) -> None:
        from .circuit_mps import check_mps_circuit

        check_mps_circuit(self.circuit, self.max_bond or DEFAULT_MAX_BOND, self.truncate)

    # the same rule as FeatureMap's (it only reads n_qubits, peak_bytes, has_mps and _check_mps_supported)
    resolve_method = FeatureMap.resolve_method
    simulate = FeatureMap.simulate

    def mps(self, X) -> MPSStates:
        """The MPS of U(x)|0> for every row of X (``qmlnb.kernels.circuit_mps``); ``gram(M)`` accepts it.

        Two-qubit gates must act on neighbouring wires.  Exact (no truncation,
        refused before work when a bond may exceed ``max_bond``) unless
        ``truncate=True``; then a ``TruncationWarning`` gives the largest
        discarded weight (``mps_with_discarded`` returns it per sample).

        Returns ``MPSStates``: tensors (N, n_qubits, 2, chi, chi) complex64.
        """
        M, discarded = self.mps_with_discarded(X)
        if self.truncate and discarded.max() > 0:
            warnings.warn(f"truncated MPS of {self.label}: discarded weight up to {discarded.max():.3g} "
                          f"(median {np.median(discarded):.3g}) per sample; the kernel is approximate",
                          TruncationWarning, stacklevel=2)
        return M

    def mps_with_discarded(self, X) -> tuple[MPSStates, np.ndarray]:
        """``mps(X)`` and the (N,) float64 discarded weight of each sample (0 when exact), without a warning."""
        from .circuit_mps import circuit_mps

        X = self._check_X(X)
        self._check_angles(X, self.circuit.theta_dict)
        return circuit_mps(self.circuit, X, max_bond=self.max_bond or DEFAULT_MAX_BOND, cutoff=self.cutoff,
                           truncate=self.truncate)


class TruncationWarning(UserWarning):
    """A truncated MPS dropped weight: the kernel built on it is approximate."""


def feature_map_circuit(fm) -> Circuit:
    """``FeatureMap(kind="zz"|"iqp")`` as a :class:`Circuit` (its bandwidth is not part of the circuit)."""
    from .circuit import iqp_circuit, zz_circuit

    if fm.kind == "iqp":
        return iqp_circuit(fm.n_qubits, fm.reps)
    return zz_circuit(fm.n_qubits, fm.reps, pairs=fm.pairs)
