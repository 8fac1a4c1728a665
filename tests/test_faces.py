"""qcnn and qsvm have curated public faces like kernels and data, imported on first use."""
from __future__ import annotations

import subprocess
import sys

import pytest

import qmlnb.qcnn
import qmlnb.qsvm


@pytest.mark.parametrize("package", [qmlnb.qcnn, qmlnb.qsvm])
def test_every_public_name_resolves_to_its_module(package):
    for name in package.__all__:
        value = getattr(package, name)
        assert getattr(value, "__module__", package.__name__).startswith("qmlnb") or not callable(value), name
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        package.nope  # noqa: B018 - the attribute access is the test


def test_the_sweeps_thread_settings_do_not_import_torch():
    code = "import sys; from qmlnb.qcnn.determinism import THREAD_ENV_VARS; import qmlnb.qsvm; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    from qmlnb.qcnn import TrainConfig
    from qmlnb.qcnn.train import TrainConfig as direct

    assert TrainConfig is direct
