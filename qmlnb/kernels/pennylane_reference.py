"""``FeatureMap.states`` against PennyLane ``default.qubit`` on the same angles, timed in the same rounds.

The reference a user would otherwise reach for is a PennyLane QNode returning
``qml.state()`` of the same circuit (:meth:`FeatureMap.qnode`), called once on
the whole batch with parameter broadcasting.  :func:`states_vs_pennylane` times
both with :func:`qmlnb.timing.interleaved` (a warm-up call each, then rounds
ours, PennyLane, ours, PennyLane, ...), so the ratio pairs calls made at the
same moments of the machine, on the same data; it also checks that both give
the same amplitudes (PennyLane's wire order, which ``states`` follows).

``python -m qmlnb bench gram`` (its ``states`` section) and the lab's
``gram_scaling`` task both call it.
"""
from __future__ import annotations

import numpy as np

from .. import timing
from .feature_map import FeatureMap
from .validation import check_embeddings


def states_vs_pennylane(fm: FeatureMap, X, *, device: str = "default.qubit", rounds: int = 5,
                        min_time: float = 0.2) -> dict:
    """Time ``fm.states(X)`` against PennyLane's broadcast QNode of the same map, interleaved.

    Parameters
    ----------
    fm : FeatureMap
    X : array_like, shape (N, fm.n_qubits), real
        The angles both sides simulate.  PennyLane costs much more per
        state: a few dozen states already give a stable ratio.
    device : PennyLane device name (``default.qubit``: the state-vector simulator).
    rounds, min_time : at least ``rounds`` interleaved rounds and ``min_time``
        seconds of timed calls, both sides together (:func:`qmlnb.timing.interleaved`).

    Returns
    -------
    dict of plain JSON values:
        ``n``, ``n_qubits``; ``qmlnb_s`` and ``pennylane_broadcast_s``, the
        median seconds of one call on all N states; ``speedup``, PennyLane's
        median over ours; ``speedup_rounds``, :func:`qmlnb.timing.ratio` of
        the paired rounds (median, q1, q3, iqr, n, rounds, noisy);
        ``max_abs_difference``, max |amplitude difference| between the two
        (N, 2**n) state matrices (complex64 against complex128: about 1e-7);
        ``timing``: both sides' :meth:`qmlnb.timing.Timing.as_dict`.
    """
    X = check_embeddings(X, fm.n_qubits)
    qnode = fm.qnode(device)
    timed = timing.interleaved({"qmlnb": lambda: fm.states(X), "pennylane": lambda: np.asarray(qnode(X))},
                               min_rounds=rounds, min_time=min_time)
    ours, pennylane = timed["qmlnb"], timed["pennylane"]
    reference = pennylane.value.reshape(ours.value.shape)  # one state comes back as (2**n,), not (1, 2**n)
    return {"n": len(X), "n_qubits": fm.n_qubits, "qmlnb_s": ours.median, "pennylane_broadcast_s": pennylane.median,
            "speedup": pennylane.median / ours.median, "speedup_rounds": timing.ratio(pennylane, ours),
            "max_abs_difference": float(np.abs(ours.value - reference).max()),
            "timing": {"qmlnb": ours.as_dict(), "pennylane": pennylane.as_dict()}}
