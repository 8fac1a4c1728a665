"""Differentiable batched states of a ``CircuitFeatureMap``: the same simulation in torch, with autograd over theta.

``CircuitFeatureMap.states`` (NumPy) runs the circuit's compiled program
(``circuit_map.compile_program``): fused diagonal runs (one phase table per
run, ``angles @ codes``), carried permutations (one gather) and one-qubit
steps (a 2x2 matrix per sample on the (B, 2**w, 2, 2**(n-w-1)) view).  Here
the *same* program runs on torch tensors (one-qubit steps whose angles read
no x, the same matrix for every sample, are merged into Kronecker-factored
layers: two small matrix products each), so

- the states of all N samples are computed together (tensor ops on the
  batched view, no Python loop over samples), on the CPU or a CUDA device;
- the angles that read ``theta`` are torch expressions of a parameter vector
  (``Expr.evaluate`` works on tensors), so ``S.backward()`` gives d/dtheta of
  anything computed from the states (a kernel, an alignment, a loss);
- ``dtype="complex64"`` reproduces the NumPy states to float32 rounding
  (phases in float64, reduced mod 2 pi before float32 cos/sin, unit rows as
  there); ``dtype="complex128"`` keeps float64 throughout for gradient checks.

>>> sim = CircuitStates(fm)                         # every theta of fm.circuit trainable
>>> theta = sim.initial_theta().requires_grad_()    # (P,) float64, the circuit's values
>>> S = sim.states(X, theta)                        # (N, 2**n) complex64 tensor
>>> K = fidelity_gram(S); K.sum().backward()        # theta.grad: (P,)
>>> trained_map = sim.feature_map(theta)            # a CircuitFeatureMap with those values
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .circuit import Add, Call, Circuit, Const, Feature, Func, Mul, Param
from .circuit_map import MAX_QUBITS, CircuitFeatureMap, _compile_diagonal, _Diagonal, compile_program
from .gate_matrices import FIXED
from .states_torch import _check_device_memory
from .._util import check_option

DTYPES = ("complex64", "complex128")


def reads_x(expr) -> bool:
    """True if the angle depends on the features (a :class:`Func` is assumed to)."""
    if isinstance(expr, (Feature, Func)):
        return True
    if isinstance(expr, (Const, Param)):
        return False
    if isinstance(expr, (Add, Mul)):
        return reads_x(expr.left) or reads_x(expr.right)
    if isinstance(expr, Call):
        return reads_x(expr.argument)
    return True  # an unknown node type: assume the worst (simulated per sample)


def _torch():
    import torch

    return torch


def _complex_dtype(dtype: str):
    torch = _torch()
    check_option(dtype, "dtype", DTYPES)
    return torch.complex64 if dtype == "complex64" else torch.complex128


def one_qubit_matrices_torch(name: str, angles: list, cdtype):
    """(B or 1, 2, 2) complex matrices of a one-qubit gate for (B,) float64 angle tensors (PennyLane's conventions,
    the same as ``gate_matrices.one_qubit_matrices``), differentiable in the angles."""
    torch = _torch()
    if name in FIXED:
        return torch.from_numpy(FIXED[name][None]).to(cdtype)
    c128 = torch.complex128
    if name == "u3":
        t, phi, lam = (a.to(c128) for a in angles)
        c, s = torch.cos(t / 2), torch.sin(t / 2)
        rows = [torch.stack([c, -torch.exp(1j * lam) * s], -1),
                torch.stack([torch.exp(1j * phi) * s, torch.exp(1j * (phi + lam)) * c], -1)]
        return torch.stack(rows, -2).to(cdtype)
    (t,) = angles
    t = t.to(c128)
    if name == "gphase":
        phase = torch.exp(-1j * t)
        zero = torch.zeros_like(phase)
        rows = [torch.stack([phase, zero], -1), torch.stack([zero, phase], -1)]
    else:
        c, s = torch.cos(t / 2), torch.sin(t / 2)
        zero = torch.zeros_like(c)
        if name == "rx":
            rows = [torch.stack([c, -1j * s], -1), torch.stack([-1j * s, c], -1)]
        elif name == "ry":
            rows = [torch.stack([c, -s], -1), torch.stack([s, c], -1)]
        elif name == "rz":
            rows = [torch.stack([torch.exp(-0.5j * t), zero], -1), torch.stack([zero, torch.exp(0.5j * t)], -1)]
        elif name == "p":
            rows = [torch.stack([zero + 1, zero], -1), torch.stack([zero, torch.exp(1j * t)], -1)]
        else:
            raise ValueError(f"{name} is not a one-qubit gate")  # pragma: no cover - compile only sends these
    return torch.stack(rows, -2).to(cdtype)


def _apply_one_qubit(psi, n: int, wire: int, u):
    """(B, 2**n) states after U on ``wire`` (u: (B or 1, 2, 2)), on the (B, 2**w, 2, 2**(n-w-1)) view, out of place
    (autograd keeps the input).  Elementwise products with u's entries: a batched 2x2 matmul (bmm) costs ~10x
    more here, being B * 2**w tiny products."""
    torch = _torch()
    rows = psi.shape[0]
    view = psi.reshape(rows, 2**wire, 2, 2 ** (n - wire - 1))
    a0, a1 = view[:, :, 0, :], view[:, :, 1, :]
    u = u[:, :, :, None, None]
    new0 = u[:, 0, 0] * a0 + u[:, 0, 1] * a1
    new1 = u[:, 1, 0] * a0 + u[:, 1, 1] * a1
    return torch.stack([new0, new1], 2).reshape(rows, -1)


class _Permute:
    """psi[:, gather] for a permutation ``gather``, whose backward is the inverse permutation (a gather too),
    not the scatter-add that indexing's backward is."""

    _function = None

    @classmethod
    def apply(cls, psi, gather, inverse):
        if cls._function is None:
            torch = _torch()

            class Permute(torch.autograd.Function):
                @staticmethod
                def forward(ctx, state, g, inv):
                    ctx.save_for_backward(inv)
                    return state[:, g]

                @staticmethod
                def backward(ctx, grad):
                    (inv,) = ctx.saved_tensors
                    return grad[:, inv], None, None

            cls._function = Permute
        return cls._function.apply(psi, gather, inverse)


class CircuitStates:
    """A ``CircuitFeatureMap``'s states as a differentiable torch function of its parameters ``theta``.

    Parameters
    ----------
    fm : CircuitFeatureMap
        The circuit and bandwidth; its ``circuit.theta`` values are the initial
        (and, for names not in ``trainable``, the fixed) parameter values.
    trainable : sequence of str, optional
        The parameter names that ``theta`` vectors hold, in that order
        (default: every name of ``fm.circuit.theta``, sorted).  ValueError if
        the circuit has no parameter, or a name is not one of its parameters.
    device : torch.device or str
        Where the states are simulated ("cpu", "cuda", "cuda:1").
    dtype : "complex64" or "complex128"
        Amplitudes; complex64 equals ``fm.states`` to float32 rounding.
    """

    def __init__(self, fm: CircuitFeatureMap, *, trainable=None, device="cpu", dtype: str = "complex64"):
        torch = _torch()
        if not isinstance(fm, CircuitFeatureMap):
            raise TypeError(f"fm must be a CircuitFeatureMap (qmlnb.kernels), got {type(fm).__name__}")
        self.cdtype = _complex_dtype(dtype)
        self.dtype = dtype
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but torch sees no CUDA device here")
        self.fm = fm
        values = fm.circuit.theta_dict
        if not values:
            raise ValueError(f"the circuit {fm.label} has no parameter theta to train: write angles that read "
                             "theta['name'] (and give their initial values in Circuit(..., theta={...}))")
        names = sorted(values) if trainable is None else [str(t) for t in trainable]
        unknown = [t for t in names if t not in values]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(f"trainable must be distinct names of the circuit's parameters {sorted(values)}, "
                             f"got {list(trainable) if trainable is not None else names}")
        self.parameter_names = tuple(names)
        self._fixed = {k: v for k, v in values.items() if k not in self.parameter_names}
        n = fm.n_qubits
        if n > MAX_QUBITS:
            raise ValueError(f"n_qubits={n} is beyond the state-vector limit of {MAX_QUBITS} qubits")

        def tensor(array):
            return None if array is None else torch.from_numpy(array).to(self.device)

        self._program = []
        for step in compile_program(fm.circuit):
            if isinstance(step, _Diagonal):
                c = _compile_diagonal(step, n)
                # a permutation's backward is its inverse permutation (see _Permute)
                gather = None if c.gather is None else (tensor(c.gather), tensor(np.argsort(c.gather)))
                self._program.append(("diagonal", c.exprs, tensor(c.codes), tensor(c.constant), gather))
            else:
                self._program.append(("one_qubit", step.wire, step.gates))
        # steps before the first one that reads x act on the same state for every sample: simulated on one row
        self._split = len(self._program)
        for k, step in enumerate(self._program):
            if any(reads_x(e) for e in _step_angles(step)):
                self._split = k
                break
        self._prefix = _layers(self._program[:self._split])
        self._rest = _layers(self._program[self._split:])

    # ------------------------------------------------------------------ parameters
    @property
    def n_parameters(self) -> int:
        return len(self.parameter_names)

    def initial_theta(self):
        """(P,) float64 tensor on ``device``: the circuit's values of the trainable parameters, in order."""
        torch = _torch()
        values = self.fm.circuit.theta_dict
        return torch.tensor([values[k] for k in self.parameter_names], dtype=torch.float64, device=self.device)

    def _theta_tensor(self, theta):
        torch = _torch()
        if theta is None:
            return self.initial_theta()
        if not isinstance(theta, torch.Tensor):
            theta = torch.as_tensor(np.asarray(theta, dtype=np.float64), device=self.device)
        if theta.shape != (self.n_parameters,):
            raise ValueError(f"theta must have shape ({self.n_parameters},) (parameters {list(self.parameter_names)}),"
                             f" got {tuple(theta.shape)}")
        if theta.is_complex() or not torch.isfinite(theta.detach()).all():
            raise ValueError("theta must be finite real numbers")
        return theta.to(device=self.device, dtype=torch.float64)

    def theta_dict(self, theta) -> dict:
        """{name: float} of every parameter of the circuit for a (P,) theta (fixed ones included)."""
        values = self._theta_tensor(theta).detach().cpu().numpy()
        return {**self._fixed, **{k: float(v) for k, v in zip(self.parameter_names, values)}}

    def feature_map(self, theta) -> CircuitFeatureMap:
        """The feature map with ``theta``'s values: a ``CircuitFeatureMap`` for ``gram``, ``QuantumKernelSVC``..."""
        c = self.fm.circuit
        circuit = Circuit(c.n_qubits, c.gates, theta=self.theta_dict(theta), n_features=c.n_features, name=c.name)
        return replace(self.fm, circuit=circuit)

    # ------------------------------------------------------------------ simulation
    def features(self, X):
        """X validated (finite, (N, n_features)) and scaled by the bandwidth: a (N, F) float64 tensor on ``device``.

        Pass the result to :meth:`states` to skip the validation in a training loop."""
        torch = _torch()
        return torch.from_numpy(np.ascontiguousarray(self.fm._check_X(X))).to(self.device)

    def states(self, X, theta=None):
        """U(x; theta)|0> for every row of X, differentiable in ``theta``.

        Parameters
        ----------
        X : array_like (N, n_features), validated and scaled by the bandwidth; or
            the float64 tensor :meth:`features` returns (used as is).
        theta : (P,) float64 tensor (``requires_grad`` for gradients) or array, in
            ``parameter_names`` order; default the circuit's values.

        Returns
        -------
        S : torch.Tensor (N, 2**n_qubits), ``dtype``, on ``device``: unit rows in PennyLane's order.

        Raises ValueError for bad X or theta and angles that are not finite,
        ``InsufficientMemoryError`` when the states and their autograd tensors would not fit, before any work.
        An angle that reads both ``theta`` and a :class:`Func` hands the Func the torch feature tensor.
        """
        torch = _torch()
        if not isinstance(X, torch.Tensor):
            X = self.features(X)
        elif X.ndim != 2 or X.shape[1] != self.fm.n_features or X.dtype != torch.float64:
            raise ValueError(f"a feature tensor must be (N, {self.fm.n_features}) float64 (from CircuitStates.features"
                             f"), got {tuple(X.shape)} {X.dtype}")
        theta = self._theta_tensor(theta)
        itemsize = 8 if self.cdtype == torch.complex64 else 16
        # autograd keeps about three (N, 2**n) tensors per step for the backward pass
        _check_device_memory(self.device, (3 * len(self._rest) + 2) * X.shape[0] * self.fm.dim * itemsize,
                             f"differentiable states of {X.shape[0]} samples on {self.fm.n_qubits} qubits "
                             f"({self.fm.label}, {self.dtype}, {len(self._rest)} steps)")
        values = {**{k: torch.tensor(v, dtype=torch.float64, device=self.device) for k, v in self._fixed.items()},
                  **{k: theta[i] for i, k in enumerate(self.parameter_names)}}
        X_np = X.detach().cpu().numpy()
        # the NumPy path's refusal (naming the gate and the sample) of an angle that is not finite
        self.fm._check_angles(X_np, self.theta_dict(theta))
        d = self.fm.dim
        start = torch.zeros((1, d), dtype=self.cdtype, device=self.device)
        start[0, 0] = 1.0
        start = self._run(self._prefix, start, X[:1], X_np[:1], values)
        psi = self._run(self._rest, start.expand(X.shape[0], d), X, X_np, values)
        if self.cdtype == torch.complex64:
            # as the NumPy path: float32 passes drift the norm by ~1e-7 per gate; unit rows keep K[i, i] = 1
            psi = psi / torch.linalg.vector_norm(psi, dim=1, keepdim=True)
        return psi

    def _angles(self, exprs, X, X_np: np.ndarray, values: dict):
        """(B, G) float64 tensor of the angles, or (1, G) when none reads x (one value for the whole batch, so the
        step's matrix and its gradient are computed once).  NumPy for the angles without theta (the same values
        as the NumPy path, and a Func sees the array it expects), torch (differentiable) for those with theta."""
        torch = _torch()
        columns = []
        for e in exprs:
            rows = slice(None) if reads_x(e) else slice(0, 1)
            if e.parameters():
                value = e.evaluate(X[rows], values)
            else:
                value = torch.from_numpy(np.asarray(e.evaluate(X_np[rows], {}), dtype=np.float64)).to(self.device)
            columns.append(value.reshape(-1))
        size = max(c.shape[0] for c in columns)
        return torch.stack([torch.broadcast_to(c, (size,)) for c in columns], 1)

    def _run(self, program, psi, X, X_np, values):
        torch = _torch()
        n = self.fm.n_qubits
        real = torch.float32 if self.cdtype == torch.complex64 else torch.float64
        for step in program:
            if step[0] == "diagonal":
                _, exprs, codes, constant, gather = step
                phase = None
                if exprs:
                    phase = self._angles(exprs, X, X_np, values) @ codes
                if constant is not None:
                    phase = constant[None] if phase is None else phase + constant
                if phase is not None:
                    # reduce mod 2 pi in float64 so that float32 cos/sin stay accurate however large the angles
                    # (with floor: torch.remainder is ~20x slower on the CPU; the gradient is the same, 1)
                    turns = torch.floor(phase.detach() * (1.0 / (2.0 * math.pi)))
                    phase = (phase - (2.0 * math.pi) * turns).to(real)
                    psi = psi * torch.complex(torch.cos(phase), torch.sin(phase))
                if gather is not None:
                    psi = _Permute.apply(psi, *gather)
                continue
            if step[0] == "layer":
                psi = self._apply_layer(psi, step[1], X[:1], X_np[:1], values)
                continue
            _, wire, gates = step
            psi = _apply_one_qubit(psi, n, wire, self._matrix(gates, X, X_np, values).to(self.cdtype))
        return psi

    def _matrix(self, gates, X, X_np, values):
        """(B or 1, 2, 2) complex128 product of one wire's gates, in order."""
        torch = _torch()
        u = None
        for name, angles in gates:
            columns = self._angles(angles, X, X_np, values) if angles else None
            m = one_qubit_matrices_torch(name, list(columns.T) if angles else [], torch.complex128).to(self.device)
            u = m if u is None else m @ u
        return u

    def _apply_layer(self, psi, wires: dict, X, X_np, values: dict):
        """One-qubit gates whose angles read no x, on several wires: the same 2**n x 2**n matrix
        U = U_left (x) U_right for every sample, applied as two small matrix products on the
        (B, 2**h, 2**(n-h)) view (h = n // 2): B * 2**n * (2**h + 2**(n-h)) multiply-adds, and a backward
        of matrix products, instead of one elementwise pass (and its gradient reductions) per wire."""
        torch = _torch()
        n = self.fm.n_qubits
        h = n // 2
        eye = torch.eye(2, dtype=torch.complex128, device=self.device)
        factors = [self._matrix(wires[w], X, X_np, values)[0] if w in wires else eye for w in range(n)]

        def kron(mats):
            out = torch.ones((1, 1), dtype=torch.complex128, device=self.device)
            for m in mats:
                out = torch.kron(out, m)
            return out.to(self.cdtype)

        rows = psi.shape[0]
        view = psi.reshape(rows, 2**h, 2 ** (n - h))
        if h:
            view = torch.matmul(kron(factors[:h]), view)
        return torch.matmul(view, kron(factors[h:]).T).reshape(rows, -1)


def _step_angles(step) -> list:
    return step[1] if step[0] == "diagonal" else [a for _, angles in step[2] for a in angles]


def _layers(program: list) -> list:
    """Consecutive one-qubit steps whose angles read no x merged into ``("layer", {wire: gates})`` (a wire met
    twice has its gates joined in order: steps on other wires commute with them)."""
    out = []
    for step in program:
        if step[0] == "one_qubit" and not any(reads_x(e) for e in _step_angles(step)):
            if out and out[-1][0] == "layer":
                wires = out[-1][1]
                wires[step[1]] = wires.get(step[1], []) + list(step[2])
            else:
                out.append(("layer", {step[1]: list(step[2])}))
            continue
        out.append(step)
    return out


def fidelity_gram(S, S2=None):
    """|<s_i|s'_j>|^2 of torch state rows: (N, M) real tensor (``S2`` default ``S``), differentiable."""
    overlap = S.conj() @ (S if S2 is None else S2).T
    return overlap.real ** 2 + overlap.imag ** 2
