"""A data-encoding circuit as plain data: gate records whose angles are expressions of the features.

A :class:`Circuit` is ``n_qubits`` wires and a tuple of :class:`Gate` records
``Gate(name, wires, angles)``; an angle is an :class:`Expr`, an expression of
the features ``x`` (one sample's row) and of named parameters ``theta``::

    >>> from qmlnb.kernels.circuit import Circuit, x, theta, pi
    >>> c = Circuit(2, [("h", 0), ("h", 1), ("p", 0, 2 * x[0]), ("p", 1, 2 * x[1]),
    ...                 ("cx", (0, 1)), ("p", 1, 2 * (pi - x[0]) * (pi - x[1])), ("cx", (0, 1))])

Expressions are built with ``+ - *``, ``/`` and ``**`` by constants, and the
functions in :data:`FUNCTIONS` (``cos(x[0])``); they print as the same Python
syntax (``str(expr)``) and :func:`parse` reads that text back, so a circuit is
serialised as JSON/YAML (:meth:`Circuit.to_dict`), hashed (:meth:`Circuit.spec_hash`)
and pickled.  Anything else is a :class:`Func`: a vectorised callable of the
(N, n_features) feature matrix (it pickles when the callable does; its hash
uses the callable's qualified name).  ``Expr.evaluate(X, theta)`` only uses
``+``, ``*``, indexing and the functions of the array's namespace, so the same
expressions evaluate on torch tensors (trainable ``theta``).

Gate conventions are PennyLane's (:data:`GATES`): ``RZ(t) = diag(e^{-it/2}, e^{it/2})``,
``P(t) = diag(1, e^{it})``, ``RXX(t) = exp(-i t/2 X(x)X)`` and so on; ``RZX(t) =
exp(-i t/2 Z(x)X)`` with Z on the first wire; ``U3(theta, phi, lam)`` as
``qml.U3``.  Wires are 0..n-1, wire 0 the most significant bit of an amplitude's index.
"""
from __future__ import annotations

import abc
import ast
import hashlib
import json
import math
import numbers
from dataclasses import dataclass

import numpy as np

from .._util import check_positive_int

# gate name -> (number of wires, number of angles); aliases map onto these names
GATES = {
    "h": (1, 0), "x": (1, 0), "y": (1, 0), "z": (1, 0), "s": (1, 0), "sdg": (1, 0), "t": (1, 0), "tdg": (1, 0),
    "sx": (1, 0),
    "rx": (1, 1), "ry": (1, 1), "rz": (1, 1), "p": (1, 1), "u3": (1, 3),
    "cx": (2, 0), "cz": (2, 0), "swap": (2, 0), "crz": (2, 1), "cp": (2, 1),
    "rxx": (2, 1), "ryy": (2, 1), "rzz": (2, 1), "rzx": (2, 1),
    "gphase": (0, 1),  # e^{-it} on the whole state (qml.GlobalPhase); on no wire
}
ALIASES = {"hadamard": "h", "paulix": "x", "pauliy": "y", "pauliz": "z", "cnot": "cx", "phase": "p",
           "phaseshift": "p", "u": "u3", "isingxx": "rxx", "isingyy": "ryy", "isingzz": "rzz",
           "controlledphaseshift": "cp", "cphase": "cp", "sadjoint": "sdg", "tadjoint": "tdg", "globalphase": "gphase"}
# gates diagonal in the computational basis (fused into one phase vector by the simulation)
DIAGONAL = frozenset({"z", "s", "sdg", "t", "tdg", "rz", "p", "cz", "crz", "cp", "rzz", "gphase"})
# unary functions an expression may call (numpy names; torch has the same ones)
FUNCTIONS = ("sin", "cos", "tan", "exp", "log", "sqrt", "arcsin", "arccos", "arctan", "tanh")


def canonical_gate(name) -> str:
    """The gate's name in :data:`GATES` (lower case, aliases resolved), else a ValueError listing them."""
    if not isinstance(name, str):
        raise ValueError(f"a gate name must be a string, got {name!r}")
    key = name.lower()
    key = ALIASES.get(key, key)
    if key not in GATES:
        raise ValueError(f"unknown gate {name!r}; known gates: {', '.join(GATES)} "
                         f"(aliases: {', '.join(ALIASES)})")
    return key


# ---------------------------------------------------------------------------------------------- expressions
class Expr(abc.ABC):
    """An angle: an expression tree of constants, features ``x[i]``, parameters ``theta[name]``.

    Subclasses are frozen dataclasses (hashable, picklable).  Arithmetic with
    numbers or other expressions builds new trees.
    """

    # the lowest precedence that needs no parentheses around this node when printed
    precedence = 100

    def __add__(self, other):
        return Add(self, as_expr(other))

    def __radd__(self, other):
        return Add(as_expr(other), self)

    def __sub__(self, other):
        return Add(self, Mul(Const(-1.0), as_expr(other)))

    def __rsub__(self, other):
        return Add(as_expr(other), Mul(Const(-1.0), self))

    def __mul__(self, other):
        return Mul(self, as_expr(other))

    def __rmul__(self, other):
        return Mul(as_expr(other), self)

    def __truediv__(self, other):
        other = as_expr(other)
        if not isinstance(other, Const) or other.value == 0:
            raise ValueError(f"an angle may only be divided by a non-zero constant, got / {other}")
        return Mul(self, Const(1.0 / other.value))

    def __neg__(self):
        return Mul(Const(-1.0), self)

    def __pos__(self):
        return self

    def __pow__(self, power):
        if not isinstance(power, numbers.Integral) or isinstance(power, bool) or power < 0:
            raise ValueError(f"an angle may only be raised to a non-negative integer power, got ** {power!r}")
        out = Const(1.0)
        for _ in range(int(power)):
            out = self if isinstance(out, Const) and out.value == 1.0 else Mul(out, self)
        return out

    # the interface every node implements
    @abc.abstractmethod
    def evaluate(self, X, theta=None):
        """(N,) values for the (N, n_features) feature matrix X (float64 NumPy array, or a torch tensor)."""

    def features(self) -> set[int]:
        """Feature columns the expression reads (empty for a :class:`Func`, which reads what it wants)."""
        return set()

    def parameters(self) -> set[str]:
        """Names of the ``theta`` parameters the expression reads."""
        return set()

    def is_constant(self) -> bool:
        """True if the value depends neither on x nor on theta."""
        return False

    def _wrap(self, parent_precedence: int) -> str:
        text = str(self)
        return f"({text})" if self.precedence < parent_precedence else text


def as_expr(value) -> Expr:
    """``value`` as an :class:`Expr`: expressions pass, finite real numbers become :class:`Const`."""
    if isinstance(value, Expr):
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"an angle must be finite, got {value!r}")
        return Const(value)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return as_expr(value.item())
    raise ValueError(f"an angle must be a number, an expression of x and theta, or a Func, got "
                     f"{type(value).__name__} {value!r}")


@dataclass(frozen=True, eq=True)
class Const(Expr):
    value: float

    def evaluate(self, X, theta=None):
        return self.value + 0.0 * X[:, 0] if X.shape[1] else np.full(X.shape[0], self.value)

    def is_constant(self) -> bool:
        return True

    def __str__(self):
        if self.value == math.pi:
            return "pi"
        return repr(float(self.value))

    @property
    def precedence(self):
        return 1 if self.value < 0 else 100  # "-1.0" needs parentheses after "*"


@dataclass(frozen=True, eq=True)
class Feature(Expr):
    index: int

    def evaluate(self, X, theta=None):
        return X[:, self.index]

    def features(self) -> set[int]:
        return {self.index}

    def __str__(self):
        return f"x[{self.index}]"


@dataclass(frozen=True, eq=True)
class Param(Expr):
    name: str

    def evaluate(self, X, theta=None):
        if theta is None or self.name not in theta:
            raise ValueError(f"the angle reads theta[{self.name!r}] but no value was given for it "
                             f"(known: {sorted(theta or {})})")
        value = theta[self.name]
        return value + 0.0 * X[:, 0] if X.shape[1] else np.full(X.shape[0], float(value))

    def parameters(self) -> set[str]:
        return {self.name}

    def __str__(self):
        return f"theta[{self.name!r}]"


class _Binary(Expr):
    """A node with ``left`` and ``right`` operands: reads what either reads."""

    def features(self):
        return self.left.features() | self.right.features()

    def parameters(self):
        return self.left.parameters() | self.right.parameters()

    def is_constant(self):
        return self.left.is_constant() and self.right.is_constant()


@dataclass(frozen=True, eq=True)
class Add(_Binary):
    left: Expr
    right: Expr
    precedence = 1

    def evaluate(self, X, theta=None):
        return self.left.evaluate(X, theta) + self.right.evaluate(X, theta)

    def __str__(self):
        right = self.right
        # a + (-1.0 * b) prints as a - b
        if isinstance(right, Mul) and isinstance(right.left, Const) and right.left.value == -1.0:
            return f"{self.left._wrap(1)} - {right.right._wrap(2)}"
        return f"{self.left._wrap(1)} + {right._wrap(1)}"


@dataclass(frozen=True, eq=True)
class Mul(_Binary):
    left: Expr
    right: Expr
    precedence = 2

    def evaluate(self, X, theta=None):
        return self.left.evaluate(X, theta) * self.right.evaluate(X, theta)

    def __str__(self):
        if isinstance(self.left, Const) and self.left.value == -1.0:
            return f"-{self.right._wrap(3)}"
        return f"{self.left._wrap(2)} * {self.right._wrap(3)}"


@dataclass(frozen=True, eq=True)
class Call(Expr):
    """``function(argument)`` for a function name in :data:`FUNCTIONS`."""

    function: str
    argument: Expr

    def __post_init__(self):
        if self.function not in FUNCTIONS:
            raise ValueError(f"unknown function {self.function!r} in an angle; known: {', '.join(FUNCTIONS)}")

    def evaluate(self, X, theta=None):
        value = self.argument.evaluate(X, theta)
        if isinstance(value, np.ndarray):
            with np.errstate(all="ignore"):  # overflow or a domain error gives inf/NaN, refused by the angle check
                return getattr(np, self.function)(value)
        import torch  # a tensor: torch has the same names except the inverse trigonometric ones

        return getattr(torch, self.function.replace("arc", "a"))(value)

    def features(self):
        return self.argument.features()

    def parameters(self):
        return self.argument.parameters()

    def is_constant(self):
        return self.argument.is_constant()

    def __str__(self):
        return f"{self.function}({self.argument})"


@dataclass(frozen=True, eq=True)
class Func(Expr):
    """An angle computed by ``fn(X)``: a vectorised callable of the (N, n_features) features, returning (N,).

    For encodings an expression cannot spell.  ``name`` defaults to the
    callable's qualified name and is what the circuit's spec (and hash) records.
    """

    fn: object
    name: str = ""

    def __post_init__(self):
        if not callable(self.fn):
            raise ValueError(f"Func needs a callable of the feature matrix, got {self.fn!r}")
        if not self.name:
            object.__setattr__(self, "name", f"{getattr(self.fn, '__module__', '?')}."
                                             f"{getattr(self.fn, '__qualname__', repr(self.fn))}")

    def evaluate(self, X, theta=None):
        value = self.fn(X)
        shape = tuple(getattr(value, "shape", ()))
        if shape != (X.shape[0],):
            raise ValueError(f"Func {self.name} must return one angle per sample, shape ({X.shape[0]},), "
                             f"got shape {shape}")
        return value

    def __str__(self):
        return f"func({self.name!r})"


class _Vector:
    """``x[i]`` / ``theta[name]`` builders (module-level ``x`` and ``theta``)."""

    def __init__(self, kind: str):
        self.kind = kind

    def __getitem__(self, key):
        if self.kind == "x":
            if isinstance(key, bool) or not isinstance(key, numbers.Integral) or key < 0:
                raise ValueError(f"a feature index must be an integer >= 0, got x[{key!r}]")
            return Feature(int(key))
        if not isinstance(key, (str, numbers.Integral)) or isinstance(key, bool):
            raise ValueError(f"a parameter name must be a string or an integer, got theta[{key!r}]")
        return Param(str(key))

    def __repr__(self):
        return self.kind


x = _Vector("x")
theta = _Vector("theta")
pi = Const(math.pi)


def parse(text: str) -> Expr:
    """An :class:`Expr` from its text (``str(expr)``): numbers, ``pi``, ``x[i]``, ``theta['name']``,
    ``+ - * /``, ``**`` by a non-negative integer and the functions of :data:`FUNCTIONS`.

    Raises ValueError naming what is not allowed.  No Python code is executed.
    """
    if isinstance(text, (Expr, numbers.Real)) and not isinstance(text, bool):
        return as_expr(text)
    if not isinstance(text, str):
        raise ValueError(f"an angle must be an expression string or a number, got {text!r}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise ValueError(f"cannot parse the angle {text!r}: {err.msg}") from None
    return _from_ast(tree.body, text)


def _from_ast(node, text: str) -> Expr:
    def bad(what):
        return ValueError(f"the angle {text!r} uses {what}; allowed: numbers, pi, x[i], theta['name'], "
                          f"+ - * /, ** by an integer, {', '.join(FUNCTIONS)}")

    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return as_expr(node.value)
    if isinstance(node, ast.Name):
        if node.id == "pi":
            return pi
        raise bad(f"the name {node.id!r}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _from_ast(node.operand, text)
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp):
        left = _from_ast(node.left, text)
        if isinstance(node.op, ast.Pow):
            if not (isinstance(node.right, ast.Constant) and isinstance(node.right.value, int)):
                raise bad("a power that is not a non-negative integer")
            return left ** node.right.value
        right = _from_ast(node.right, text)
        ops = {ast.Add: Expr.__add__, ast.Sub: Expr.__sub__, ast.Mult: Expr.__mul__, ast.Div: Expr.__truediv__}
        if type(node.op) not in ops:
            raise bad(f"the operator {type(node.op).__name__}")
        return ops[type(node.op)](left, right)
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in ("x", "theta"):
        key = node.slice
        if not isinstance(key, ast.Constant):
            raise bad("an index that is not a literal")
        return (x if node.value.id == "x" else theta)[key.value]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) == 1 and not node.keywords:
        if node.func.id not in FUNCTIONS:
            raise bad(f"the function {node.func.id!r}")
        return Call(node.func.id, _from_ast(node.args[0], text))
    raise bad(f"the construct {ast.dump(node)[:60]}")


# ---------------------------------------------------------------------------------------------- gates, circuit
@dataclass(frozen=True)
class Gate:
    """One gate record: ``name`` (a key of :data:`GATES`), ``wires`` (tuple of ints), ``angles`` (tuple of Expr)."""

    name: str
    wires: tuple
    angles: tuple = ()

    @classmethod
    def make(cls, name, wires, angles=()) -> "Gate":
        """A validated gate from loose values: a name or alias, an int or sequence of wires, numbers/strings/Expr."""
        key = canonical_gate(name)
        n_wires, n_angles = GATES[key]
        wires = (wires,) if isinstance(wires, numbers.Integral) else tuple(wires)
        if len(wires) != n_wires or any(isinstance(w, bool) or not isinstance(w, numbers.Integral) for w in wires):
            raise ValueError(f"gate {key} acts on {n_wires} wire{'s' if n_wires != 1 else ''} (integers), "
                             f"got wires {wires!r}")
        if len(set(wires)) != len(wires):
            raise ValueError(f"gate {key} needs distinct wires, got {wires!r}")
        angles = tuple(angles) if isinstance(angles, (list, tuple)) else (angles,)
        if len(angles) != n_angles:
            raise ValueError(f"gate {key} takes {n_angles} angle{'s' if n_angles != 1 else ''}, got {len(angles)}")
        return cls(key, tuple(int(w) for w in wires), tuple(parse(a) for a in angles))

    def to_dict(self) -> dict:
        out = {"gate": self.name, "wires": list(self.wires)}
        if self.angles:
            out["angles"] = [str(a) for a in self.angles]
        return out


@dataclass(frozen=True)
class Circuit:
    """``n_qubits`` wires and the gates applied to |0...0>, in order.

    Parameters
    ----------
    n_qubits : int >= 1
    gates : sequence of :class:`Gate`, or of tuples ``(name, wires, *angles)`` or dicts
        ``{"gate": name, "wires": [...], "angles": [...]}``.
    theta : mapping name -> float, optional
        Values of the named parameters the angles read (fixed here).
    n_features : int, optional
        Columns of the feature matrix; default: one more than the largest
        ``x[i]`` the angles read.  A gate reading ``x[i]`` with ``i >=
        n_features`` is a ValueError.
    name : str
        A label for tables and reports (the spec hash identifies the circuit).

    Raises ValueError for unknown gates, wires out of range, feature indices
    beyond ``n_features``, theta names without a value and non-finite values.
    """

    n_qubits: int
    gates: tuple
    theta: tuple = ()
    n_features: int | None = None
    name: str = "circuit"

    def __init__(self, n_qubits, gates, theta=None, n_features=None, name="circuit"):
        check_positive_int(n_qubits, "n_qubits")
        records = tuple(_as_gate(g) for g in gates)
        for g in records:
            bad = [w for w in g.wires if not 0 <= w < n_qubits]
            if bad:
                raise ValueError(f"gate {g.name} on wires {g.wires}: wire {bad[0]} is out of range for "
                                 f"{n_qubits} qubits (wires 0..{n_qubits - 1})")
        read = set().union(*(a.features() for g in records for a in g.angles)) if records else set()
        needed = max(read) + 1 if read else 0
        if n_features is None:
            n_features = max(needed, 1)
        check_positive_int(n_features, "n_features")
        if needed > n_features:
            g = next(g for g in records if any(needed - 1 in a.features() for a in g.angles))
            raise ValueError(f"gate {g.name} on wires {g.wires} reads x[{needed - 1}] but the data has "
                             f"{n_features} feature column{'s' if n_features != 1 else ''} (x[0]..x[{n_features - 1}])")
        theta = dict(theta or {})
        for key, value in theta.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"theta[{key!r}] must be a finite real number, got {value!r}")
        names = set().union(*(a.parameters() for g in records for a in g.angles)) if records else set()
        missing = sorted(names - set(theta))
        if missing:
            raise ValueError(f"the angles read theta{missing} but no value is given for "
                             f"{'it' if len(missing) == 1 else 'them'} (theta={theta})")
        object.__setattr__(self, "n_qubits", int(n_qubits))
        object.__setattr__(self, "gates", records)
        object.__setattr__(self, "theta", tuple(sorted((str(k), float(v)) for k, v in theta.items())))
        object.__setattr__(self, "n_features", int(n_features))
        object.__setattr__(self, "name", str(name))

    @property
    def theta_dict(self) -> dict:
        return dict(self.theta)

    def to_dict(self) -> dict:
        """A JSON/YAML-ready description (``Circuit.from_dict`` reads it back)."""
        return {"name": self.name, "n_qubits": self.n_qubits, "n_features": self.n_features,
                "theta": self.theta_dict, "gates": [g.to_dict() for g in self.gates]}

    @classmethod
    def from_dict(cls, spec: dict) -> "Circuit":
        if not isinstance(spec, dict) or "gates" not in spec or "n_qubits" not in spec:
            raise ValueError("a circuit spec is a mapping with keys 'n_qubits' and 'gates' "
                             f"(and optional 'theta', 'n_features', 'name'), got {spec!r:.200}")
        unknown = set(spec) - {"name", "n_qubits", "n_features", "theta", "gates"}
        if unknown:
            raise ValueError(f"unknown keys in a circuit spec: {sorted(unknown)}")
        return cls(spec["n_qubits"], spec["gates"], theta=spec.get("theta"), n_features=spec.get("n_features"),
                   name=spec.get("name", "circuit"))

    def spec_hash(self, length: int = 8) -> str:
        """A short SHA-256 of the spec (gates, wires, angles, theta, sizes; not the ``name``)."""
        spec = self.to_dict()
        del spec["name"]
        text = json.dumps(spec, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:length]

    def depth(self) -> int:
        """Gate layers when every gate starts as soon as its wires are free (ASAP); 0 for no gate."""
        free = [0] * self.n_qubits
        for g in self.gates:
            start = max(free[w] for w in g.wires)
            for w in g.wires:
                free[w] = start + 1
        return max(free, default=0)

    def is_nearest_neighbour(self) -> bool:
        """True if every two-qubit gate acts on wires k and k+1 (the MPS path's condition)."""
        return all(len(g.wires) == 1 or abs(g.wires[0] - g.wires[1]) == 1 for g in self.gates)

    def draw(self) -> str:
        """A one-gate-per-line text listing (the notebook's diagram; ``to_qiskit().draw()`` for a picture)."""
        lines = [f"{self.name}: {self.n_qubits} qubits, {self.n_features} features, {len(self.gates)} gates, "
                 f"spec {self.spec_hash()}"]
        for g in self.gates:
            angles = f"({', '.join(str(a) for a in g.angles)})" if g.angles else ""
            lines.append(f"  {g.name}{angles} on {', '.join(str(w) for w in g.wires)}")
        return "\n".join(lines)


def _as_gate(record) -> Gate:
    if isinstance(record, Gate):
        return Gate.make(record.name, record.wires, record.angles)
    if isinstance(record, dict):
        unknown = set(record) - {"gate", "wires", "angles"}
        if unknown or "gate" not in record or "wires" not in record:
            raise ValueError(f"a gate record is {{'gate': name, 'wires': [...], 'angles': [...]}}, got {record!r}")
        return Gate.make(record["gate"], record["wires"], record.get("angles", ()))
    if isinstance(record, (tuple, list)) and len(record) >= 2:
        return Gate.make(record[0], record[1], tuple(record[2:]))
    raise ValueError(f"a gate is a Gate, a (name, wires, *angles) tuple or a dict, got {record!r}")


def zz_circuit(n_qubits: int, reps: int = 2, pairs=None, name: str = "zz") -> Circuit:
    """Havlicek's ZZ map (``FeatureMap(kind="zz")``) as a :class:`Circuit`: H, P(2 x_i), CX P(2 (pi-x_i)(pi-x_j)) CX.

    pairs : entangled wire pairs in order (default: linear, (i, i+1)).
    """
    pairs = [(i, i + 1) for i in range(n_qubits - 1)] if pairs is None else pairs
    gates = []
    for _ in range(check_positive_int(reps, "reps")):
        for k in range(n_qubits):
            gates += [("h", k), ("p", k, 2 * x[k])]
        for i, j in pairs:
            gates += [("cx", (i, j)), ("p", j, 2 * (pi - x[i]) * (pi - x[j])), ("cx", (i, j))]
    return Circuit(n_qubits, gates, n_features=n_qubits, name=name)


def iqp_circuit(n_qubits: int, reps: int = 2, name: str = "iqp") -> Circuit:
    """PennyLane's ``IQPEmbedding`` (``FeatureMap(kind="iqp")``): H, RZ(x_i), RZZ(x_i x_j) on all pairs."""
    gates = []
    for _ in range(check_positive_int(reps, "reps")):
        gates += [("h", k) for k in range(n_qubits)] + [("rz", k, x[k]) for k in range(n_qubits)]
        gates += [("rzz", (i, j), x[i] * x[j]) for i in range(n_qubits) for j in range(i + 1, n_qubits)]
    return Circuit(n_qubits, gates, n_features=n_qubits, name=name)


def angle_circuit(n_qubits: int, rotation: str = "x", name: str = "angle") -> Circuit:
    """``qml.AngleEmbedding(x, rotation=...)``: R<rotation>(x_i) on wire i."""
    return Circuit(n_qubits, [(f"r{rotation.lower()}", k, x[k]) for k in range(n_qubits)], n_features=n_qubits,
                   name=name)


def reuploading_circuit(n_qubits: int, layers: int = 3, name: str = "reupload") -> Circuit:
    """A hardware-efficient data re-uploading circuit: per layer RY(x_i), RZ(x_i) on each wire, then a CZ ring."""
    gates = []
    for layer in range(check_positive_int(layers, "layers")):
        for k in range(n_qubits):
            gates += [("ry", k, x[k]), ("rz", k, x[k] * (layer + 1.0))]
        ring = [(k, k + 1) for k in range(n_qubits - 1)] + ([(n_qubits - 1, 0)] if n_qubits > 2 else [])
        gates += [("cz", pair) for pair in ring]
    return Circuit(n_qubits, gates, n_features=n_qubits, name=name)
