"""``QmlnbKernel``: qmlnb's engine behind Qiskit Machine Learning's kernel interface (extra ``qiskit``).

A drop-in for ``qiskit_machine_learning.kernels.FidelityStatevectorKernel``::

    from qmlnb.kernels.qiskit_kernel import QmlnbKernel
    kernel = QmlnbKernel(feature_map=zz_feature_map(10))     # was FidelityStatevectorKernel(feature_map=...)
    QSVC(quantum_kernel=kernel).fit(X_train, y_train)          # QSVR, PegasosQSVC, SVC(kernel=kernel.evaluate)

``evaluate(x_vec, y_vec=None)`` validates its input with Qiskit's own
``BaseKernel._validate_input`` (the same ``ValueError`` messages and the same
feature-count adjustment: a circuit whose ``num_qubits`` can be set, such as
``ZZFeatureMap``, is resized to the data's width), then builds every state of
``x_vec`` and of ``y_vec`` once, as a batch (``from_qiskit``, then
``states``), and the Gram as one product (``qmlnb.kernels.gram``),
never pair by pair.  A circuit that is one of the built-in maps
(``zz_feature_map`` with any entanglement and reps, IQP; checked numerically
by ``interop.native_equivalent``) is simulated by ``FeatureMap``'s own, faster
kernel.  Results equal ``FidelityStatevectorKernel``'s to about 1e-7
(complex64 states against Qiskit's complex128).

Shots (``shots=int``) use the shot-sampled Gram of ``qmlnb.kernels.shots``:
each entry is Binomial(shots, k) / shots, the compute-uncompute estimate that
``FidelityStatevectorKernel`` samples too, but from counter-based random
numbers keyed by ``seed`` and by the *content* of the two samples (a 63-bit
hash of each row), so the estimate of k(x, y) is a fixed function of (x, y,
seed): the same matrix on every call, symmetric, and the same entry whether
it is computed in a square Gram at fit time or a rectangular one at predict
time.  As in Qiskit, ``enforce_psd`` projects a *symmetric* shot-sampled Gram
to the nearest positive semi-definite matrix (negative eigenvalues set to 0);
the exact Gram is left as it is.

Qiskit is imported by this module only; ``import qmlnb.kernels`` does not import it.
"""
from __future__ import annotations

import hashlib

import numpy as np
from qiskit_machine_learning.kernels import BaseKernel
from qiskit_machine_learning.utils import algorithm_globals

from .._util import check_int, check_positive_int
from .gram import gram
from .interop import default_backend, from_qiskit, native_equivalent
from .registry import get_backend

MAX_SEED = 2**63 - 1


class QmlnbKernel(BaseKernel):
    """Fidelity kernel |<phi(x)|phi(y)>|^2 of a Qiskit feature map, computed by qmlnb (states as a batch, one Gram).

    Parameters
    ----------
    feature_map : qiskit.QuantumCircuit
        Any parameterised circuit of the gates ``from_qiskit`` lowers to
        (``z_feature_map``, ``zz_feature_map``, ``pauli_feature_map``, your own);
        its parameters, in ``circuit.parameters`` order (the order Qiskit binds
        a row of data in), are the features.  ``None`` raises Qiskit's
        ``QiskitMachineLearningError``, as every Qiskit ML kernel does.
    shots : int >= 1 or None
        None: the exact kernel.  An int: each entry estimated from this many
        shots (``qmlnb.kernels.gram(..., shots=)``).
    seed : int >= 0 or None
        Key of the shot sampler's random numbers.  None with ``shots``: one
        seed drawn at construction from ``algorithm_globals.random`` (so
        ``algorithm_globals.random_seed = ...`` makes it reproducible, as
        for Qiskit's kernels).  Ignored without ``shots``.
    enforce_psd : bool
        Project a symmetric shot-sampled Gram to the nearest PSD matrix.
    backend : str, optional
        Gram backend (``qmlnb.kernels.available_backends()``); default
        ``default_backend()``: "openmp" where the native extension is built, else "cpu".
    n_threads : int, optional
        Threads of the Gram backend (default: this process's cores).
    """

    def __init__(self, *, feature_map=None, shots: int | None = None, seed: int | None = None,
                 enforce_psd: bool = True, backend: str | None = None, n_threads: int | None = None) -> None:
        super().__init__(feature_map=feature_map, enforce_psd=enforce_psd)
        self._shots = check_positive_int(shots, "shots", none_ok=True)
        if shots is not None and seed is None:
            seed = int(algorithm_globals.random.integers(0, MAX_SEED))
        self._seed = check_int(seed, "seed", minimum=0, none_ok=True)
        self._backend = default_backend() if backend is None else backend
        get_backend(self._backend)  # an unknown or unusable backend is refused now, with the reason
        self._n_threads = n_threads
        self._cache = None  # (fingerprint of the circuit, the map converted from it)

    @property
    def shots(self) -> int | None:
        """Shots per entry, or None for the exact kernel."""
        return self._shots

    @property
    def seed(self) -> int | None:
        """Key of the shot sampler (None without shots)."""
        return self._seed if self._shots is not None else None

    def evaluate(self, x_vec: np.ndarray, y_vec: np.ndarray | None = None) -> np.ndarray:
        """The (N, M) float64 kernel matrix of x_vec (N, D) against y_vec (M, D); y_vec omitted: (N, N), symmetric.

        1-D inputs are one sample, as in Qiskit.  Raises ValueError for an
        empty 1-D input, an input of more than 2 dimensions, x and y of
        different widths, a width the feature map cannot take, and non-finite
        or non-real values.
        """
        if np.ndim(x_vec) == 1 and np.size(x_vec) == 0 or y_vec is not None and np.ndim(y_vec) == 1 \
                and np.size(y_vec) == 0:
            raise ValueError("x_vec and y_vec must hold at least one feature per sample (got an empty 1-D array)")
        x_vec, y_vec = self._validate_input(x_vec, y_vec)
        symmetric = y_vec is None or np.array_equal(x_vec, y_vec)
        shape = (x_vec.shape[0], x_vec.shape[0] if y_vec is None else y_vec.shape[0])
        if 0 in shape:
            return np.ones(shape)  # Qiskit's answer for no samples: an empty float64 matrix
        fm = self._circuit_map(x_vec.shape[1])
        S_x = fm.states(x_vec)
        options = {"backend": self._backend, "n_threads": self._n_threads}
        if self._shots is not None:
            options.update(shots=self._shots, seed=self._seed)
        if symmetric:
            if self._shots is not None:
                options["ids"] = (row_ids(x_vec),) * 2
                if self._enforce_psd:
                    options["psd"] = "clip"
            return gram(S_x, **options)
        if self._shots is not None:
            options["ids"] = (row_ids(x_vec), row_ids(y_vec))
        return gram(S_x, fm.states(y_vec), **options)

    @property
    def backend(self) -> str:
        """The Gram backend."""
        return self._backend

    def _circuit_map(self, n_features: int):
        """The feature map as it is now, converted (rebuilt only when the circuit changed): the built-in
        ``FeatureMap`` with the same kernel where there is one, else the ``CircuitFeatureMap``."""
        circuit = self._feature_map
        if circuit.num_parameters != n_features:
            raise ValueError(f"the feature map has {circuit.num_parameters} parameters but the data has "
                             f"{n_features} features per sample: each parameter takes one feature")
        key = fingerprint(circuit)
        if self._cache is None or self._cache[0] != key:
            converted = from_qiskit(circuit, list(circuit.parameters))
            self._cache = (key, native_equivalent(converted) or converted)
        return self._cache[1]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_cache"] = None  # rebuilt from the circuit on the next evaluate
        return state


def fingerprint(circuit) -> tuple:
    """What the states depend on: qubits, parameters, global phase and every instruction (name, qubits, params).

    Cheap (about 2 ms for 300 instructions) next to ``from_qiskit`` (about
    25 ms), so a kernel that PegasosQSVC evaluates once per step does not
    transpile per step, and a circuit changed in place (Qiskit's feature-count
    adjustment, or by hand) is converted again.
    """
    return (circuit.num_qubits, tuple(p.name for p in circuit.parameters), str(circuit.global_phase),
            tuple((inst.operation.name, tuple(circuit.find_bit(q).index for q in inst.qubits),
                   tuple(str(p) for p in inst.operation.params)) for inst in circuit.data))


def row_ids(X: np.ndarray) -> np.ndarray:
    """(N,) int64 ids >= 0: a 63-bit BLAKE2b hash of each row's float64 bytes (equal rows, equal ids).

    Keying the shot sampler by content makes the estimate of k(x, y) depend on
    (x, y, seed) only, not on where x and y sit in this call's arrays.
    """
    rows = np.ascontiguousarray(X, dtype=np.float64)
    rows = rows + 0.0  # -0.0 -> 0.0: the same number, the same bytes
    return np.array([int.from_bytes(hashlib.blake2b(r.tobytes(), digest_size=8).digest(), "little") >> 1
                     for r in rows], dtype=np.int64)
