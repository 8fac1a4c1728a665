"""The sparse-kernel stage: the task's parameter checks and its pieces (the split over groups, the pool grown by
repetition with noise, the traced memory), one tiny run, the report's section from good and malformed run
folders and in the report's Holm family, the grids, and (slow) the notebook."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qmlnb.lab import grid, runs, stages, tasks
from qmlnb.lab.report import sparse as report
from qmlnb.lab.report import verdicts
from qmlnb.lab.tasks import sparse_kernel as task

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def tiny_run():
    return tasks.sparse_kernel_run(n=60, n_train=40, epochs=1, ks=[4, 8, 500], seeds=[0, 1, 2], threads=1,
                                   pixel_baselines=["logreg_pixels"], progress=False)


# ---------------------------------------------------------------- the task's checks, before any data are read
@pytest.mark.parametrize("bad, match", [
    ({"ks": [0, 8]}, "each of ks"), ({"ks": []}, "ks must be a non-empty list"), ({"labelled": 1.0}, "labelled"),
    ({"seeds": [-1]}, "each of seeds"), ({"n_total": -5}, "n_total"), ({"augment_noise": -0.1}, "augment_noise"),
    ({"umap": "yes"}, "umap"), ({"umap_points": 2}, "umap_points"), ({"neighbours": "annoy"}, "neighbours"),
    ({"pixel_baselines": ["no_such_model"]}, "unknown baselines"),
    ({"pixel_baselines": ["rbf_svm_embeddings"]}, "pixel_baselines must name baselines on pixels"),
    ({"pixel_baselines": "logreg_pixels"}, "baselines must be a sequence"),
])
def test_bad_settings_are_refused_before_the_data_are_read(bad, match):
    with pytest.raises(ValueError, match=match):
        tasks.sparse_kernel_run(**{"dataset": "no-such-data", **bad})


def test_the_grid_loader_refuses_what_the_task_refuses():
    with pytest.raises(ValueError, match="each of parameter 'ks'"):
        task.SPEC.check({"ks": [8, 0]})
    with pytest.raises(ValueError, match="not a known dataset"):
        task.SPEC.check({"dataset": "no-such-data"})
    task.SPEC.check({"ks": [8, 256], "labelled": 0.3, "n_total": 100_000})


def test_the_split_is_drawn_over_groups_so_no_test_image_has_a_labelled_copy():
    y0 = np.array([0] * 10 + [1] * 6)
    groups = np.arange(64) % 16  # 16 originals, 3 noisy copies each
    labelled, test = task.group_split(y0, 0.5, 3, groups)
    assert len(labelled) + len(test) == 64 and not set(labelled) & set(test)
    assert not set(groups[labelled]) & set(groups[test])  # a group is on one side only
    assert np.bincount(y0[np.unique(groups[labelled])]).tolist() == [5, 3]  # stratified over the originals
    other = task.group_split(y0, 0.5, 4, groups)[0]
    assert not np.array_equal(labelled, other)  # another seed, another draw
    with pytest.raises(ValueError, match="each side needs at least 2"):
        task.group_split(y0, 0.05, 0, groups)


class _SumModel:
    """A stand-in QCNN: its embedding of an image is the sum and the mean of its pixels."""

    training = False

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def embed(self, images):
        flat = images.reshape(len(images), -1)
        import torch

        return torch.stack([flat.sum(1), flat.mean(1)], dim=1)


def test_the_pool_grows_by_noisy_copies_of_its_images_each_in_its_originals_group():
    X = np.random.default_rng(0).standard_normal((5, 1, 3, 3)).astype(np.float32)
    E, groups = task.embed_pool(_SumModel(), X, 12, 0.5, seed=0)
    assert E.shape == (12, 2) and groups.tolist() == [0, 1, 2, 3, 4] * 2 + [0, 1]
    assert np.allclose(E[:5, 0], X.reshape(5, -1).sum(1), atol=1e-5)  # the originals come first, untouched
    assert not np.allclose(E[5:10], E[:5], atol=1e-3)  # copies carry noise
    exact, _ = task.embed_pool(_SumModel(), X, 12, 0.0, seed=0)
    assert np.allclose(exact[5:10], exact[:5])  # without noise a copy is its original
    alone, groups = task.embed_pool(_SumModel(), X, 0, 0.5, seed=0)
    assert len(alone) == 5 and groups.tolist() == [0, 1, 2, 3, 4]


def test_measured_reports_the_peak_of_what_the_call_allocated():
    value, seconds, peak = task.measured(lambda: float(np.ones(2_000_000).sum()))  # 16 MB held during the call
    assert value == 2_000_000.0 and seconds >= 0
    assert 15e6 < peak < 40e6
    assert task.measured(lambda: 1)[2] < 1e6


# ---------------------------------------------------------------- one tiny run
def test_one_run_scores_each_model_per_k_and_seed(tiny_run):
    metrics, tables = tiny_run
    table = tables[stages.SPARSE_KERNEL_TABLE]
    assert metrics["task"] == stages.SPARSE_KERNEL and metrics["n_samples"] == 60 and not metrics["augmented"]
    assert metrics["ks"] == [4, 8] and metrics["ks_left_out"] == [500]  # 500 needs more than the pool's 60
    assert metrics["dense"] and metrics["umap"] == "off" and stages.UMAP_TABLE not in tables
    for key in task.SPEC.metrics:
        assert task.SPEC.metric(key).read(metrics) is not None, key
    sparse = table[table["model"].isin(task.SPARSE_MODELS)]
    assert set(zip(sparse["model"], sparse["k"], sparse["seed"])) == {
        (m, k, s) for m in task.SPARSE_MODELS for k in (4, 8) for s in (0, 1, 2)}
    dense = table[table["model"] == task.DENSE_MODEL]
    assert len(dense) == 3 and dense["k"].isna().all() and (dense["nnz"] == 60 ** 2).all()
    assert len(table[table["model"] == "logreg_pixels"]) == 3
    # each seed is one draw of the labelled half; the kernels are built once, so their cost is one per k
    assert (table["n_labelled"] == 30).all() and (table["n_test"] == 30).all()
    assert table.groupby(["model", "k"])["gram_s"].nunique().max() == 1
    quantum = sparse[sparse["kernel"] == "quantum"].groupby("k")["nnz"].first()
    assert 60 * 5 <= quantum[4] <= 60 * 9 and quantum[8] > quantum[4]  # between N (k + 1) and N (2k + 1)
    assert (sparse["peak_mib"] > 0).all() and table["balanced_accuracy"].between(0, 1).all()


# ---------------------------------------------------------------- the report's section
def _save(root: Path, name: str, metrics: dict, tables: dict) -> Path:
    folder = root / "sparse-kernel" / name
    tasks.save_run(folder, {}, {**metrics, "stage": stages.SPARSE_KERNEL_STAGE}, tables)
    runs.write_status(folder, runs.COMPLETE)
    return folder


def _synthetic(gain: float, seeds=range(5), ks=(8, 32)) -> pd.DataFrame:
    """Rows as the task writes them: the quantum models ``gain`` + 0.005 (seed % 3) above their RBF control."""
    setting = {"dataset": "digits", "classes": "3 vs 8", "n_samples": 200, "n_originals": 200, "augmented": False,
               "n_qubits": 4, "bandwidth": 0.5, "neighbours": "exact", "n_train_qcnn": 100, "epochs": 3,
               "labelled": 0.5, "split_seed": 0}
    rows = []
    for seed in seeds:
        noise = 0.01 * ((seed * 7) % 5)
        for k in ks:
            for kernel in task.KERNELS:
                for method in task.METHODS:
                    score = 0.8 + noise + (gain + 0.005 * (seed % 3) if kernel == "quantum" else 0.0) + 0.001 * k
                    rows.append({**setting, "model": f"{kernel}_{method}", "kernel": kernel, "method": method, "k": k,
                                 "seed": seed, "n_labelled": 100, "n_test": 100, "balanced_accuracy": score,
                                 "accuracy": score, "degenerate": False, "unreached": 0.0, "gram_s": 0.01 * k,
                                 "peak_mib": 0.05 * k, "nnz": 200 * (k + 1)})
        rows.append({**setting, "model": task.DENSE_MODEL, "kernel": "quantum", "method": "svm", "k": None,
                     "seed": seed, "n_labelled": 100, "n_test": 100, "balanced_accuracy": 0.85 + noise,
                     "accuracy": 0.85, "degenerate": False, "unreached": 0.0, "gram_s": 0.02, "peak_mib": 0.6,
                     "nnz": 40_000})
    return pd.DataFrame(rows)


def test_the_section_reads_run_folders_and_leaves_out_malformed_files(tmp_path, tiny_run):
    metrics, tables = tiny_run
    good = _save(tmp_path, "good", metrics, tables)
    _save(tmp_path, "garbled", metrics, {})
    (tmp_path / "sparse-kernel" / "garbled" / "sparse_kernel.csv").write_bytes(b"\x00\xff,\"unterminated\n1,2,3,4\n")
    _save(tmp_path, "columns", metrics, {stages.SPARSE_KERNEL_TABLE: pd.DataFrame({"model": ["x"], "k": [8]})})
    _save(tmp_path, "empty", metrics, {})
    (tmp_path / "sparse-kernel" / "empty" / "sparse_kernel.csv").write_text("")
    bad_scores = tables[stages.SPARSE_KERNEL_TABLE].assign(balanced_accuracy="n/a")
    _save(tmp_path, "not-numbers", metrics, {stages.SPARSE_KERNEL_TABLE: bad_scores})
    (tmp_path / "sparse-kernel" / "broken-json").mkdir()
    (tmp_path / "sparse-kernel" / "broken-json" / "metrics.json").write_text("{not json")
    runs.write_status(tmp_path / "sparse-kernel" / "broken-json", runs.COMPLETE)
    with pytest.warns(UserWarning, match="unreadable run"):
        table, problems = report.rows(tmp_path)
    assert set(table["run"]) == {"good"} and len(table) == len(tables[stages.SPARSE_KERNEL_TABLE])
    assert set(table["stage"]) == {stages.SPARSE_KERNEL_STAGE}
    left_out = "\n".join(problems)
    assert all(name in left_out for name in ("garbled", "columns", "empty")) and "no column" in left_out, problems
    summaries = report.budget_tables(table)
    assert len(summaries) == 1 and "60 images, 4 qubits, exact neighbours" in summaries[0].attrs["title"]
    assert good.name == "good"


def test_the_whole_section_shows_with_malformed_files(tmp_path, tiny_run, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from IPython import display as ipython_display

    shown = []
    monkeypatch.setattr(ipython_display, "display", lambda *objects, **_: shown.extend(objects))
    metrics, tables = tiny_run
    _save(tmp_path, "good", metrics, tables)
    _save(tmp_path, "bad-umap", {**metrics, "umap": "drawn"}, {stages.UMAP_TABLE: pd.DataFrame({"x": [1.0]})})
    table, _ = report.rows(tmp_path)
    report.show_section(tmp_path, None, tmp_path / "reports", report.comparisons(table))
    text = "\n".join(getattr(o, "data", "") or "" for o in shown)
    assert "quantum − rbf = " in text and "pip install" in text and "bad-umap" in text and "no column y" in text
    assert (tmp_path / "reports" / "figures" / "sparse_kernel_0.png").is_file()
    assert (tmp_path / "reports" / "tables" / "sparse_kernel_0.csv").is_file()


def test_one_table_per_budget_one_row_per_model_and_k():
    rows = pd.concat([_synthetic(0.02), _synthetic(0.02).assign(n_qubits=6)])
    summaries = report.budget_tables(rows)
    assert len(summaries) == 2
    first = summaries[0]
    assert first["k"].tolist() == ["8"] * 4 + ["32"] * 4 + ["all pairs"]
    assert first["n"].tolist() == [5] * 9 and first["model"].iloc[-1] == task.DENSE_MODEL
    quantum_knn = first[(first["model"] == "quantum_knn") & (first["k"] == "32")].iloc[0]
    assert quantum_knn["balanced accuracy"].startswith(f"{0.8 + 0.02 + 0.032 + 0.02 + 0.004:.3f} ±")
    assert quantum_knn["peak MiB"] == pytest.approx(1.6) and quantum_knn["stored entries"] == 200 * 33
    fig = report.plot_against_k(first)
    accuracy, memory = fig.axes
    assert {line.get_label() for line in accuracy.lines} >= {*task.SPARSE_MODELS, "dense QSVM"}
    drawn = {line.get_label(): line for line in memory.lines}
    assert drawn["quantum sparse kernel"].get_xydata().tolist() == [[8, 0.4], [32, 1.6]]


def test_the_comparisons_say_quantum_minus_rbf_and_join_the_reports_holm_family():
    compared = report.comparisons(_synthetic(0.05))
    against = compared[compared["model"] == report.CONTROL]
    assert len(against) == 4 and set(against["pairs"]) == {5}  # 2 k x 2 methods, each over 5 paired seeds
    assert against["reference_minus_model"].to_numpy() == pytest.approx([0.054] * 4)
    assert all(v == "quantum better" for v in against["verdict"]), against["verdict"].tolist()
    lines = report.sentences(compared)
    assert len(lines) == 4 and all("the quantum kernel is better beyond noise" in line for line in lines)
    family = verdicts.comparison_family(pd.DataFrame(), sparse=compared)
    assert family["sparse_kernel"].attrs["size"] == 4
    assert "sparse_kernel" not in verdicts.comparison_family(pd.DataFrame())
    none = report.sentences(report.comparisons(_synthetic(0.0, seeds=range(3))))
    assert all("no difference beyond noise" in line for line in none)


def test_an_empty_runs_folder_gives_an_empty_section(tmp_path):
    folder = tmp_path / "qsvm" / "run"
    tasks.save_run(folder, {}, {"task": stages.QSVM})
    runs.write_status(folder, runs.COMPLETE)
    table, problems = report.rows(tmp_path)
    assert table.empty and not problems and report.budget_tables(table) == [] and report.comparisons(table).empty
    points, how = report.latest_umap(tmp_path)
    assert points.empty and "pip install" in how


def test_the_explorer_finds_the_newest_umap_picture(tmp_path):
    folder = tmp_path / "interactive" / "sparse-kernel"
    folder.mkdir(parents=True)
    pd.DataFrame({"x": [0.0, 1.0, "bad"], "y": [1.0, 2.0, 3.0], "label": [0, 1, 1],
                  "class_name": ["3", "8", "8"]}).to_csv(folder / "umap.csv", index=False)
    points, where = report.latest_umap(tmp_path)
    assert len(points) == 2 and where == "interactive/sparse-kernel"
    fig = report.plot_umap(points)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["3", "8"]


# ---------------------------------------------------------------- grids
def test_the_small_grid_is_one_cheap_run_and_the_large_one_reaches_100000_samples():
    sweep = grid.load_sweep(ROOT / "params" / "88-sparse-kernel.yaml")
    assert sweep.stage == stages.SPARSE_KERNEL_STAGE and sweep.notebook.name == "70-sparse-kernel.ipynb"
    (point,) = sweep.points  # one notebook start
    assert point["ks"] == [8, 32] and point["seeds"] == [0, 1, 2, 3, 4] and point["umap"] is False
    large = ROOT / "params" / "large" / "sparse-kernel-large.yaml"
    assert large not in set((ROOT / "params").glob("*.yaml"))
    sweep = grid.load_sweep(large)
    assert sweep.stage == stages.SPARSE_KERNEL_STAGE
    ks = sorted({k for p in sweep.points for k in p["ks"]})
    assert ks[0] == 8 and ks[-1] == 256
    assert {p.get("n_total", 0) for p in sweep.points} == {0, 100_000}
    assert any(p.get("umap") for p in sweep.points)
    assert any("umap_logreg_pixels" in p.get("pixel_baselines", []) for p in sweep.points)


# ---------------------------------------------------------------- the notebook
@pytest.mark.slow  # a papermill run of the stage's notebook (a kernel start and one tiny training)
def test_the_sparse_kernel_notebook_runs_with_tiny_parameters(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill", reason="runs the notebook")

    notebook = ROOT / "notebooks" / "70-sparse-kernel.ipynb"
    out, folder = tmp_path / "out.ipynb", tmp_path / "run"
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(folder))  # the kernel inherits it: the run is written there
    papermill.execute_notebook(str(notebook), str(out), cwd=str(tmp_path), kernel_name="python3", progress_bar=False,
                               parameters={"n": 50, "n_train": 40, "epochs": 1, "ks": [4], "seeds": [0, 1],
                                           "threads": 1, "n_total": 80, "augment_noise": 0.2})
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["task"] == stages.SPARSE_KERNEL and metrics["n_samples"] == 80 and metrics["augmented"]
    table = pd.read_csv(folder / "sparse_kernel.csv")
    assert set(table["k"].dropna()) == {4} and set(table["seed"]) == {0, 1}
    assert "no UMAP picture: off" in out.read_text()
