"""Device noise on a fidelity kernel, its mitigation, and the repair of a non-PSD estimate.

A fidelity kernel is measured on hardware as the probability of one outcome
of a circuit: the all-zeros string of the compute-uncompute circuit
U(y)^dagger U(x) (``estimator="fidelity"``), or the ancilla's 0 of the swap
test (``estimator="swap"``).  Both noise channels modelled here act on that
probability as an affine map, so the device's expected estimate of an exact
kernel value k is ``gain * k + offset`` and the mitigation is its inverse:

* **global depolarising noise**, rate ``p`` per circuit layer, ``L`` layers:
  the state is kept with probability ``f = (1 - p)**L`` and otherwise replaced
  by the maximally mixed state.  Compute-uncompute: P(0^n) = f k + (1 - f) / 2^n
  (the closed form of the issue; sQUlearn's ``mit_depol_noise`` inverts it).
  Swap test: P(ancilla 0) = f (1 + k) / 2 + (1 - f) / 2.
* **readout error**: each measured bit is read flipped with probability ``r``
  (symmetric).  Swap test: one bit, P0 -> (1 - r) P0 + r (1 - P0), exact.
  Compute-uncompute: P(read 0^n) = sum_x P(x) (1 - r)^(n - |x|) r^|x| depends
  on where the mass 1 - P(0^n) sits; it is taken spread evenly over the
  2^n - 1 other strings (exact for the depolarised part, a model for the rest),
  so P(read 0^n) = P0 (1 - r)^n + (1 - P0) (1 - (1 - r)^n) / (2^n - 1).

``repair_psd`` is the last step before an SVM: an estimated Gram with shot
noise is not positive semi-definite in general (Qiskit's ``enforce_psd``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._util import check_int, check_option, check_real

ESTIMATORS = ("fidelity", "swap")
PSD_METHODS = ("clip", "flip")


def _check_rate(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1), got {value!r}")
    # a value of the wrong type is a TypeError above; the vocabulary judges the number (NaN included)
    return check_real(float(value), name, 0, 1, closed="left")


@dataclass(frozen=True)
class DeviceNoise:
    """Global depolarising noise per layer and symmetric readout error.

    Parameters
    ----------
    depolarising : float in [0, 1)
        Rate p per circuit layer.
    layers : int >= 0
        Layer count L of the measured circuit (the compute-uncompute circuit
        U(y)^dagger U(x) has twice the feature map's: ``DeviceNoise.for_map``).
    readout : float in [0, 1)
        Probability that one measured bit is read flipped.
    """

    depolarising: float = 0.0
    layers: int = 0
    readout: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "depolarising", _check_rate(self.depolarising, "depolarising"))
        object.__setattr__(self, "readout", _check_rate(self.readout, "readout"))
        object.__setattr__(self, "layers", check_int(self.layers, "layers", minimum=0))
        if self.depolarising > 0 and self.layers == 0:
            raise ValueError("depolarising > 0 needs the circuit's layer count: DeviceNoise(depolarising=p, "
                             "layers=L) or DeviceNoise.for_map(feature_map, depolarising=p)")

    @classmethod
    def for_map(cls, feature_map, *, depolarising: float = 0.0, readout: float = 0.0) -> DeviceNoise:
        """The noise of the compute-uncompute circuit of ``feature_map``: L = 2 * ``feature_map.layers``.

        Any feature map with a ``layers`` property (an int: the layer count of
        its circuit U(x), in the unit the rate ``depolarising`` is per) works.
        """
        layers = getattr(feature_map, "layers", None)
        if layers is None:
            raise TypeError(f"{type(feature_map).__name__} has no `layers` property (the layer count of its circuit "
                            "U(x)); give DeviceNoise(depolarising=p, layers=L) directly")
        return cls(depolarising=depolarising, layers=2 * int(layers), readout=readout)

    @property
    def survival(self) -> float:
        """f = (1 - p)^L, the weight the depolarising channel leaves on the noiseless state."""
        return (1.0 - self.depolarising) ** self.layers

    def describe(self) -> dict:
        return {"depolarising": self.depolarising, "layers": self.layers, "readout": self.readout}


def check_estimator(estimator) -> str:
    return check_option(estimator, "estimator", ESTIMATORS)


def outcome_map(estimator: str, n_qubits: int, noise: DeviceNoise | None) -> tuple[float, float]:
    """(a, b): the probability of the counted outcome is ``a * k + b`` for exact kernel value k.

    ``fidelity``: the all-zeros string of n bits; ``swap``: the ancilla's 0.
    """
    if estimator == "fidelity":
        a, b = 1.0, 0.0
    else:
        a, b = 0.5, 0.5
    if noise is None:
        return a, b
    f = noise.survival
    if estimator == "fidelity":
        floor = 2.0 ** -n_qubits
        a, b = f * a, f * b + (1.0 - f) * floor
        if noise.readout > 0:
            keep = (1.0 - noise.readout) ** n_qubits
            # the mass off 0^n spread evenly over the 2^n - 1 other strings (module docstring)
            leak = (1.0 - keep) / (2.0 ** n_qubits - 1.0)
            a, b = a * (keep - leak), b * (keep - leak) + leak
    else:
        a, b = f * a, f * b + (1.0 - f) * 0.5
        r = noise.readout
        a, b = a * (1.0 - 2.0 * r), b * (1.0 - 2.0 * r) + r
    return a, b


def estimate_map(estimator: str, n_qubits: int, noise: DeviceNoise | None, mitigate: bool) -> tuple[float, float]:
    """(g, h): the kernel estimate from the observed frequency P of the counted outcome is ``g * P + h``.

    Raw (``mitigate`` False): what the estimator reports on a noiseless device
    (fidelity: P; swap test: 2 P - 1).  Mitigated: the inverse of
    ``outcome_map`` with the noise model, so its mean is the exact kernel.
    """
    if mitigate:
        if noise is None:
            raise ValueError("mitigate=True needs the noise model it inverts (noise=DeviceNoise(...))")
        a, b = outcome_map(estimator, n_qubits, noise)
        return 1.0 / a, -b / a
    return (1.0, 0.0) if estimator == "fidelity" else (2.0, -1.0)


def mitigate_depolarising(K: np.ndarray, n_qubits: int, survival: float | None = None) -> tuple[np.ndarray, float]:
    """Invert global depolarising noise on a measured compute-uncompute Gram (as sQUlearn's ``mit_depol_noise``).

    Parameters
    ----------
    K : ndarray, shape (N, N), float: a symmetric Gram whose diagonal was measured
    n_qubits : int
    survival : float in (0, 1], optional
        f = (1 - p)^L if known; omitted, it is estimated from the measured
        diagonal (whose exact value is 1): f = (mean(diag) - 2^-n) / (1 - 2^-n).

    Returns
    -------
    (K_mitigated, f): (K - (1 - f) 2^-n) / f, shape (N, N), float64, with the
    diagonal set to 1; and the survival used.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"mitigate_depolarising needs a square Gram, got shape {K.shape}")
    floor = 2.0 ** -check_int(n_qubits, "n_qubits", minimum=1)
    if survival is None:
        survival = (float(np.mean(np.diag(K))) - floor) / (1.0 - floor)
    if not 0.0 < survival <= 1.0:
        raise ValueError(f"the survival (1 - p)^L must be in (0, 1], got {survival} (estimated from a diagonal mean "
                         "at or below 2^-n: the noise leaves nothing to invert)")
    out = (K - (1.0 - survival) * floor) / survival
    np.fill_diagonal(out, 1.0)
    return out, float(survival)


def repair_psd(K: np.ndarray, method: str = "clip") -> tuple[np.ndarray, dict]:
    """The nearest positive semi-definite Gram by eigenvalue repair, with the repair's size.

    Parameters
    ----------
    K : ndarray, shape (N, N), float: symmetric (an estimate of one)
    method : "clip" sets the negative eigenvalues to 0 (Qiskit's
        ``enforce_psd``, the nearest PSD matrix in Frobenius norm); "flip"
        takes their absolute values.

    Returns
    -------
    (K_psd, info): K_psd (N, N) float64, symmetric; info = {"method",
    "min_eigenvalue", "n_negative" (eigenvalues below 0), "negative_mass"
    (sum of |negative eigenvalues|), "relative_change" (||K_psd - K||_F / ||K||_F)}.
    """
    check_option(method, "psd", PSD_METHODS)
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"PSD repair needs a square (symmetric) Gram, got shape {K.shape}")
    sym = 0.5 * (K + K.T)  # the estimate is symmetric by construction; this removes rounding only
    w, V = np.linalg.eigh(sym)
    negative = w < 0
    fixed_w = np.maximum(w, 0.0) if method == "clip" else np.abs(w)
    K_psd = (V * fixed_w) @ V.T if negative.any() else sym
    K_psd = 0.5 * (K_psd + K_psd.T)
    norm = float(np.linalg.norm(K))
    info = {"method": method, "min_eigenvalue": float(w[0]) if w.size else 0.0, "n_negative": int(negative.sum()),
            "negative_mass": float(-w[negative].sum()),
            "relative_change": float(np.linalg.norm(K_psd - K) / norm) if norm > 0 else 0.0}
    return K_psd, info
