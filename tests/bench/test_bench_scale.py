"""`python -m qmlnb bench scale` on a tiny case: every section runs and its JSON holds what the docs quote."""
import json

import numpy as np
import pytest

from qmlnb.bench.scale import cifar_with_mirrors
from qmlnb.cli import main

pytestmark = pytest.mark.timeout(300)


def test_cifar_with_mirrors_pairs_each_image_with_its_mirror(shared_data):
    X, y, source = cifar_with_mirrors(4, 60, shared_data)
    assert X.shape == (60, 4) and X.min() >= 0.0 and X.max() <= 1.0
    np.testing.assert_array_equal(source, np.r_[np.arange(30), np.arange(30)])
    np.testing.assert_array_equal(y[:30], y[30:])
    assert not np.allclose(X[:30], X[30:])  # a mirror is another sample, not a copy
    with pytest.raises(SystemExit, match="needs 10001 CIFAR-10 images"):
        cifar_with_mirrors(4, 20_002, shared_data)


def test_bench_scale_writes_every_section(tmp_path, shared_data):
    out = tmp_path / "scale.json"
    assert main(["bench", "scale", "--n", "300", "--tile", "64", "--baseline-n", "100", "--n-qubits", "4",
                 "--dask-n", "200", "--dask-tile", "64", "--rounds", "1", "--nystrom-n", "200", "--nystrom-m", "10,40",
                 "--data-dir", str(shared_data), "--work-dir", str(tmp_path), "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    disk = result["disk"]
    assert disk["n"] == 300 and disk["max_abs_error_vs_in_memory_64x64"] < 1e-6 and disk["peak_rss_gib"] > 0
    dask = result["dask"]
    for mode in ("single_process", "memory", "file", "network"):
        assert len(dask[mode]["speedup_two_vs_one"]) == 1 and dask[mode]["median_speedup"] > 0
        # both sides in the same rounds: the speedup pairs them, and the load they shared is recorded
        one, two = dask[mode]["timing"].values()
        assert dask[mode]["speedup_two_vs_one"][0] == pytest.approx(one["times_s"][0] / two["times_s"][0])
        assert one["load_before"] == two["load_before"] and isinstance(dask[mode]["noisy"], bool)
    assert set(disk["timing"]) == {"to_disk", "baseline_in_memory", "baseline_to_disk"}
    assert disk["timing"]["to_disk"]["median_s"] == disk["seconds"] and disk["timing"]["to_disk"]["n"] == 1
    nystrom = result["nystrom"]
    assert (nystrom["n"], nystrom["n_train"] + nystrom["n_test"]) == (200, 200)
    errors = [nystrom["nystrom_linear_svm"][m]["relative_frobenius_error"] for m in ("10", "40")]
    assert 0 < errors[1] < errors[0] < 1  # more landmarks, smaller error
    assert 0 <= nystrom["exact_svc_accuracy"] <= 1
    assert list(tmp_path.iterdir()) == [out]  # the Gram files were removed
