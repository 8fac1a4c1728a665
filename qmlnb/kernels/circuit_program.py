"""The circuit as a short program of steps (``compile_program``): fused diagonal runs and one-qubit steps.

Shared by the NumPy simulation of ``circuit_map`` and the C++ kernel's arrays
(``circuit_native``); see ``circuit_map``'s docstring for what the steps are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .circuit import DIAGONAL, Circuit, Const, Gate
from .gate_matrices import FIXED_PHASE, one_qubit_matrices

# two-qubit gates that are a basis change around RZZ: (gate on wire a, gate on wire b) before, adjoints after
ROTATED_ZZ = {"rxx": ("h", "h"), "ryy": ("y_basis", "y_basis"), "rzx": (None, "h")}


def lower(circuit: Circuit) -> list[Gate]:
    """The gates with RXX/RYY/RZX rewritten as basis changes around RZZ (same unitary)."""
    out = []
    for g in circuit.gates:
        if g.name not in ROTATED_ZZ:
            out.append(g)
            continue
        before, after = [], []
        for wire, basis in zip(g.wires, ROTATED_ZZ[g.name]):
            if basis == "h":
                before.append(Gate("h", (wire,)))
                after.append(Gate("h", (wire,)))
            elif basis == "y_basis":
                # Y = (S H) Z (S H)^dagger: apply H S^dagger before, S H after
                before += [Gate("sdg", (wire,)), Gate("h", (wire,))]
                after += [Gate("h", (wire,)), Gate("s", (wire,))]
        out += before + [Gate("rzz", g.wires, g.angles)] + after
    return out


# ---------------------------------------------------------------------------------------------- the program
@dataclass(eq=False)
class _Diagonal:
    """A fused diagonal run: parameterised gates (name, wires, angle), constant phase gates, pending permutation."""

    gates: list = field(default_factory=list)     # (name, wires, Expr, perm snapshot index)
    constant: list = field(default_factory=list)  # (name, wires, perm snapshot index)
    perms: list = field(default_factory=list)     # permutation gates in order: (name, wires)
    wires: set = field(default_factory=set)       # every wire a gate of the run touches

    def add(self, g: Gate) -> None:
        where = len(self.perms)  # the gate sees the permutations before it
        if g.name in PERMUTATIONS:
            self.perms.append((g.name, g.wires))
        elif g.name in FIXED_PHASE or g.name == "cz":
            self.constant.append((g.name, g.wires, where))
        else:
            self.gates.append((g.name, g.wires, g.angles[0], where))
        self.wires.update(g.wires)


@dataclass(eq=False)
class _OneQubit:
    wire: int
    gates: list  # (name, angles) applied in order
    product: np.ndarray | None = None  # (2, 2) complex128 product of the gates while all are constant, else None

    @classmethod
    def start(cls, wire: int, name: str, angles: tuple) -> "_OneQubit":
        return cls(wire, [(name, angles)], _constant_matrix(name, angles))

    def join(self, name: str, angles: tuple) -> float | None:
        """Append a gate; phi if the step is now constant and equal to exp(i phi) I (to 1e-12), else None."""
        self.gates.append((name, angles))
        m = _constant_matrix(name, angles) if self.product is not None else None
        self.product = None if m is None else m @ self.product
        u = self.product
        if u is None or abs(u[0, 1]) > 1e-12 or abs(u[1, 0]) > 1e-12 or abs(u[0, 0] - u[1, 1]) > 1e-12:
            return None
        return float(np.angle(u[0, 0]))

    @property
    def wires(self) -> set:
        return {self.wire}


PERMUTATIONS = ("x", "cx", "swap")


def compile_program(circuit: Circuit) -> list:
    """The circuit as a list of ``_Diagonal`` and ``_OneQubit`` steps (see the module docstring).

    Each gate moves back past the steps it commutes with (those on other
    wires) to join the *earliest* diagonal run it reaches (a diagonal or
    permutation gate) or its wire's one-qubit step; so ``H P`` on every wire
    becomes one layer of one-qubit steps and one diagonal run, however the
    gates are interleaved.  Earliest, not latest: Qiskit lists a circuit in a
    topological order that starts the next repetition on one wire before the
    last repetition's pairs on other wires are done (``zz_feature_map`` with
    full entanglement); joining the latest run would put those pairs after the
    next repetition's first H, split every later run, and cost one pass over
    the states per wire instead of one per repetition.
    """
    steps: list = []
    global_phase = 0.0
    for g in lower(circuit):
        diagonal = g.name in DIAGONAL or g.name in PERMUTATIONS
        wires = set(g.wires)
        target, at, position = None, None, 0
        for i in range(len(steps) - 1, -1, -1):
            step = steps[i]
            if diagonal and isinstance(step, _Diagonal):
                target, at = step, i  # every step after it commutes with the gate: it may join here, or earlier
            elif not diagonal and isinstance(step, _OneQubit) and step.wire == g.wires[0]:
                target, at = step, i
            if step.wires & wires:  # does not commute with the gate: the gate goes right after it
                position = i + 1
                break
        if isinstance(target, _Diagonal):
            target.add(g)  # at the run's end: after every gate of the run, as in the circuit
        elif target is not None:
            phase = target.join(g.name, g.angles)
            if phase is not None:  # H H, SX RX(-pi/2): the step is a global phase; later gates may now fuse past it
                del steps[at]
                global_phase += phase
        else:
            if diagonal:
                new = _Diagonal()
                new.add(g)
            else:
                new = _OneQubit.start(g.wires[0], g.name, g.angles)
            steps.insert(position, new)
    if global_phase % (2 * math.pi):
        # a global phase commutes with everything: it joins the first diagonal run (or starts the program)
        first = next((s for s in steps if isinstance(s, _Diagonal)), None)
        if first is None:
            first = _Diagonal()
            steps.insert(0, first)
        first.add(Gate("gphase", (), (Const(-global_phase),)))  # gphase(t) multiplies by exp(-i t)
    return steps


def _constant_value(e) -> np.ndarray:
    """(1,) float64 value of a constant expression (it reads neither x nor theta)."""
    return np.broadcast_to(np.asarray(e.evaluate(np.zeros((1, 1))), dtype=np.float64), (1,))


def _constant_matrix(name: str, angles: tuple) -> np.ndarray | None:
    """(2, 2) complex128 matrix of a one-qubit gate whose angles are constant, else None."""
    if not all(a.is_constant() for a in angles):
        return None
    return one_qubit_matrices(name, [_constant_value(a) for a in angles])[0]


def _bits(index: np.ndarray, n: int, wire: int) -> np.ndarray:
    return (index >> (n - 1 - wire)) & 1


def _permute(index: np.ndarray, n: int, name: str, wires) -> np.ndarray:
    """Apply a permutation gate to basis indices: the index each basis state moves to."""
    if name == "x":
        return index ^ (1 << (n - 1 - wires[0]))
    if name == "cx":
        c, t = wires
        return index ^ (_bits(index, n, c) << (n - 1 - t))
    a, b = wires  # swap
    differ = _bits(index, n, a) ^ _bits(index, n, b)
    return index ^ (differ << (n - 1 - a)) ^ (differ << (n - 1 - b))


def inverse_gather(final: np.ndarray) -> np.ndarray | None:
    """``gather`` with ``psi = stored[:, gather]`` for a run whose permutations send stored index b to final[b];
    None for the identity."""
    identity = np.arange(final.size, dtype=np.int64)
    if np.array_equal(final, identity):
        return None
    gather = np.empty_like(final)
    gather[final] = identity  # psi[final[b]] = stored[b]
    return gather


def _angles(exprs, X: np.ndarray, theta: dict) -> list[np.ndarray]:
    return [np.broadcast_to(np.asarray(e.evaluate(X, theta), dtype=np.float64), (X.shape[0],)) for e in exprs]
