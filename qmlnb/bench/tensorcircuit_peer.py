"""The same feature-map states (and kernel) with TensorCircuit-NG on JAX: ``vmap`` + ``jit`` of the circuit.

A peer for ``bench gram --peers tensorcircuit``: the ZZ map's gates exactly as
``FeatureMap.circuit`` applies them (H, P(2 x_k), CNOT-P-CNOT per pair), one
``tc.Circuit`` per sample, vectorised over samples by ``jax.vmap`` and compiled
by ``jax.jit`` in complex64.  TensorCircuit-NG and JAX are imported only here
(``pip install .[compare]``).
"""
from __future__ import annotations

import numpy as np

from ..kernels import FeatureMap


def tensorcircuit_functions(fm: FeatureMap):
    """(states, states_and_gram): jitted JAX functions of X (N, n) float32 -> (N, 2**n) complex64 / (N, N) float32.

    ``states_and_gram`` returns ``|S S^H|^2`` of the same states inside the
    same compiled function (what a TensorCircuit-NG user would run).
    """
    if fm.kind != "zz":
        raise ValueError(f"the TensorCircuit-NG peer builds the ZZ map only, got kind={fm.kind!r}")
    import jax
    import jax.numpy as jnp
    import tensorcircuit as tc

    tc.set_backend("jax")
    tc.set_dtype("complex64")
    n, reps, pairs = fm.n_qubits, fm.reps, fm.pairs

    def state(x):
        x = x * fm.bandwidth
        c = tc.Circuit(n)
        for _ in range(reps):
            for k in range(n):
                c.h(k)
                c.phase(k, theta=2.0 * x[k])
            for i, j in pairs:
                c.cnot(i, j)
                c.phase(j, theta=2.0 * (jnp.pi - x[i]) * (jnp.pi - x[j]))
                c.cnot(i, j)
        return c.state()

    states = jax.jit(jax.vmap(state))

    @jax.jit
    def states_and_gram(X):
        S = jax.vmap(state)(X)
        return jnp.abs(S @ S.conj().T) ** 2

    return states, states_and_gram


def versions() -> dict:
    import importlib.metadata

    return {name: importlib.metadata.version(name) for name in ("tensorcircuit-ng", "jax", "jaxlib")}


def to_numpy(value) -> np.ndarray:
    """A JAX result as NumPy, after the computation has finished (``block_until_ready``)."""
    return np.asarray(value.block_until_ready())
