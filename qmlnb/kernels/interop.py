"""Feature maps from Qiskit circuits and PennyLane quantum functions (optional peers, imported lazily).

- :func:`from_qiskit`: a parameterised ``QuantumCircuit`` (``ZZFeatureMap``,
  ``PauliFeatureMap``, your own) is transpiled to the gate set of
  :data:`~qmlnb.kernels.circuit.GATES` (``optimization_level=0``); each angle's
  ``ParameterExpression`` is read from its text into an expression of ``x``
  (the ``features`` vector) and ``theta`` (any other parameter, fixed by
  ``theta=``).  Qiskit numbers qubits little-endian; here qubit q is wire q and
  amplitudes are in PennyLane's order (wire 0 most significant), so the states
  equal ``Statevector(circuit.reverse_bits())`` and the kernel is unchanged.
- :func:`from_pennylane`: the quantum function is traced once with symbolic
  features (``x[i]`` objects that build expressions under ``+ - *``), its
  templates decomposed to the same gate set, and its operations recorded.
"""
from __future__ import annotations

import numbers
import re

import numpy as np

from .circuit import Circuit, Feature, Gate, parse
from .circuit_map import CircuitFeatureMap
from .feature_map import ENTANGLEMENTS, FeatureMap
from .registry import check_backend

NATIVE_MAX_QUBITS = 20  # the probe states of native_equivalent stay a few MiB
# Qiskit gate names -> ours; transpiling targets these
QISKIT_BASIS = ("h", "x", "y", "z", "s", "sdg", "t", "tdg", "sx", "rx", "ry", "rz", "p", "u", "cx", "cz", "swap",
                "crz", "cp", "rxx", "ryy", "rzz", "rzx")
# PennyLane operation names -> ours (MultiRZ only on two wires: RZZ)
PENNYLANE_GATES = {"Hadamard": "h", "PauliX": "x", "PauliY": "y", "PauliZ": "z", "S": "s", "T": "t", "SX": "sx",
                   "Adjoint(S)": "sdg", "Adjoint(T)": "tdg", "RX": "rx", "RY": "ry", "RZ": "rz",
                   "PhaseShift": "p", "U3": "u3", "CNOT": "cx", "CZ": "cz", "SWAP": "swap", "CRZ": "crz",
                   "ControlledPhaseShift": "cp", "IsingXX": "rxx", "IsingYY": "ryy", "IsingZZ": "rzz",
                   "MultiRZ": "rzz", "GlobalPhase": "gphase"}


def from_qiskit(circuit, features=None, *, theta=None, bandwidth: float = 1.0, name: str | None = None,
                **map_options) -> CircuitFeatureMap:
    """A ``CircuitFeatureMap`` of a parameterised Qiskit ``QuantumCircuit``.

    Parameters
    ----------
    circuit : qiskit.QuantumCircuit (a ``BlueprintCircuit`` such as ``ZZFeatureMap`` too)
    features : ParameterVector or sequence of Parameters, optional
        The parameters fed by the data, in column order; default: all the
        circuit's parameters if they form one ``ParameterVector``.
    theta : mapping parameter name -> float
        Values of the circuit's other parameters (trainable later).
    bandwidth, map_options : passed to ``CircuitFeatureMap``.

    Raises ValueError for parameters that are neither features nor in
    ``theta``, or gates the transpiler cannot bring to the supported set.
    """
    from qiskit import transpile

    params = list(circuit.parameters)
    if features is None:
        vectors = {getattr(p, "vector", None) for p in params}
        if len(vectors) != 1 or None in vectors:
            raise ValueError("the circuit's parameters do not form one ParameterVector: pass features= (the "
                             "ParameterVector or list of Parameters the data feeds)")
        features = list(vectors.pop())
    features = list(features)
    columns = {p.name: k for k, p in enumerate(features)}
    theta = dict(theta or {})
    unknown = [p.name for p in params if p.name not in columns and p.name not in theta]
    if unknown:
        raise ValueError(f"parameters {unknown} are neither features nor given a value in theta=")
    try:
        lowered = transpile(circuit, basis_gates=list(QISKIT_BASIS), optimization_level=0)
    except Exception as err:  # the transpiler's own errors are many types; say what failed
        raise ValueError(f"cannot transpile the circuit to the gates {', '.join(QISKIT_BASIS)}: {err}") from err

    def angle(value):
        if isinstance(value, numbers.Real):
            return float(value)
        # Qiskit prints the inverse functions as asin, acos, atan; our angle syntax names them as NumPy does
        expr = re.sub(r"\ba(sin|cos|tan)\(", r"arc\1(", str(value))
        # rename parameters: features -> x[k], others -> theta['name'], longest names first
        for pname in sorted(columns, key=len, reverse=True):
            expr = expr.replace(pname, f"__x{columns[pname]}__")
        for pname in sorted(theta, key=len, reverse=True):
            expr = expr.replace(pname, f"__t{pname}__")
        for pname, k in columns.items():
            expr = expr.replace(f"__x{k}__", f"x[{k}]")
        for pname in theta:
            expr = expr.replace(f"__t{pname}__", f"theta[{pname!r}]")
        return parse(expr)

    gates = []
    for instruction in lowered.data:
        op = instruction.operation
        if op.name == "barrier":
            continue
        if op.name not in QISKIT_BASIS:
            raise ValueError(f"gate {op.name!r} is not supported (after transpiling); supported: "
                             f"{', '.join(QISKIT_BASIS)}")
        wires = [lowered.find_bit(q).index for q in instruction.qubits]
        gates.append(Gate.make(op.name, wires, [angle(p) for p in op.params]))
    phase = lowered.global_phase
    if not (isinstance(phase, numbers.Real) and phase == 0):
        gates.append(Gate.make("gphase", (), [-angle(phase) if not isinstance(phase, numbers.Real) else -phase]))
    described = Circuit(lowered.num_qubits, gates, theta=theta, n_features=len(features),
                        name=name or circuit.name)
    return CircuitFeatureMap(described, bandwidth=bandwidth, **map_options)


def from_pennylane(qfunc, n_wires: int, n_features: int | None = None, *, wires=None, theta=None,
                   bandwidth: float = 1.0, name: str | None = None, **map_options) -> CircuitFeatureMap:
    """A ``CircuitFeatureMap`` of a PennyLane quantum function ``qfunc(x)`` (``qml.AngleEmbedding(x, ...)``, ...).

    ``qfunc`` is called once with ``x`` a (n_features,) object array of
    symbolic features; templates are decomposed to the supported gates.
    Arithmetic on ``x`` (``+ - *``, numbers) is recorded as expressions; other
    functions of ``x`` cannot be traced (use a ``Circuit`` with ``Func`` angles).

    n_wires : wires 0..n_wires-1 (or the labels in ``wires``, in order).
    n_features : length of x (default n_wires).
    """
    import pennylane as qml

    n_features = n_wires if n_features is None else n_features
    labels = list(range(n_wires)) if wires is None else list(wires)
    if len(labels) != n_wires:
        raise ValueError(f"wires has {len(labels)} labels but n_wires={n_wires}")
    symbolic = np.array([Feature(k) for k in range(n_features)], dtype=object)
    try:
        tape = qml.tape.make_qscript(qfunc)(symbolic)
    except IndexError as err:
        raise ValueError(f"the quantum function reads a feature beyond the data's {n_features} columns "
                         f"({err}); pass n_features=") from err
    [tape], _ = qml.transforms.decompose(tape, gate_set=set(PENNYLANE_GATES))
    gates = []
    for op in tape.operations:
        key = PENNYLANE_GATES.get(op.name)
        if key is None or (op.name == "MultiRZ" and len(op.wires) != 2):
            raise ValueError(f"operation {op.name} on {len(op.wires)} wires is not supported; supported: "
                             f"{', '.join(PENNYLANE_GATES)} (MultiRZ on 2 wires)")
        unknown = [w for w in op.wires if w not in labels]
        if unknown:
            raise ValueError(f"{op.name} acts on wire {unknown[0]!r}, which is not among the {n_wires} wires "
                             f"{labels}")
        wires_ = [] if key == "gphase" else [labels.index(w) for w in op.wires]
        gates.append(Gate.make(key, wires_, [_pennylane_angle(p) for p in op.parameters]))
    circuit = Circuit(n_wires, gates, theta=theta, n_features=n_features,
                      name=name or getattr(qfunc, "__name__", "pennylane"))
    return CircuitFeatureMap(circuit, bandwidth=bandwidth, **map_options)


def _pennylane_angle(value):
    if isinstance(value, np.ndarray) and value.dtype == object and value.ndim == 0:
        value = value.item()
    if hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # a framework scalar
        value = np.asarray(value)
    if isinstance(value, np.ndarray) and value.dtype != object:
        if value.ndim:
            raise ValueError(f"a gate parameter of shape {value.shape}: broadcast parameters are not supported "
                             "(the feature map is traced for one sample)")
        value = float(value)
    return value


def native_equivalent(fm: CircuitFeatureMap, *, probes: int = 4, atol: float = 1e-5) -> FeatureMap | None:
    """The built-in ``FeatureMap`` with the same kernel as the circuit ``fm``, or None.

    ``FeatureMap(kind="zz"|"iqp")`` has its own batched simulator (OpenMP where
    built), several times faster than simulating the same gates one step at a
    time; an imported ``zz_feature_map`` or ``qml.IQPEmbedding`` is one of
    these maps.  The candidates are the ZZ map (each entanglement) and the IQP
    map with ``reps`` = (H gates) / n; one is returned when, on ``probes``
    random feature rows, every state equals the circuit's up to a phase
    (|<a|b>|^2 >= 1 - ``atol``): the kernel, which ignores phases, is then the
    same function.  The features in [-2, 2] are random (seed 0), so two maps
    that differ agree on them only by accident of measure zero.
    """
    n, gates = fm.n_qubits, fm.circuit.gates
    hadamards = sum(g.name == "h" for g in gates)
    if fm.n_features != n or n > NATIVE_MAX_QUBITS or n < 2 or hadamards == 0 or hadamards % n:
        return None
    reps = hadamards // n
    X = np.random.default_rng(0).uniform(-2.0, 2.0, (probes, n))
    try:
        ours = fm.states(X)
    except ValueError:  # an angle not finite on the probes (arcsin(x), log(x)): not a built-in map
        return None
    candidates = [FeatureMap(n_qubits=n, reps=reps, entanglement=e, bandwidth=fm.bandwidth) for e in ENTANGLEMENTS]
    candidates.append(FeatureMap(n_qubits=n, reps=reps, kind="iqp", bandwidth=fm.bandwidth))
    for candidate in candidates:
        overlaps = np.abs(np.einsum("ij,ij->i", ours.conj(), candidate.states(X))) ** 2
        if np.all(overlaps >= 1.0 - atol):
            return candidate
    return None


def default_backend() -> str:
    """The Gram backend of the drop-in kernels by default: "openmp" where the native extension is built (the
    fastest CPU backend that needs no JIT compilation), else "cpu" (NumPy/BLAS)."""
    return "openmp" if check_backend("openmp")[0] else "cpu"
