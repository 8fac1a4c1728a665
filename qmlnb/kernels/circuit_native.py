"""A compiled circuit program as the flat arrays of the C++ kernel ``qmlnb._circuit_openmp``.

``CircuitFeatureMap.states`` uses it where the extension is built (the NumPy
steps of ``circuit_map`` stay as the reference and the fallback).  The steps
of ``circuit_map.compile_program`` become:

- a **diagonal run**: its phase as a sum of Walsh characters,
  ``phase(b) = sum_m c_m (-1)^popcount(m & b)`` over a few bit masks ``m``.  A
  permutation gate (X, CX, SWAP) makes each wire's bit an affine parity of the
  stored bits, ``bit_w = popcount(mask_w & b) + flip_w (mod 2)``, so every
  diagonal gate seen through the run's permutations is still a short sum of
  characters (RZ: ``-1/2 chi``; P: ``(1 - chi) / 2``; CP: ``(1 - chi_a)(1 - chi_b) / 4``;
  CRZ, RZZ, CZ likewise).  Each term is ``(mask slot, angle column, coefficient)``;
  ``c_m`` is summed per sample in the kernel from the (N, P) float64 angle matrix
  (P distinct non-constant angle expressions, evaluated vectorised over the batch).
  A permutation left at the run's end is a gather table of 2**n indices.
- a **one-qubit step**: its 2x2 product, constant (tagged Hadamard, diagonal,
  real or general) or per sample ((N, Ks, 2, 2) complex128, built vectorised).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .circuit_program import _OneQubit, _angles, _constant_value, _permute, inverse_gather
from .gate_matrices import FIXED, FIXED_PHASE, one_qubit_matrices

OP_DIAGONAL, OP_CONST_1Q, OP_SAMPLE_1Q = 0, 1, 2
M_GENERAL, M_REAL, M_DIAGONAL, M_HADAMARD = 0, 1, 2, 3
OP_WIDTH = 7


def native_extension():
    """The C++ circuit kernel (``qmlnb._circuit_openmp``), or None where it is not built (NumPy then)."""
    try:
        from qmlnb import _circuit_openmp
    except ImportError:
        return None
    return _circuit_openmp


def characters(name: str, bits: list) -> list[tuple[int, float]]:
    """A diagonal gate's phase per unit angle as ``[(mask, coefficient)]`` of Walsh characters.

    ``bits``: (mask, flip) of each of the gate's wires, its bit being
    ``popcount(mask & b) + flip`` mod 2; its character ``(-1)^bit`` is ``sign * chi_mask``.
    """
    if name == "gphase":
        return [(0, -1.0)]
    (m1, f1), *rest = bits
    s1 = -1.0 if f1 else 1.0
    if name == "rz":
        return [(m1, -0.5 * s1)]
    if name == "p" or name in FIXED_PHASE:
        scale = FIXED_PHASE.get(name, 1.0)
        return [(0, 0.5 * scale), (m1, -0.5 * scale * s1)]
    (m2, f2), = rest
    s2 = -1.0 if f2 else 1.0
    both = (m1 ^ m2, s1 * s2)
    if name in ("cp", "cz"):  # b1 b2 = (1 - chi1)(1 - chi2) / 4
        scale = math.pi if name == "cz" else 1.0
        return [(0, 0.25 * scale), (m1, -0.25 * scale * s1), (m2, -0.25 * scale * s2),
                (both[0], 0.25 * scale * both[1])]
    if name == "crz":  # b1 (b2 - 1/2) = -(1 - chi1) chi2 / 4
        return [(m2, -0.25 * s2), (both[0], 0.25 * both[1])]
    if name == "rzz":  # (b1 xor b2) - 1/2 = -chi1 chi2 / 2
        return [(both[0], -0.5 * both[1])]
    raise ValueError(f"{name} is not a diagonal gate")  # pragma: no cover - compile only sends these


def _affine_snapshots(perms: list, n: int) -> list[list[tuple[int, int]]]:
    """snapshots[k][w]: (mask, flip) of wire w's bit after the first k permutations of a run."""
    rows = [(1 << (n - 1 - w), 0) for w in range(n)]
    out = [rows]
    for name, wires in perms:
        rows = list(rows)
        if name == "x":
            m, f = rows[wires[0]]
            rows[wires[0]] = (m, f ^ 1)
        elif name == "cx":
            (mc, fc), (mt, ft) = rows[wires[0]], rows[wires[1]]
            rows[wires[1]] = (mt ^ mc, ft ^ fc)
        else:  # swap
            rows[wires[0]], rows[wires[1]] = rows[wires[1]], rows[wires[0]]
        out.append(rows)
    return out


def final_gather(perms: list, n: int) -> np.ndarray | None:
    """Indices with ``psi = stored[gather]`` after a run's permutations, or None for the identity."""
    final = np.arange(2**n, dtype=np.int64)
    for name, wires in perms:
        final = _permute(final, n, name, wires)
    return inverse_gather(final)


def matrix_kind(u: np.ndarray) -> int:
    """How the kernel applies a constant 2x2 matrix: Hadamard butterfly, diagonal, real or general."""
    if np.allclose(u, FIXED["h"], rtol=0, atol=1e-15):
        return M_HADAMARD
    if u[0, 1] == 0 and u[1, 0] == 0:
        return M_DIAGONAL
    if not np.iscomplex(u).any():
        return M_REAL
    return M_GENERAL


@dataclass
class NativeProgram:
    """The flat arrays of ``qmlnb._circuit_openmp.states`` for one compiled program (see the module docstring)."""

    n_qubits: int
    ops: np.ndarray      # (K, 7) int64
    slot: np.ndarray     # (T,) int64
    param: np.ndarray    # (T,) int64, -1: constant
    coef: np.ndarray     # (T,) float64
    masks: np.ndarray    # (M,) int64
    gather_perms: list   # the permutations of each run that ends permuted: one gather table of 2**n each
    cmats: np.ndarray    # (Kc, 2, 2) complex128
    exprs: list          # P angle expressions: the columns of the angle matrix
    sample_steps: list   # Ks lists of (name, angles): the one-qubit steps whose matrix depends on the sample
    _gather: np.ndarray | None = None  # (G,) int64: the gather tables, concatenated (built on first use)

    @property
    def gather(self) -> np.ndarray:
        if self._gather is None:
            tables = [final_gather(perms, self.n_qubits) for perms in self.gather_perms]
            self._gather = np.concatenate(tables) if tables else np.zeros(0, dtype=np.int64)
        return self._gather

    @classmethod
    def compile(cls, steps: list, n: int) -> "NativeProgram":
        """From ``circuit_map.compile_program`` steps (``_Diagonal`` and ``_OneQubit``) on n wires."""
        ops, slot, param, coef, masks, gathers, cmats, exprs, sample_steps = [], [], [], [], [], [], [], [], []
        columns: dict = {}
        for step in steps:
            if isinstance(step, _OneQubit):
                if step.product is not None:
                    u = step.product
                    ops.append([OP_CONST_1Q, step.wire, len(cmats), matrix_kind(u), 0, 0, 0])
                    cmats.append(u)
                else:
                    ops.append([OP_SAMPLE_1Q, step.wire, len(sample_steps), 0, 0, 0, 0])
                    sample_steps.append(step.gates)
                continue
            snapshots = _affine_snapshots(step.perms, n)
            terms = []  # (mask, column, coefficient)
            gates = list(step.gates) + [(name, wires, None, where) for name, wires, where in step.constant]
            for name, wires, expr, where in gates:
                if expr is None:
                    column, value = -1, 1.0
                elif expr.is_constant():
                    column, value = -1, float(_constant_value(expr)[0])
                else:
                    column, value = columns.setdefault(expr, len(columns)), 1.0
                for mask, c in characters(name, [snapshots[where][w] for w in wires]):
                    terms.append((mask, column, c * value))
            run_masks = sorted({t[0] for t in terms})
            slot_of = {m: k for k, m in enumerate(run_masks)}
            t0, m0 = len(slot), len(masks)
            for mask, column, c in terms:
                slot.append(slot_of[mask])
                param.append(column)
                coef.append(c)
            masks += run_masks
            quadratic = int(all(bin(m).count("1") <= 2 for m in run_masks))
            offset = -1
            if snapshots[-1] != snapshots[0]:  # the permutations do not cancel: a gather table (built in run)
                offset = len(gathers) * 2**n
                gathers.append(step.perms)
            ops.append([OP_DIAGONAL, t0, len(slot), m0, len(masks), quadratic, offset])
        exprs = list(columns)
        return cls(n, np.array(ops, dtype=np.int64).reshape(-1, OP_WIDTH), np.array(slot, dtype=np.int64),
                   np.array(param, dtype=np.int64), np.array(coef, dtype=np.float64),
                   np.array(masks, dtype=np.int64), gathers,
                   np.array(cmats, dtype=np.complex128).reshape(-1, 2, 2), exprs, sample_steps)

    def table_bytes(self) -> int:
        """Bytes of the compiled arrays (the gather tables counted before they are built)."""
        arrays = (self.ops, self.slot, self.param, self.coef, self.masks, self.cmats)
        return sum(a.nbytes for a in arrays) + len(self.gather_perms) * 2**self.n_qubits * 8 * 2

    def batch_bytes(self, rows: int) -> int:
        """Bytes of one batch's inputs: the angle matrix and the per-sample matrices (with their temporaries)."""
        return rows * (len(self.exprs) * 8 * 2 + len(self.sample_steps) * 64 * 4 + 64)

    def thread_bytes(self) -> int:
        """Work rows of one kernel thread: six float32 and one float64 rows of 2**n, the quadratic form's rows."""
        n = self.n_qubits
        masks = int(np.max(np.diff(self.ops[:, 3:5], axis=1), initial=1))
        return 2**n * (6 * 4 + 8) + 2 ** (n - n // 2) * 16 + (n + n * n) * 8 + masks * 16

    def run(self, X: np.ndarray, theta: dict, start: np.ndarray, out: np.ndarray, n_threads: int) -> None:
        """Write the (B, 2**n) complex64 states of the batch X (B, n_features) float64 into ``out``."""
        rows = X.shape[0]
        angles = (np.ascontiguousarray(np.stack(_angles(self.exprs, X, theta), 1)) if self.exprs
                  else np.zeros((rows, 0)))
        smats = np.empty((rows, len(self.sample_steps), 2, 2), dtype=np.complex128)
        for k, gates in enumerate(self.sample_steps):
            u = None
            for name, angle_exprs in gates:
                m = one_qubit_matrices(name, _angles(angle_exprs, X, theta) if angle_exprs else [])
                u = m if u is None else m @ u
            smats[:, k] = u
        native_extension().states(self.ops, self.slot, self.param, self.coef, self.masks, self.gather, self.cmats,
                                  smats, angles, start, out, n_threads)
