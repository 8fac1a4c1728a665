"""Backends declare what they compute (states, mps, out, client); the registry holds the one usability check."""
from __future__ import annotations

import importlib

import numpy as np
import pytest

from qmlnb.kernels import FeatureMap, gram, registry
from qmlnb.lab import runs, sweep
from qmlnb.lab.tasks import common


@pytest.mark.parametrize("name", list(registry.BACKENDS))
def test_every_backend_declares_its_capabilities_and_they_match_its_kernels(name):
    module = importlib.import_module(registry.BACKENDS[name])
    assert set(module.CAPABILITIES) <= set(registry.CAPABILITIES) and "states" in module.CAPABILITIES
    assert registry.supports(name, "mps") == callable(getattr(module, "gram_mps", None))


def test_supports_refuses_an_unknown_capability_or_backend():
    with pytest.raises(ValueError, match=r"capability must be one of \('states', 'mps', 'out', 'client', 'upper', 'mps_norms'\), got 'gpu'"):
        registry.supports("cpu", "gpu")
    with pytest.raises(registry.UnknownBackendError, match="unknown Gram backend 'tpu'"):
        registry.supports("tpu", "mps")


def test_an_mps_on_a_backend_without_the_capability_is_refused_by_its_declaration(monkeypatch):
    module = importlib.import_module(registry.BACKENDS["cpu"])
    monkeypatch.setattr(module, "CAPABILITIES", frozenset({"states", "out", "client"}))
    M = FeatureMap(n_qubits=3, reps=1).mps(np.linspace(0, 1, 6).reshape(2, 3))
    with pytest.raises(ValueError, match="backend='cpu' has no MPS kernel"):
        gram(M, backend="cpu")


def test_the_skip_of_the_sweep_and_of_a_task_quote_the_registrys_one_sentence(monkeypatch):
    module = importlib.import_module(registry.BACKENDS["numba"])
    monkeypatch.setattr(module, "probe", lambda: (False, "no JIT here"))
    sentence = "Gram backend 'numba' cannot run here: no JIT here"
    assert registry.unusable_reason("numba") == sentence and registry.unusable_reason("cpu") is None
    assert sweep.backend_unusable({"backend": "numba"}) == sentence
    with pytest.raises(runs.RunSkipped) as caught:
        common.check_backend("numba")
    assert runs.skip_reason(str(caught.value)) == sentence  # what the sweep reads back from the notebook's error
    with pytest.raises(registry.BackendUnavailableError, match=f"^{sentence}. To enable it: "):
        registry.get_backend("numba")


def test_a_subclass_of_run_skipped_is_a_skip_and_other_errors_are_not():
    class NoData(runs.RunSkipped):
        pass

    assert runs.skip_reason(str(NoData("no files"))) == "no files"
    assert runs.skip_reason(str(RuntimeError("no files"))) is None and runs.skip_reason(None) is None


def test_gram_to_disk_without_dask_does_not_import_the_dask_module(tmp_path):
    import subprocess
    import sys

    code = ("import sys, numpy as np; from qmlnb.kernels import FeatureMap, gram\n"
            "S = FeatureMap(n_qubits=3, reps=1).states(np.linspace(0, 1, 12).reshape(4, 3))\n"
            f"K = gram(S, out={str(tmp_path / 'K.npy')!r}, backend='cpu')\n"
            "print('qmlnb.kernels.distributed' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
