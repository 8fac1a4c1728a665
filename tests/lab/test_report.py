"""The report: tables from run folders only, refusal without runs, and one smoke sweep to HTML checked in Chromium.

The fake runs below vary every parameter the report groups or matches by (dataset, n_train, folds, threads, mode,
backend, n_qubits, N), and the tests check the values of the tables' rows, so a table that groups or matches runs on
the wrong keys gives different numbers and fails.
"""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from qmlnb import cli
from qmlnb.lab import report, runs, stages, sweep, tasks

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def fake_run(runs_dir, grid, name, metrics, status=runs.COMPLETE, params=None, tables=None, stage=None):
    """A run folder as a sweep leaves it; its stage is ``stage``, else the grid's name when that is a stage."""
    folder = runs_dir / grid / name
    stage = stage or (grid if grid in stages.STAGES else None)
    tasks.save_run(folder, params or {}, {**metrics, **({"stage": stage} if stage else {})}, tables)
    runs.write_status(folder, status)
    return folder


def qcnn(mode, train_s, acc=0.8, folds=2, threads=2, dataset="digits", n_train=100, batch_size=16):
    return {"task": "qcnn", "dataset": dataset, "mode": mode, "folds": folds, "threads": threads, "n_train": n_train,
            "batch_size": batch_size,
            "qcnn": {"accuracy": acc, "f1": acc - 0.1, "roc_auc": acc, "balanced_accuracy": acc},
            "timings": {"train_s": train_s}}


def qsvm(backend, gram_s, acc=0.9, dataset="digits", n_train=100, threads=2, train_s=10.0, qcnn_acc=0.8,
         baseline_acc=0.8, baseline_fit_s=0.5):
    def scores(a):
        return {"accuracy": a, "f1": a - 0.1, "roc_auc": a, "balanced_accuracy": a}

    return {"task": "qsvm", "dataset": dataset, "mode": "sequential", "backend": backend, "threads": threads,
            "n_train": n_train, "qcnn": scores(qcnn_acc), "qsvm": scores(acc),
            "timings": {"train_s": train_s, "gram_s": gram_s},
            "baselines": {"rbf_svm_embeddings": {**scores(baseline_acc), "fit_s": baseline_fit_s}}}


def assert_rows(table, keys, expected):
    """``table``'s rows, indexed by ``keys``, are exactly ``expected`` ({key tuple: {column: value}}), to 1e-9."""
    indexed = table.set_index(keys)
    assert indexed.index.is_unique
    assert set(indexed.index) == set(expected)
    for key, values in expected.items():
        got = indexed.loc[key, list(values)].astype(float).to_dict()
        assert got == pytest.approx(values, rel=1e-9, nan_ok=True), key


# QCNN training runs: (name, dataset, n_train, folds, threads, mode, train_s, accuracy)
MODE_RUNS = [
    ("seq", "digits", 100, 2, 2, "sequential", 8.0, 0.80),
    ("seq-again", "digits", 100, 2, 2, "sequential", 10.0, 0.90),  # same point 3 times: median time, mean score
    ("seq-third", "digits", 100, 2, 2, "sequential", 15.0, 0.85),
    ("fold", "digits", 100, 2, 2, "fold-parallel", 5.0, 0.82),
    ("data", "digits", 100, 2, 2, "data-parallel", 4.0, 0.78),
    ("seq-200", "digits", 200, 2, 2, "sequential", 20.0, 0.85),       # other n_train
    ("fold-200", "digits", 200, 2, 2, "fold-parallel", 10.0, 0.86),
    ("seq-1thread", "digits", 100, 2, 1, "sequential", 16.0, 0.80),   # other threads
    ("fold-1thread", "digits", 100, 2, 1, "fold-parallel", 8.0, 0.84),
    ("seq-1fold", "digits", 100, 1, 2, "sequential", 3.0, 0.70),      # other folds
    ("fm-seq", "fashion-mnist", 100, 2, 2, "sequential", 30.0, 0.60),  # other dataset
    ("fm-fold", "fashion-mnist", 100, 2, 2, "fold-parallel", 12.0, 0.62),
]


@pytest.fixture
def mode_runs(tmp_path):
    for name, dataset, n_train, folds, threads, mode, train_s, acc in MODE_RUNS:
        fake_run(tmp_path, "parallel-modes", name, qcnn(mode, train_s, acc, folds, threads, dataset, n_train))
    return report.load_runs(tmp_path)


def test_only_complete_runs_are_read(tmp_path):
    fake_run(tmp_path, "g", "done", qcnn("sequential", 4.0), params={"sizes": [1, 2]})
    fake_run(tmp_path, "g", "broken", qcnn("sequential", 1.0), status=runs.FAILED)
    half = tmp_path / "g" / "half"
    runs.write_status(half, runs.RUNNING)
    (half / "metrics.json").write_text("{half-writ")  # a killed run: never parsed
    frame = report.load_runs(tmp_path)
    assert list(frame["run"]) == ["done"]
    assert frame.loc[0, "timings.train_s"] == 4.0 and frame.loc[0, "param.sizes"] == "[1, 2]"
    assert frame.loc[0, "machine.cores"] >= 1
    overview = report.run_overview(tmp_path)
    assert dict(zip(overview["run"], overview["status"])) == {"broken": "failed", "done": "complete", "half": "running"}


def test_results_table_one_row_per_configuration_with_spread_and_no_cross_run_speedup(mode_runs):
    # repeats of one configuration: mean and sample std of the scores, n, median time; these runs measured no
    # speedup, so none is shown (the sequential runs' time over this one's would divide different runs)
    table = report.results_table(mode_runs)
    assert set(table["model"]) == {"QCNN"}
    assert_rows(table, ["dataset", "variant", "n_train", "folds", "threads"], {
        ("digits", "sequential", 100, 2, 2): {"accuracy": 0.85, "accuracy_std": 0.05, "f1": 0.75, "time_s": 10.0,
                                              "speedup": np.nan, "n": 3},
        ("digits", "fold-parallel", 100, 2, 2): {"accuracy": 0.82, "accuracy_std": np.nan, "time_s": 5.0, "n": 1},
        ("digits", "data-parallel", 100, 2, 2): {"accuracy": 0.78, "time_s": 4.0, "n": 1},
        ("digits", "sequential", 200, 2, 2): {"accuracy": 0.85, "time_s": 20.0, "n": 1},
        ("digits", "fold-parallel", 200, 2, 2): {"accuracy": 0.86, "time_s": 10.0, "n": 1},
        ("digits", "sequential", 100, 2, 1): {"accuracy": 0.80, "time_s": 16.0, "n": 1},
        ("digits", "fold-parallel", 100, 2, 1): {"accuracy": 0.84, "time_s": 8.0, "n": 1},
        ("digits", "sequential", 100, 1, 2): {"accuracy": 0.70, "time_s": 3.0, "n": 1},
        ("fashion-mnist", "sequential", 100, 2, 2): {"accuracy": 0.60, "time_s": 30.0, "n": 1},
        ("fashion-mnist", "fold-parallel", 100, 2, 2): {"accuracy": 0.62, "time_s": 12.0, "n": 1},
    })
    assert table["speedup"].isna().all()


# QSVM runs: (name, dataset, n_train, threads, backend, gram_s, qsvm accuracy, QCNN train_s, baseline accuracy)
QSVM_RUNS = [
    ("cpu", "digits", 100, 2, "cpu", 2.0, 0.90, 10.0, 0.70),
    ("numba", "digits", 100, 2, "numba", 0.5, 0.70, 12.0, 0.90),
    ("cpu-200", "digits", 200, 2, "cpu", 6.0, 0.92, 20.0, 0.75),
    ("numba-200", "digits", 200, 2, "numba", 1.0, 0.93, 22.0, 0.77),
    ("cpu-1thread", "digits", 100, 1, "cpu", 3.0, 0.90, 14.0, 0.70),
    ("openmp-1thread", "digits", 100, 1, "openmp", 1.0, 0.91, 16.0, 0.72),
    ("fm-cpu", "fashion-mnist", 100, 2, "cpu", 10.0, 0.60, 30.0, 0.50),
    ("fm-numba", "fashion-mnist", 100, 2, "numba", 4.0, 0.62, 34.0, 0.52),
]


def test_results_table_qsvm_against_cpu_with_qcnn_and_baseline_rows(tmp_path):
    for name, dataset, n_train, threads, backend, gram_s, acc, train_s, base_acc in QSVM_RUNS:
        metrics = qsvm(backend, gram_s, acc, dataset, n_train, threads, train_s, qcnn_acc=acc - 0.2,
                       baseline_acc=base_acc, baseline_fit_s=train_s / 20)
        cpu_s = next(r[5] for r in QSVM_RUNS if r[1:4] == (dataset, n_train, threads) and r[4] == "cpu")
        if backend != "cpu":  # what the run measured against cpu on its own states
            metrics["timings"]["gram_speedup_vs_cpu"] = measured_speedup(cpu_s / gram_s)
        fake_run(tmp_path, "qsvm", name, metrics)
    table = report.results_table(report.load_runs(tmp_path))
    keys = ["dataset", "model", "variant", "n_train", "folds", "threads"]
    # the speedup each QSVM run measured against cpu (1 for cpu), never the cpu run's time over this one's
    qsvm_rows = {("digits", "QSVM", "cpu", 100, 1, 2): {"accuracy": 0.90, "time_s": 2.0, "speedup": 1.0},
                 ("digits", "QSVM", "numba", 100, 1, 2): {"accuracy": 0.70, "time_s": 0.5, "speedup": measured_speedup(4.0)},
                 ("digits", "QSVM", "cpu", 200, 1, 2): {"accuracy": 0.92, "time_s": 6.0, "speedup": 1.0},
                 ("digits", "QSVM", "numba", 200, 1, 2): {"accuracy": 0.93, "time_s": 1.0, "speedup": measured_speedup(6.0)},
                 ("digits", "QSVM", "cpu", 100, 1, 1): {"accuracy": 0.90, "time_s": 3.0, "speedup": 1.0},
                 ("digits", "QSVM", "openmp", 100, 1, 1): {"accuracy": 0.91, "time_s": 1.0, "speedup": measured_speedup(3.0)},
                 ("fashion-mnist", "QSVM", "cpu", 100, 1, 2): {"accuracy": 0.60, "time_s": 10.0, "speedup": 1.0},
                 ("fashion-mnist", "QSVM", "numba", 100, 1, 2): {"accuracy": 0.62, "time_s": 4.0, "speedup": measured_speedup(2.5)}}
    # each QSVM run trained a sequential QCNN first: two runs per point (one per backend), no speedup measured
    qcnn_rows = {("digits", "QCNN", "sequential", 100, 1, 2):
                 {"accuracy": 0.60, "time_s": 11.0, "speedup": np.nan, "n": 2},
                 ("digits", "QCNN", "sequential", 200, 1, 2):
                 {"accuracy": 0.725, "time_s": 21.0, "speedup": np.nan, "n": 2},
                 ("digits", "QCNN", "sequential", 100, 1, 1):
                 {"accuracy": 0.705, "time_s": 15.0, "speedup": np.nan, "n": 2},
                 ("fashion-mnist", "QCNN", "sequential", 100, 1, 2):
                 {"accuracy": 0.41, "time_s": 32.0, "speedup": np.nan, "n": 2}}
    # the classical baselines of the two runs of one split are averaged; they have no speedup
    baseline_rows = {("digits", "rbf_svm_embeddings", "classical", 100, 1, 2):
                     {"accuracy": 0.80, "f1": 0.70, "time_s": 0.55, "speedup": np.nan, "n": 2},
                     ("digits", "rbf_svm_embeddings", "classical", 200, 1, 2):
                     {"accuracy": 0.76, "time_s": 1.05, "speedup": np.nan, "n": 2},
                     ("digits", "rbf_svm_embeddings", "classical", 100, 1, 1):
                     {"accuracy": 0.71, "time_s": 0.75, "speedup": np.nan, "n": 2},
                     ("fashion-mnist", "rbf_svm_embeddings", "classical", 100, 1, 2):
                     {"accuracy": 0.51, "time_s": 1.6, "speedup": np.nan, "n": 2}}
    assert_rows(table, keys, {**qsvm_rows, **qcnn_rows, **baseline_rows})


def test_training_modes_shows_the_speedup_each_run_measured(tmp_path):
    # (name, mode, train_s, speedup measured in the run): the cross-run ratio 10 / 5 = 2 is never what is shown
    for name, mode, train_s, measured in [("seq", "sequential", 10.0, 1.0), ("fold", "fold-parallel", 5.0, 1.6),
                                          ("fold-again", "fold-parallel", 6.0, 1.4),
                                          ("fold-more", "fold-parallel", 4.0, 1.7), ("data", "data-parallel", 4.0, None)]:
        metrics = qcnn(mode, train_s)
        if measured is not None:
            metrics["speedup_vs_sequential"] = measured
        fake_run(tmp_path, "parallel-modes", name, metrics)
    modes = report.training_modes(report.load_runs(tmp_path))
    assert_rows(modes, ["dataset", "mode", "n_train", "folds", "threads"], {
        ("digits", "sequential", 100, 2, 2): {"train_s": 10.0, "speedup_vs_sequential": 1.0},
        ("digits", "fold-parallel", 100, 2, 2): {"train_s": 5.0, "speedup_vs_sequential": 1.6},  # medians
        ("digits", "data-parallel", 100, 2, 2): {"train_s": 4.0, "speedup_vs_sequential": np.nan},  # none measured
    })


def test_training_modes_groups_by_the_same_work(mode_runs):
    modes = report.training_modes(mode_runs)
    assert_rows(modes, ["dataset", "mode", "n_train", "folds", "threads"], {
        ("digits", "sequential", 100, 2, 2): {"train_s": 10.0, "accuracy": 0.85, "f1": 0.75},
        ("digits", "fold-parallel", 100, 2, 2): {"train_s": 5.0, "accuracy": 0.82},
        ("digits", "data-parallel", 100, 2, 2): {"train_s": 4.0, "accuracy": 0.78},
        ("digits", "sequential", 200, 2, 2): {"train_s": 20.0},
        ("digits", "fold-parallel", 200, 2, 2): {"train_s": 10.0},
        ("digits", "sequential", 100, 2, 1): {"train_s": 16.0},
        ("digits", "fold-parallel", 100, 2, 1): {"train_s": 8.0},
        ("digits", "sequential", 100, 1, 2): {"train_s": 3.0},
        ("fashion-mnist", "sequential", 100, 2, 2): {"train_s": 30.0},
        ("fashion-mnist", "fold-parallel", 100, 2, 2): {"train_s": 12.0, "accuracy": 0.62},
    })
    assert modes["speedup_vs_sequential"].isna().all()  # these runs measured no speedup: none is made up


def gram_time(backend, n_qubits, threads, n):
    """Fake Gram seconds whose slope against N differs for every (backend, n_qubits, threads)."""
    scale = {"cpu": 1.0, "numba": 0.5, "openmp": 0.25}[backend] * 4.0 ** (n_qubits - 6) / threads
    return 1e-7 * scale * n ** gram_slope(backend, n_qubits, threads)


def gram_slope(backend, n_qubits, threads):
    return 2.0 + {"cpu": 0.0, "numba": 0.02, "openmp": 0.04}[backend] + 0.01 * (n_qubits - 6) + 0.005 * threads


GRAM_N = (100, 200, 400, 800)


def measured_speedup(ratio):
    """What a run measured in its own rounds: deliberately not the ratio of times across runs (x 0.9)."""
    return 0.9 * ratio


@pytest.fixture
def gram_times(tmp_path):
    for backend in ("cpu", "numba", "openmp"):
        for threads in (1, 2):
            rows = []
            for q in (6, 8):
                for n in GRAM_N:
                    own, cpu = gram_time(backend, q, threads, n), gram_time("cpu", q, threads, n)
                    row = {"n_qubits": q, "n_samples": n, "gram_s": own}
                    if backend != "cpu":
                        row |= {"cpu_s": cpu, "speedup_vs_cpu": measured_speedup(cpu / own)}
                    if threads > 1:
                        row["speedup_vs_1_thread"] = measured_speedup(gram_time(backend, q, 1, n) / own)
                    rows.append(row)
            table = pd.DataFrame(rows)
            fake_run(tmp_path, "gram-threads", f"{backend}-{threads}",
                     {"task": "gram-scaling", "backend": backend, "threads": threads}, tables={"gram_times": table})
    return report.load_runs(tmp_path), report.gram_table(report.load_runs(tmp_path), tmp_path)


def test_gram_slope_and_backend_speedup(gram_times, tmp_path):
    n = np.array([100, 200, 400, 800])
    assert report.fit_loglog_slope(n, 3e-8 * n**2) == pytest.approx(2.0)
    assert np.isnan(report.fit_loglog_slope([100], [1.0]))
    _, times = gram_times
    assert len(times) == 3 * 2 * 2 * len(GRAM_N) and set(times["threads"]) == {1, 2}
    groups = [(b, q, t) for b in ("cpu", "numba", "openmp") for q in (6, 8) for t in (1, 2)]
    assert_rows(report.gram_slopes(times), ["backend", "n_qubits", "threads"],
                {g: {"slope": gram_slope(*g), "largest_n": 800, "gram_s_largest": gram_time(*g, 800)}
                 for g in groups})
    # each backend against cpu at the same N, n_qubits and threads, as each run measured it (cpu: 1)
    def speedup(b, q, t, n):
        return 1.0 if b == "cpu" else measured_speedup(gram_time("cpu", q, t, n) / gram_time(b, q, t, n))

    assert_rows(report.backend_speedup(times), ["backend", "n_qubits", "threads", "n_samples"],
                {(b, q, t, n): {"gram_s": gram_time(b, q, t, n), "cpu_s": gram_time("cpu", q, t, n),
                                "speedup_vs_cpu": speedup(b, q, t, n)}
                 for b, q, t in groups for n in GRAM_N})
    # a second cpu run of the same points (another grid) changes no backend's measured speedup
    table = pd.DataFrame([{"n_qubits": 6, "n_samples": n, "gram_s": 3 * gram_time("cpu", 6, 2, n)} for n in GRAM_N])
    fake_run(tmp_path, "gram-scaling", "cpu-again", {"task": "gram-scaling", "backend": "cpu", "threads": 2},
             tables={"gram_times": table})
    speed = report.backend_speedup(report.gram_table(report.load_runs(tmp_path), tmp_path))
    indexed = speed.set_index(["stage", "backend", "n_qubits", "threads", "n_samples"])
    assert indexed.index.is_unique
    assert indexed.loc[("gram-threads", "numba", 6, 2, 400), "speedup_vs_cpu"] == pytest.approx(
        speedup("numba", 6, 2, 400))
    # the same configuration measured by two grids is two rows, each naming its stage: never their mean
    assert indexed.loc[("gram-threads", "cpu", 6, 2, 400), "gram_s"] == pytest.approx(gram_time("cpu", 6, 2, 400))
    assert indexed.loc[("gram-scaling", "cpu", 6, 2, 400), "gram_s"] == pytest.approx(3 * gram_time("cpu", 6, 2, 400))
    assert indexed.loc[("gram-scaling", "cpu", 6, 2, 400), "n"] == 1
    # a run that measured no cpu reference gets none made up from other runs
    table = pd.DataFrame([{"n_qubits": 6, "n_samples": 100, "gram_s": 1.0}])
    fake_run(tmp_path, "gram-scaling", "old-openmp", {"stage": "gram-scaling", "backend": "openmp", "threads": 4},
             tables={"gram_times": table})
    speed = report.backend_speedup(report.gram_table(report.load_runs(tmp_path), tmp_path))
    assert np.isnan(speed.set_index(["backend", "n_qubits", "threads", "n_samples"])
                    .loc[("openmp", 6, 4, 100), "speedup_vs_cpu"])
    assert report.gram_slopes(report.gram_table(report.load_runs(tmp_path), tmp_path)).set_index(
        ["stage", "backend", "n_qubits", "threads"]).index.is_unique


def test_threads_speedup_against_one_thread(gram_times, tmp_path):
    # QCNN runs of grids named *threads*: (dataset, mode, threads, train_s, speedup measured in the run)
    for i, (dataset, mode, threads, train_s, measured) in enumerate([
            ("digits", "sequential", 1, 12.0, 1.0), ("digits", "sequential", 2, 7.0, 1.5),
            ("digits", "sequential", 2, 5.0, 2.2), ("digits", "sequential", 2, 4.5, 2.0),
            ("digits", "sequential", 4, 4.0, 2.9), ("fashion-mnist", "sequential", 1, 20.0, 1.0),
            ("fashion-mnist", "sequential", 2, 10.0, 1.9),
            ("digits", "data-parallel", 2, 9.0, None)]):  # measured no 1-thread reference: no speedup to show
        metrics = qcnn(mode, train_s, threads=threads, dataset=dataset, folds=1)
        if measured is not None:
            metrics["speedup_vs_1_thread"] = measured
        fake_run(tmp_path, "threads", f"run{i}", metrics)
    other = qcnn("sequential", 100.0, threads=2, folds=1) | {"speedup_vs_1_thread": 9.0}
    fake_run(tmp_path, "sequential", "other-grid", other)  # not a threads grid
    frame = report.load_runs(tmp_path)
    speedup = report.threads_speedup(frame, report.gram_table(frame, tmp_path))
    expected = {("QCNN sequential (digits)", 1): (12.0, 1.0), ("QCNN sequential (digits)", 2): (5.0, 2.0),
                ("QCNN sequential (digits)", 4): (4.0, 2.9),
                ("QCNN sequential (fashion-mnist)", 1): (20.0, 1.0),
                ("QCNN sequential (fashion-mnist)", 2): (10.0, 1.9)}
    for b in ("cpu", "numba", "openmp"):
        for q in (6, 8):
            for t in (1, 2):  # at the largest N only
                ratio = gram_time(b, q, 1, 800) / gram_time(b, q, t, 800)
                expected[(f"Gram {b} n={q} N=800", t)] = (gram_time(b, q, t, 800),
                                                          1.0 if t == 1 else measured_speedup(ratio))
    assert_rows(speedup, ["what", "threads"],
                {key: {"seconds": s, "speedup": v, "ideal": key[1], "efficiency": v / key[1]}
                 for key, (s, v) in expected.items()})


def test_sweep_table_per_dataset_and_swept_value(tmp_path):
    # (grid, dataset, n_train, batch_size, accuracy, train_s)
    for i, (grid, dataset, n_train, batch, acc, train_s) in enumerate([
            ("dataset-size", "digits", 50, 16, 0.70, 2.0), ("dataset-size", "digits", 50, 16, 0.74, 4.0),
            ("dataset-size", "digits", 50, 16, 0.72, 9.0), ("dataset-size", "digits", 200, 16, 0.90, 8.0),
            ("dataset-size", "fashion-mnist", 50, 16, 0.60, 3.0),
            ("batch-size", "digits", 160, 8, 0.85, 6.0), ("batch-size", "digits", 160, 32, 0.80, 3.0),
            ("sequential", "digits", 50, 16, 0.10, 99.0)]):  # another grid: not in either sweep
        fake_run(tmp_path, grid, f"run{i}", qcnn("sequential", train_s, acc, folds=1, threads=1, dataset=dataset,
                                                 n_train=n_train, batch_size=batch))
    frame = report.load_runs(tmp_path)
    assert_rows(report.sweep_table(frame, "dataset-size", "n_train"), ["dataset", "n_train"], {
        ("digits", 50): {"accuracy": 0.72, "f1": 0.62, "train_s": 4.0},
        ("digits", 200): {"accuracy": 0.90, "train_s": 8.0},
        ("fashion-mnist", 50): {"accuracy": 0.60, "train_s": 3.0}})
    assert_rows(report.sweep_table(frame, "batch-size", "batch_size"), ["dataset", "batch_size"], {
        ("digits", 8): {"accuracy": 0.85, "train_s": 6.0}, ("digits", 32): {"accuracy": 0.80, "train_s": 3.0}})


def test_a_renamed_grid_keeps_its_report_section(tmp_path):
    # sections select runs by the stage each run recorded, not by the words in its grid's folder name
    for i, (grid, stage, threads, n_train, batch, train_s) in enumerate([
            ("cores-2026", stages.THREADS, 1, 100, 16, 12.0), ("cores-2026", stages.THREADS, 2, 100, 16, 6.0),
            ("how-many-images", stages.DATASET_SIZE, 1, 50, 16, 2.0),
            ("how-many-images", stages.DATASET_SIZE, 1, 200, 16, 8.0),
            ("batches-v2", stages.BATCH_SIZE, 1, 160, 8, 5.0), ("batches-v2", stages.BATCH_SIZE, 1, 160, 32, 3.0),
            # named like the other sections, recorded as another stage: in none of them
            ("threads-dataset-size-batch-size", stages.SEQUENTIAL, 1, 120, 64, 50.0)]):
        measured = {"speedup_vs_1_thread": 12.0 / train_s} if stage == stages.THREADS else {}
        fake_run(tmp_path, grid, f"run{i}", qcnn("sequential", train_s, folds=1, threads=threads, n_train=n_train,
                                                 batch_size=batch) | measured, stage=stage)
    frame = report.load_runs(tmp_path)
    assert set(frame["task"]) == {"qcnn"} and "threads-dataset-size-batch-size" in set(frame["grid"])
    assert_rows(report.threads_speedup(frame, pd.DataFrame()), ["what", "threads"],
                {("QCNN sequential (digits)", 1): {"seconds": 12.0, "speedup": 1.0},
                 ("QCNN sequential (digits)", 2): {"seconds": 6.0, "speedup": 2.0}})
    assert_rows(report.sweep_table(frame, stages.DATASET_SIZE, "n_train"), ["dataset", "n_train"],
                {("digits", 50): {"train_s": 2.0}, ("digits", 200): {"train_s": 8.0}})
    assert_rows(report.sweep_table(frame, stages.BATCH_SIZE, "batch_size"), ["dataset", "batch_size"],
                {("digits", 8): {"train_s": 5.0}, ("digits", 32): {"train_s": 3.0}})
    with pytest.raises(ValueError, match="unknown stage 'dataset_size'; known stages: sequential, "):
        report.sweep_table(frame, "dataset_size", "n_train")  # a misspelt stage is an error, not an empty section


def test_runs_recorded_before_tasks_existed_read_their_stage_as_the_task(tmp_path):
    folder = fake_run(tmp_path, "g", "old", qcnn("sequential", 4.0))
    metrics = json.loads((folder / "metrics.json").read_text())
    del metrics["task"]
    metrics["stage"] = "qcnn"  # what runs recorded before: the task under "stage"
    (folder / "metrics.json").write_text(json.dumps(metrics))
    frame = report.load_runs(tmp_path)
    assert frame.loc[0, "task"] == "qcnn" and pd.isna(frame.loc[0, "stage"])
    assert report.results_table(frame)["model"].tolist() == ["QCNN"]


def test_report_refuses_without_runs(tmp_path, capsys):
    with pytest.raises(report.ReportError, match="no runs under .*run a sweep first"):
        report.build_report(tmp_path / "runs", tmp_path / "reports")
    assert cli.main(["report", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "reports")]) == 2
    assert "no runs under" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()
    with pytest.raises(report.ReportError, match="summary notebook .* not found"):
        report.build_report(tmp_path / "runs", tmp_path / "reports", notebook=tmp_path / "absent.ipynb")


@pytest.mark.slow  # runs the summary notebook
def test_a_sweep_whose_every_run_failed_still_gets_a_report_listing_the_failures(tmp_path, capsys):
    failed = fake_run(tmp_path / "runs", "threads", "failed-only", qcnn("sequential", 1.0), status=runs.FAILED)
    runs.write_status(failed, runs.FAILED, error="RuntimeError: planned failure of the only run")
    skipped = tmp_path / "runs" / "final" / "no-data"
    runs.write_status(skipped, runs.SKIPPED, reason="dataset 'svhn' is not in the data directory")
    assert cli.main(["report", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "reports")]) == 0
    text = (tmp_path / "reports" / "summary.html").read_text()
    assert "No complete run" in text
    assert "RuntimeError: planned failure of the only run" in text and "is not in the data directory" in text
    listed = pd.read_csv(tmp_path / "reports" / "tables" / "runs_not_complete.csv")
    assert sorted(zip(listed["run"], listed["status"])) == [("failed-only", "failed"), ("no-data", "skipped")]


def test_the_summary_finds_the_project_runs_whatever_the_working_directory(tmp_path, monkeypatch):
    for cwd in (tmp_path, ROOT / "notebooks", ROOT / "qmlnb" / "lab" / "report"):
        monkeypatch.chdir(cwd)
        assert report.report_dirs() == (ROOT / "runs", ROOT / "reports"), cwd
    assert report.report_dirs(tmp_path / "r", "out") == (tmp_path / "r", ROOT / "qmlnb" / "lab" / "report" / "out")
    # the summary's parameters default to "" (the project's folders), resolved by report_dirs
    params = sweep.notebook_parameters(report.SUMMARY_NOTEBOOK)
    assert params == {"runs_dir": "", "reports_dir": ""}
    assert "report.report_dirs(runs_dir, reports_dir)" in report.SUMMARY_NOTEBOOK.read_text()


@pytest.fixture
def runs_with_a_corrupt_one(tmp_path):
    """A readable complete QCNN run beside a complete run whose metrics.json is corrupt."""
    scores = {"accuracy": 0.75, "f1": 0.75, "roc_auc": 0.75, "balanced_accuracy": 0.75}
    good = tmp_path / "runs" / "modes" / "good"
    tasks.save_run(good, {"n_train": 40}, {"task": "qcnn", "dataset": "digits", "mode": "sequential",
                                                 "folds": 1, "threads": 1, "n_train": 40, "qcnn": scores,
                                                 "timings": {"train_s": 2.0}})
    runs.write_status(good, runs.COMPLETE)
    bad = tmp_path / "runs" / "modes" / "corrupt"
    tasks.save_run(bad, {"n_train": 80}, {"task": "qcnn"})
    (bad / "metrics.json").write_text('{"task": "qcnn", "qcnn": {"accur')  # e.g. edited by hand, a bad disk
    runs.write_status(bad, runs.COMPLETE)
    return tmp_path, good, bad


def test_a_complete_run_with_corrupt_metrics_is_listed_unreadable_and_the_report_still_builds(
        runs_with_a_corrupt_one):
    tmp, good, bad = runs_with_a_corrupt_one
    with pytest.warns(UserWarning, match=f"unreadable run {re.escape(str(bad))} left out"):
        frame = report.load_runs(tmp / "runs")
    assert list(frame["run"]) == ["good"] and frame.loc[0, "qcnn.accuracy"] == 0.75
    [(path, why)] = report.unreadable_runs(tmp / "runs")
    assert path == bad and why.startswith(f"{bad / 'metrics.json'}: JSONDecodeError")
    overview = report.run_overview(tmp / "runs").set_index("run")
    assert overview.loc["corrupt", "status"] == report.UNREADABLE and overview.loc["good", "status"] == "complete"
    assert str(bad / "metrics.json") in overview.loc["corrupt", "note"]
    with pytest.warns(UserWarning):
        html = report.build_report(tmp / "runs", tmp / "reports")
    listed = pd.read_csv(tmp / "reports" / "tables" / "runs_not_complete.csv")
    assert list(zip(listed["run"], listed["status"])) == [("corrupt", "unreadable")]
    assert str(bad / "metrics.json") in html.read_text()  # the summary page names the unreadable file
    assert pd.read_csv(tmp / "reports" / "tables" / "results.csv")["accuracy"].tolist() == [0.75]


def test_export_html_is_self_contained_with_the_code_behind_a_toggle(tmp_path):
    import base64

    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()
    nb = new_notebook(cells=[
        new_markdown_cell("# The title\n\nA formula, $x^2$, stays text (no typesetting script is loaded)."),
        new_code_cell("secret_code_line = 1", execution_count=1,
                      outputs=[new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})])])
    import nbformat

    nbformat.write(nb, tmp_path / "executed.ipynb")
    html = report.export_html(tmp_path / "executed.ipynb", tmp_path / "page.html").read_text()
    # no resource from the network, not even a lazy import() in a module script (Mermaid) or a MathJax config
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", html, flags=re.S)
    assert not re.search(r"<(script|img|link)[^>]+(src|href)=", html.replace('src="data:image/png', ""))
    assert not any("http" in body or "import(" in body for body in scripts) and "MathJax" not in html
    assert f'src="data:image/png;base64,{png}"' in html
    # the code is in the page, hidden until the button is pressed
    assert "secret_code_line" in html and html.count('id="qmlnb-code-toggle"') == 1
    head, body = html.split("</head>")
    assert "body:not(.qmlnb-show-code) .jp-CodeCell .jp-Cell-inputWrapper { display: none; }" in head
    assert "function qmlnbToggleCode" in head and "<button" not in head
    assert re.search(r'<button id="qmlnb-code-toggle" onclick="qmlnbToggleCode\(this\)">show code</button>', body)
    # the template ships with the package (package data), beside the summary notebook
    assert (report.export.TEMPLATES / report.export.TEMPLATE_NAME / "index.html.j2").is_file()
    assert report.export.TEMPLATES.parent == report.SUMMARY_NOTEBOOK.parent


# ------------------------------------------------------------------ one smoke sweep, end to end
SMOKE = [  # (grid name, stage, notebook, grid): the images grid's name says nothing of its stage
    ("gram-threads", stages.GRAM_THREADS, "30-gram-scaling.ipynb",
     {"backend": ["cpu"], "qubits": [[3, 4]], "sizes": [[20, 40]], "repeats": [1], "threads": [1, 2]}),
    ("images", stages.DATASET_SIZE, "10-train-qcnn.ipynb",
     {"n_train": [40], "batch_size": [16], "epochs": [1], "threads": [1]}),
    ("qsvm", stages.QSVM_BACKENDS, "20-qsvm.ipynb", {"n_train": [40], "epochs": [1], "batch_size": [16], "threads": [1]}),
]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Run the real notebooks on tiny grids, then the report (with a half-written run lying beside them)."""
    tmp = tmp_path_factory.mktemp("smoke")
    grids = []
    for name, stage, notebook, grid in SMOKE:
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, "stage": stage, "notebook": str(ROOT / "notebooks" / notebook),
                                        "grid": grid}))
        grids.append(sweep.load_sweep(path, tmp / "runs"))
    summary = sweep.run_sweeps(grids, jobs=2, cores=2, progress=False)
    # the summary reads run files, never notebook outputs: remove the executed notebooks
    for executed in (tmp / "runs").glob("*/*/*.ipynb"):
        executed.unlink()
    half = tmp / "runs" / "qsvm" / "killed-mid-run"
    runs.write_status(half, runs.RUNNING)
    (half / "metrics.json").write_text('{"stage": "qsvm", "qsvm": ')
    html = report.build_report(tmp / "runs", tmp / "reports")
    return summary, html, tmp


@pytest.mark.slow  # a real sweep: left out of `make mutate`
def test_smoke_sweep_completes_every_run(smoke):
    summary, _, tmp = smoke
    assert summary["failed"] == 0, summary["failures"]
    assert summary["complete"] == 4
    for folder in runs.iter_runs(tmp / "runs"):
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["environment"]["git"]["commit"] and metrics["threads"] >= 1
        assert metrics["stage"] == {name: stage for name, stage, *_ in SMOKE}[folder.parent.name]
        assert (folder / "params.json").is_file()


@pytest.mark.slow  # a real sweep: left out of `make mutate`
def test_report_writes_figures_and_tables(smoke):
    _, html, tmp = smoke
    reports_dir = tmp / "reports"
    figures = {p.stem for p in (reports_dir / "figures").glob("*.png")}
    assert {"gram_scaling", "threads_speedup", "accuracy_vs_dataset_size", "kernel_digits"} <= figures
    results = pd.read_csv(reports_dir / "tables" / "results.csv")
    assert {"QCNN", "QSVM", "rbf_svm_embeddings", "linear_svm_pixels"} <= set(results["model"])
    assert results[["accuracy", "f1", "roc_auc", "balanced_accuracy"]].notna().all().all()
    runs_table = pd.read_csv(reports_dir / "tables" / "runs.csv")
    assert "killed-mid-run" in set(runs_table["run"]) and len(runs_table) == 5
    text = html.read_text()
    # self-contained: no resource is fetched from the network when the page loads
    assert not re.search(r'<(script|img|link)[^>]+(src|href)="(https?:)?//', text)
    assert text.count('src="data:image/png;base64,') >= 4
    assert "qmlnb-code-toggle" in text


@pytest.mark.slow  # a real sweep: left out of `make mutate`
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (.ci/run installs it)")
def test_html_renders_tables_and_images_in_headless_chromium(smoke, tmp_path):
    _, html, _ = smoke
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", html.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True).stdout
    assert "Scores per configuration" in dom and "Gram matrix: time against N per backend" in dom
    assert dom.count("<table") >= 5
    images = re.findall(r'<img[^>]+src="data:image/png;base64,', dom)
    assert len(images) >= 4
    assert re.search(r'<button id="qmlnb-code-toggle"[^>]*>show code</button>', dom)
