"""Kernel entries with Qiskit Aer's ``matrix_product_state`` method, run as its own process.

``python -m qmlnb.bench.mps_aer < request.json > result.json``.  The request
holds ``pairs`` (P, 2, n) of feature rows (x, y) already scaled by the
bandwidth, ``reps``, ``entanglement`` ("linear" or "circular") and
``threads``.  Each entry is what a Qiskit user runs: the compute-uncompute
circuit U(y) U(x)^dagger of the ZZ map (the same gates as
``FeatureMap.circuit``), simulated by Aer's MPS method; the amplitude of
|0...0> is saved (``save_amplitudes([0])``), so the entry is exact, with no
shot noise.  It runs in a separate process so that
Aer's BLAS and OpenMP settings never touch the caller's thread pools.

The result: ``values`` (P,) float64 kernel entries, ``build_s`` (circuit
construction), ``run_s`` (``backend.run`` of all circuits
at once, Aer parallelising over them), versions.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np


def zz_circuit(x: np.ndarray, reps: int, entanglement: str):
    """The ZZ feature map of ``FeatureMap(kind="zz")`` on len(x) qubits as a Qiskit circuit (x pre-scaled)."""
    from qiskit import QuantumCircuit

    n = len(x)
    pairs = [(i, i + 1) for i in range(n - 1)]
    if entanglement == "circular" and n > 2:
        pairs.append((n - 1, 0))
    qc = QuantumCircuit(n)
    for _ in range(reps):
        for k in range(n):
            qc.h(k)
            qc.p(2.0 * x[k], k)
        for i, j in pairs:
            qc.cx(i, j)
            qc.p(2.0 * (np.pi - x[i]) * (np.pi - x[j]), j)
            qc.cx(i, j)
    return qc


def main() -> int:
    request = json.load(sys.stdin)
    import qiskit
    import qiskit_aer
    from qiskit_aer import AerSimulator

    pairs = np.asarray(request["pairs"], dtype=np.float64)
    reps, entanglement, threads = int(request["reps"]), request["entanglement"], int(request["threads"])
    backend = AerSimulator(method="matrix_product_state", max_parallel_threads=threads)
    start = time.perf_counter()
    circuits = []
    for x, y in pairs:
        qc = zz_circuit(y, reps, entanglement).compose(zz_circuit(x, reps, entanglement).inverse())
        qc.save_amplitudes([0])
        circuits.append(qc)
    # h, p and cx are Aer's own gates: no transpiling (its default target stops at 63 qubits)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    result = backend.run(circuits).result()
    run_s = time.perf_counter() - start
    values = [float(abs(complex(result.data(k)["amplitudes"][0])) ** 2) for k in range(len(circuits))]
    json.dump({"values": values, "build_s": build_s, "run_s": run_s,
               "versions": {"qiskit": qiskit.__version__, "qiskit-aer": qiskit_aer.__version__}}, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
