"""qcnn, qsvm and the lab's tasks have curated public faces like kernels and data, imported on first use."""
from __future__ import annotations

import json
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


def test_the_tasks_face_imports_a_task_module_only_when_asked(tmp_path):
    # a notebook that only records a run (the sweep's toy notebooks, a light stage) starts in under a second: no
    # task module, scikit-learn or SciPy's statistics, and no torch only to learn that there is no GPU
    code = ("import json, sys; from qmlnb.lab import provenance, tasks; "
            f"tasks.save_run({str(tmp_path / 'run')!r}, {{'a': 1}}, {{'stage': 'toy'}}); "
            "heavy = sorted(m for m in ('sklearn', 'torch', 'scipy.stats', 'qmlnb.lab.tasks.qsvm') "
            "if m in sys.modules); "
            "no_driver = provenance._no_gpu_driver(); import torch; "
            "seen = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] "
            "if torch.cuda.is_available() else []; print(json.dumps([heavy, seen, no_driver]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy, seen, no_driver = json.loads(out.stdout)
    assert heavy == ([] if no_driver else ["torch"])  # torch only where a driver could show it a device
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())["environment"]["machine"]["gpus"]
    assert recorded == seen  # the recorded devices are torch's all the same
    from qmlnb.lab import tasks
    from qmlnb.lab.tasks import qsvm as qsvm_task

    assert tasks.qsvm_run is qsvm_task.qsvm_run and tasks.qsvm is qsvm_task
    for name in ("explore", "kernels_at_scale", "shots_study", "FEATURES", "REGISTRY", "sparse_kernel_run"):
        assert getattr(tasks, name) is not None and name in dir(tasks)
    # every task declared, in one place
    assert {spec.name for spec in tasks.SPECS.values()} == {getattr(tasks, m).SPEC.name for m in tasks.TASK_MODULES}
    assert tasks.spec_of_notebook("elsewhere/20-qsvm.ipynb") is tasks.SPECS["qsvm"]
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        tasks.nope  # noqa: B018 - the attribute access is the test
