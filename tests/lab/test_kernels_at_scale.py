"""Kernels at scale: pixel downsampling, the PCA cap, the task on tiny digits (state vectors and MPS), the
report's section from fabricated run folders, and the grids."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qmlnb.data.resample import area_downsample, area_weights, pixel_side
from qmlnb.data import angles
from qmlnb.lab import grid, runs, stages, tasks
from qmlnb.lab.report import load_runs, scale
from qmlnb.qsvm.baselines import RBF_GAMMA_FACTORS
from qmlnb.qsvm.diagnostics import at_grid_edge
from qmlnb.qsvm.pipeline import run_kernel_comparison
from qmlnb.qsvm.svm import DEFAULT_BANDWIDTHS, scaled_bandwidths

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- pixels
def test_area_downsample_averages_boxes_and_keeps_a_full_size_image():
    images = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    small = area_downsample(images, 2)
    assert small.shape == (2, 1, 2, 2) and small.dtype == np.float64
    expected = images.reshape(2, 1, 2, 2, 2, 2).mean(axis=(3, 5))  # 2 x 2 block means
    np.testing.assert_allclose(small, expected)
    np.testing.assert_allclose(area_downsample(images, 4), images)  # side = H: the image itself


def test_area_weights_cover_every_pixel_once_when_the_side_does_not_divide():
    w = area_weights(28, 5)
    assert w.shape == (5, 28)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    np.testing.assert_allclose(w.sum(axis=0) * 28 / 5, 1.0)  # each input pixel's total share is one output's
    rng = np.random.default_rng(0)
    images = rng.random((3, 1, 28, 28))
    assert area_downsample(images, 5).shape == (3, 1, 5, 5)
    np.testing.assert_allclose(area_downsample(images, 5).mean(axis=(2, 3)), images.mean(axis=(2, 3)))
    with pytest.raises(ValueError, match="at most 28"):
        area_downsample(images, 29)


@pytest.mark.parametrize("n, shape, side", [(16, (28, 28), 4), (784, (28, 28), 28), (64, (8, 8), 8), (1, (8, 8), 1)])
def test_pixel_side_of_a_perfect_square(n, shape, side):
    assert pixel_side(n, *shape) == side


@pytest.mark.parametrize("n, shape, message", [(15, (28, 28), "perfect square; 15 is not .nearest: 9 or 16"),
                                               (81, (8, 8), "8 x 8: at most 64 qubits")])
def test_pixel_side_refuses_what_an_image_cannot_give(n, shape, message):
    with pytest.raises(ValueError, match=message):
        pixel_side(n, *shape)


def test_pixel_angles_one_pixel_per_qubit_on_one_scale():
    rng = np.random.default_rng(1)
    fit, other = rng.normal(size=(6, 1, 8, 8)), rng.normal(size=(4, 1, 8, 8))
    A, B = angles.pixel_angles(fit, other, n_pixels=16)
    assert A.shape == (6, 16) and B.shape == (4, 16)
    assert A.min() == 0.0 and A.max() == pytest.approx(np.pi) and 0 <= B.min() and B.max() <= np.pi
    (raw,) = angles.pixel_angles(fit, n_pixels=64)  # 8 x 8 = the image itself, one global scale
    flat = fit.reshape(6, -1)
    np.testing.assert_allclose(raw, (flat - flat.min()) / (flat.max() - flat.min()) * np.pi)


# ---------------------------------------------------------------- the features' limits
def test_pca_cannot_have_more_components_than_training_images():
    with pytest.raises(ValueError, match=r"min\(n_train, pixels\) = min\(50, 784\) = 50 .*qubits <= 50"):
        tasks.check_scale_features("pca", [4, 64], 50, (1, 28, 28))
    with pytest.raises(ValueError, match=r"min\(200, 64\) = 64"):
        tasks.check_scale_features("pca", [100], 200, (1, 8, 8))
    assert tasks.check_scale_features("pca", [16, 4, 16], 50, (1, 8, 8)) == [4, 16]
    with pytest.raises(ValueError, match="perfect square"):
        tasks.check_scale_features("pixels", [4, 10], 50, (1, 8, 8))
    with pytest.raises(ValueError, match="features must be one of"):
        tasks.check_scale_features("raw", [4], 50, (1, 8, 8))


def test_the_task_refuses_the_pca_cap_before_any_kernel():
    with pytest.raises(ValueError, match=r"features='pca' cannot give n_qubits=\[64\].*min\(40, 64\) = 40"):
        tasks.kernels_at_scale(features=["pixels", "pca"], qubits=[4, 64], n_train=40, progress=False)


def test_seeds_draw_stratified_training_subsets_of_one_split():
    y = np.repeat([0, 1], [60, 40])
    a, b = tasks.take(y, 20, 0), tasks.take(y, 20, 1)
    assert len(a) == len(b) == 20 and not np.array_equal(a, b)
    assert np.bincount(y[a]).tolist() == [12, 8]
    np.testing.assert_array_equal(tasks.take(y, 20, 0), a)
    np.testing.assert_array_equal(tasks.take(y, 0, 0), np.arange(100))  # 0: all
    np.testing.assert_array_equal(tasks.take(y, 500, 3), np.arange(100))


# ---------------------------------------------------------------- the task on tiny digits
@pytest.fixture(scope="module")
def tiny():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the kernel diagnostics' warnings; they are recorded in the table
        return tasks.kernels_at_scale(dataset="digits", features=["pca", "pixels"], qubits=[4, 25], n_train=40,
                                      n_test=30, backend="cpu", threads=1, seed=1, progress=False)


def test_the_task_uses_state_vectors_then_the_mps(tiny):
    metrics, tables = tiny
    table = tables[stages.SCALE_TABLE]
    assert list(zip(table["features"], table["n_qubits"])) == [("pca", 4), ("pca", 25), ("pixels", 4),
                                                               ("pixels", 25)]
    assert list(table["method"]) == ["statevector", "mps", "statevector", "mps"]  # auto: MPS beyond 20 qubits
    assert metrics["task"] == stages.SCALE and metrics["methods_used"] == ["mps", "statevector"]
    assert set(table["n_train"]) == {40} and set(table["n_test"]) == {30} and set(table["seed"]) == {1}
    assert set(table["method_requested"]) == {"auto"}
    for model in ("qsvm", "rbf"):
        assert table[f"{model}_balanced_accuracy"].between(0, 1).all()
    np.testing.assert_allclose(table["difference"], table["qsvm_balanced_accuracy"] - table["rbf_balanced_accuracy"])
    # the default rule, "scaled": the default grid at 4 qubits, extended by sqrt(8 / 25) at 25
    assert set(table["bandwidth_rule"]) == {"scaled"} and metrics["bandwidth_rule"] == "scaled"
    for _, row in table.iterrows():
        grid = scaled_bandwidths(row["n_qubits"])
        assert row["bandwidth_grid"] == " ".join(f"{b:g}" for b in grid)
        assert row["bandwidth_grid_min"] == min(grid) and any(math.isclose(row["bandwidth"], b) for b in grid)
        assert row["bandwidth_at_grid_edge"] == at_grid_edge(row["bandwidth"], grid)
    assert table["bandwidth_grid"].iloc[0] == " ".join(f"{b:g}" for b in DEFAULT_BANDWIDTHS)
    assert all(any(math.isclose(f, g) for g in RBF_GAMMA_FACTORS) for f in table["rbf_gamma_factor"])
    assert table["off_diagonal_std"].gt(0).all() and table["gaussian_correlation"].between(-1, 1).all()
    assert (table["gram_s"] > 0).all() and (table["gram_per_bandwidth_s"] < table["gram_s"]).all()
    assert metrics["per_n"]["pixels:25"]["method"] == "mps"


def test_the_mps_gives_the_state_vector_result_at_few_qubits(tiny):
    _, tables = tiny
    auto = tables[stages.SCALE_TABLE].set_index(["features", "n_qubits"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, forced = tasks.kernels_at_scale(dataset="digits", features="pca", qubits=[4], n_train=40, n_test=30,
                                           backend="cpu", threads=1, seed=1, method="mps", progress=False)
    row = forced[stages.SCALE_TABLE].iloc[0]
    assert row["method"] == "mps"
    reference = auto.loc[("pca", 4)]
    assert row["bandwidth"] == reference["bandwidth"] and row["C"] == reference["C"]
    assert row["qsvm_balanced_accuracy"] == reference["qsvm_balanced_accuracy"]
    assert row["off_diagonal_std"] == pytest.approx(reference["off_diagonal_std"], abs=1e-5)
    assert row["rbf_balanced_accuracy"] == reference["rbf_balanced_accuracy"]  # same features, same control


def test_the_comparison_searches_the_bandwidths_it_is_given():
    rng = np.random.default_rng(0)
    X, y = rng.uniform(0, np.pi, (40, 4)), np.repeat([0, 1], 20)
    X[y == 1, :2] += 0.8  # a little signal
    grid = (0.03, 0.3, 3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qsvm = run_kernel_comparison(X[::2], y[::2], X[1::2], y[1::2], cv=3, bandwidths=grid)["qsvm"]
    assert qsvm["params"]["bandwidths"] == list(grid) and qsvm["params"]["bandwidth"] in grid
    assert set(qsvm["params"]["alignments"]) == {str(b) for b in grid}
    assert qsvm["diagnostics"]["bandwidth_grid"] == list(grid)
    assert qsvm["diagnostics"]["bandwidth_at_grid_edge"] == at_grid_edge(qsvm["params"]["bandwidth"], grid)


@pytest.fixture(scope="module")
def rules():
    """Pixels of tiny digits at 9 and 64 qubits (the MPS) with the scaled grid, at 9 with the default one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {rule: tasks.kernels_at_scale(dataset="digits", features="pixels", qubits=qubits, n_train=40,
                                             n_test=30, backend="cpu", threads=1, seed=1, progress=False,
                                             bandwidth_rule=rule)
                for rule, qubits in (("scaled", [9, 64]), ("default", [9]))}


def test_the_scaled_rule_searches_the_extended_grid_at_64_qubits(rules):
    metrics, tables = rules["scaled"]
    row = tables[stages.SCALE_TABLE].set_index("n_qubits").loc[64]
    grid = scaled_bandwidths(64)
    assert row["method"] == "mps" and row["bandwidth_rule"] == "scaled" and metrics["bandwidth_rule"] == "scaled"
    assert row["bandwidth_grid"] == " ".join(f"{b:g}" for b in grid) and len(grid) == 16
    assert row["bandwidth_grid_min"] == pytest.approx(0.02 * math.sqrt(8 / 64))  # below the default grid's 0.02
    assert any(math.isclose(row["bandwidth"], b) for b in grid)
    # the edge flag and its warning are against the grid searched, not the default one
    assert row["bandwidth_at_grid_edge"] == at_grid_edge(row["bandwidth"], grid)
    assert ("at the edge of its grid [0.00707107 .. 1]" in row["warnings"]) == row["bandwidth_at_grid_edge"]
    assert metrics["per_n"]["pixels:64"]["bandwidth_grid_min"] == row["bandwidth_grid_min"]


def test_the_default_rule_keeps_the_default_grid_and_is_its_own_setting(rules):
    metrics, tables = rules["default"]
    row = tables[stages.SCALE_TABLE].iloc[0]
    assert row["bandwidth_rule"] == "default" and metrics["bandwidth_rule"] == "default"
    assert row["bandwidth_grid"] == " ".join(f"{b:g}" for b in DEFAULT_BANDWIDTHS) and row["bandwidth_grid_min"] == 0.02
    scaled_nine = rules["scaled"][1][stages.SCALE_TABLE].iloc[:1]
    assert scaled_nine["bandwidth_grid_min"].iloc[0] < 0.02  # 9 > 8 qubits: the scaled grid goes lower
    summary = scale.scale_summary(pd.concat([tables[stages.SCALE_TABLE], scaled_nine], ignore_index=True))
    assert sorted(zip(summary["bandwidth_rule"], summary["n"])) == [("default", 1), ("scaled", 1)]
    assert dict(zip(summary["bandwidth_rule"], summary["bandwidth_grid_min"])) == {"default": "0.02",
                                                                                   "scaled": "0.0188562"}
    labels = [label for label, _ in scale.settings(summary)]
    assert any("bandwidth_rule=default" in label for label in labels)
    assert any("bandwidth_rule=scaled" in label for label in labels)
    assert "grid's smallest bandwidth" in scale.display_table(summary)


def test_an_unknown_bandwidth_rule_is_refused_before_any_work():
    with pytest.raises(ValueError, match=r"bandwidth_rule must be one of \('scaled', 'default'\), got 'wide'"):
        tasks.kernels_at_scale(dataset="no-such-dataset", qubits=[4], bandwidth_rule="wide", progress=False)


# ---------------------------------------------------------------- the report from fabricated runs
def scale_run(runs_dir, seed, rows, features="pca", n_train=100, dataset="digits", requested="auto"):
    """A complete kernels-at-scale run: rows are (n, method, qsvm, rbf, off_std, gauss, bandwidth, edge)."""
    table = pd.DataFrame([
        {"dataset": dataset, "classes": "3 vs 8", "features": features, "n_train": n_train, "n_test": 71, "reps": 2,
         "method_requested": requested, "backend": "cpu", "threads": 1, "seed": seed, "split_seed": 0, "n_qubits": n,
         "method": method,
         "qsvm_balanced_accuracy": q, "rbf_balanced_accuracy": r, "difference": q - r, "off_diagonal_std": s,
         "gaussian_correlation": g, "bandwidth": b, "bandwidth_at_grid_edge": edge, "concentrated": s < 0.01,
         "gaussian_like": g > 0.99, "rbf_gamma_factor": 1.0, "gram_s": 0.1 * n}
        for n, method, q, r, s, g, b, edge in rows])
    params = {"dataset": dataset, "features": [features], "seed": seed, "n_train": n_train, "method": requested}
    folder = runs_dir / "kernels-at-scale" / runs.run_name(params)
    tasks.save_run(folder, params, {"task": stages.SCALE, "stage": stages.KERNELS_AT_SCALE, "dataset": dataset},
                   {stages.SCALE_TABLE: table})
    runs.write_status(folder, runs.COMPLETE, point=params)
    return folder


# pca, 5 seeds: the RBF wins at n = 4 on every seed (0.10 +- 0.01, beyond noise); at n = 64 the differences are
# +0.02, -0.03, +0.01, -0.01, +0.01 (no measurable difference), the kernel concentrated on one seed and its bandwidth at the grid's edge on all.
PCA = {0: [(4, "statevector", 0.80, 0.90, 0.2, 0.90, 0.1, False), (64, "mps", 0.85, 0.83, 0.02, 0.995, 0.02, True)],
       1: [(4, "statevector", 0.82, 0.91, 0.2, 0.92, 0.2, False), (64, "mps", 0.81, 0.84, 0.005, 0.992, 0.02, True)],
       2: [(4, "statevector", 0.79, 0.90, 0.2, 0.91, 0.1, False), (64, "mps", 0.86, 0.85, 0.03, 0.994, 0.02, True)],
       3: [(4, "statevector", 0.80, 0.91, 0.2, 0.91, 0.1, False), (64, "mps", 0.83, 0.84, 0.02, 0.994, 0.02, True)],
       4: [(4, "statevector", 0.81, 0.90, 0.2, 0.91, 0.1, False), (64, "mps", 0.84, 0.83, 0.03, 0.994, 0.02, True)]}


@pytest.fixture
def fabricated(tmp_path):
    for seed, rows in PCA.items():
        scale_run(tmp_path, seed, rows)
        # pixels: the quantum kernel wins at n = 16 on every seed
        scale_run(tmp_path, seed, [(16, "statevector", 0.95 + 0.01 * seed, 0.90 + 0.012 * seed, 0.1, 0.9, 0.35, False)],
                  features="pixels")
    # another training size: its own setting, never pooled with the 100-image runs
    scale_run(tmp_path, 0, [(4, "statevector", 0.5, 0.6, 0.2, 0.9, 0.1, False)], n_train=200)
    # a QSVM run of another task is not part of the section
    folder = tmp_path / "qsvm" / "run"
    tasks.save_run(folder, {}, {"task": stages.QSVM, "qsvm": {"balanced_accuracy": 0.9}})
    runs.write_status(folder, runs.COMPLETE)
    return tmp_path


def test_summary_pools_seeds_only_with_the_paired_difference(fabricated):
    rows = scale.scale_rows(fabricated, load_runs(fabricated))
    assert len(rows) == 5 * 3 + 1 and set(rows["stage"]) == {stages.KERNELS_AT_SCALE}
    summary = scale.scale_summary(rows)
    assert len(summary) == 4  # pca n=4, pca n=64, pixels n=16 (100 images), pca n=4 (200 images)
    pca = summary[(summary["features"] == "pca") & (summary["n_train"] == 100)].set_index("n_qubits")
    four = pca.loc[4]
    assert four["n"] == 5 and four["method"] == "statevector"
    qsvm4 = [0.8, 0.82, 0.79, 0.80, 0.81]
    assert four["qsvm"] == pytest.approx(np.mean(qsvm4)) and four["qsvm_std"] == pytest.approx(np.std(qsvm4, ddof=1))
    assert four["rbf"] == pytest.approx(np.mean([0.90, 0.91, 0.90, 0.91, 0.90]))
    assert four["difference"] == pytest.approx(-0.1) and four["ci_high"] < 0
    assert four["verdict"] == "RBF better" and four["bandwidth"] == "0.1, 0.2" and four["flags"] == ""
    big = pca.loc[64]
    assert big["method"] == "mps" and big["verdict"] == "no measurable difference" and big["ci_low"] < 0 < big["ci_high"]
    assert big["difference"] == pytest.approx(0.0)
    assert big["off_diagonal_std"] == pytest.approx((0.02 + 0.005 + 0.03 + 0.02 + 0.03) / 5)
    assert big["flags"] == ("concentrated (1 of 5 runs); Gaussian-like (5 of 5 runs); "
                            "bandwidth at its grid's edge (5 of 5 runs)")
    alone = summary[summary["n_train"] == 200].iloc[0]
    assert alone["n"] == 1 and alone["qsvm"] == 0.5 and math.isnan(alone["ci_low"])
    assert alone["verdict"] == "one paired seed: no interval"


def test_sentences_say_beats_matches_or_loses_per_setting(fabricated):
    summary = scale.scale_summary(scale.scale_rows(fabricated))
    sentences = scale.scale_sentences(summary)
    assert len(sentences) == 3
    by_kind = {("pixels" if "pixels features" in k else "200" if "n_train=200" in k else "pca"): v
               for k, v in sentences.items()}
    assert by_kind["pca"].startswith("The quantum kernel loses to the RBF SVM: it matches it within noise at n = 64; "
                                     "it loses to it beyond noise at n = 4")
    assert "paired over 5 seeds, Holm-corrected interval" in by_kind["pca"]
    assert by_kind["pixels"].startswith("The quantum kernel beats the RBF SVM: it beats the RBF SVM beyond noise at "
                                        "n = 16")
    assert by_kind["200"].startswith("One seed per qubit count (n = 4): no interval")
    labels = [label for label, _ in scale.settings(summary)]
    # runs recorded before the bandwidth rule existed searched the default grid
    assert "digits 3 vs 8, pca features (n_train=100, n_test=71, reps=2, method_requested=auto, " \
           "bandwidth_rule=default, backend=cpu, threads=1, split_seed=0) [kernels-at-scale]" in labels


def test_the_section_joins_the_reports_holm_family(fabricated):
    from qmlnb import stats
    from qmlnb.lab.report import verdicts
    from test_report_verdicts import synthetic_runs

    alone = scale.scale_summary(scale.scale_rows(fabricated))
    tested = alone["p_value"].notna()
    # alone: the section's 3 comparisons with an interval are one family; the shown interval is at its Holm level
    assert tested.sum() == 3 and sorted(alone.loc[tested, "level"]) == pytest.approx(
        sorted(1 - stats.ALPHA / k for k in (1, 2, 3)))
    own = verdicts.comparison_family(load_runs(fabricated), alone)
    assert own["kernels_at_scale"].attrs["size"] == 3
    pd.testing.assert_frame_equal(own["kernels_at_scale"], alone, check_like=True)
    # the same runs beside other comparisons (the final stage's QCNN and QSVM controls): one family of m > 3,
    # every corrected interval of the section at least as wide, and some strictly wider
    synthetic_runs(fabricated)
    family = verdicts.comparison_family(load_runs(fabricated), alone)
    joined = family["kernels_at_scale"]
    m = family["kernels_at_scale"].attrs["size"]
    assert m == family["qcnn_controls"].attrs["size"] > 3
    width = lambda t: (t["ci_high"] - t["ci_low"])[tested]  # noqa: E731
    assert (width(joined) >= width(alone) - 1e-12).all() and (width(joined) > width(alone) + 1e-6).any()
    assert (joined.loc[tested, "level"] > alone.loc[tested, "level"]).any()
    assert (joined["p_holm"][tested] >= alone["p_holm"][tested]).all()
    # the differences themselves do not change, only their intervals and verdicts
    pd.testing.assert_series_equal(joined["difference"], alone["difference"])
    assert scale.scale_sentences(joined).keys() == scale.scale_sentences(alone).keys()


def test_a_forced_method_is_its_own_setting(tmp_path):
    for seed in (0, 1):
        scale_run(tmp_path, seed, [(4, "statevector", 0.8, 0.9, 0.2, 0.9, 0.1, False)])
        scale_run(tmp_path, seed, [(4, "mps", 0.8, 0.9, 0.2, 0.9, 0.1, False)], requested="mps")
    summary = scale.scale_summary(scale.scale_rows(tmp_path))
    assert sorted(zip(summary["method_requested"], summary["method"], summary["n"])) == [
        ("auto", "statevector", 2), ("mps", "mps", 2)]


def test_display_table_and_plot(fabricated):
    from qmlnb.lab.report import to_html

    summary = scale.scale_summary(scale.scale_rows(fabricated))
    (label, rows), *_ = scale.settings(summary)
    shown = scale.display_table(rows)
    assert "dataset" not in shown and list(shown["qubits"]) == sorted(shown["qubits"])
    html = to_html(shown)
    assert "0.804 ± 0.011" in html and "QSVM − RBF" in html
    fig = scale.plot_scale(summary)
    assert len(fig.axes) == 3 * 3
    assert all(ax.get_xscale() == "log" for ax in fig.axes)
    assert fig.axes[0].get_ylabel() == "test balanced accuracy"


def test_no_scale_runs_give_an_empty_section(tmp_path):
    folder = tmp_path / "qsvm" / "run"
    tasks.save_run(folder, {}, {"task": stages.QSVM})
    runs.write_status(folder, runs.COMPLETE)
    rows = scale.scale_rows(tmp_path)
    assert rows.empty and scale.scale_summary(rows).empty and scale.scale_sentences(scale.scale_summary(rows)) == {}


# ---------------------------------------------------------------- the grids
def test_the_small_grid_is_in_make_report_and_fits_both_datasets():
    sweep = grid.load_sweep(ROOT / "params" / "58-kernels-at-scale.yaml")
    assert sweep.stage == stages.KERNELS_AT_SCALE and sweep.notebook.name == "40-kernels-at-scale.ipynb"
    assert {p["seed"] for p in sweep.points} == {0, 1, 2} and {p["split_seed"] for p in sweep.points} == {0}
    for point in sweep.points:
        for kind in point["features"]:  # digits' 8 x 8 images are the tightest case
            tasks.check_scale_features(kind, point["qubits"], point["n_train"], (1, 8, 8))
        assert max(point["qubits"]) > 20  # the MPS path runs in make report too
        assert point["bandwidth_rule"] == "scaled"  # its own run folders, apart from runs of the default grid


def test_the_large_grid_loads_outside_make_reports_grids():
    path = ROOT / "params" / "large" / "kernels-at-scale-large.yaml"
    assert path not in set((ROOT / "params").glob("*.yaml"))  # the Makefile's GRIDS: params/*.yaml
    sweep = grid.load_sweep(path)
    assert sweep.stage == stages.KERNELS_AT_SCALE and sweep.notebook == ROOT / "notebooks" / "40-kernels-at-scale.ipynb"
    assert max(max(p["qubits"]) for p in sweep.points) == 784 and min(min(p["qubits"]) for p in sweep.points) == 4
    assert {k for p in sweep.points for k in p["features"]} == {"pca", "pixels"}
    assert len({p["seed"] for p in sweep.points}) >= 3
    assert {p["bandwidth_rule"] for p in sweep.points} == {"scaled"}
    for point in sweep.points:
        for kind in point["features"]:
            tasks.check_scale_features(kind, point["qubits"], point["n_train"], (1, 28, 28))
