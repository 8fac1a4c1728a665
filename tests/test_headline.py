"""The headline tables on fabricated final-stage runs: one row per setting, spread columns, seed-paired speedups."""
from __future__ import annotations

import pandas as pd
import pytest

from qmlnb import _util
from qmlnb.lab import decisions, runs, stages, tasks
from qmlnb.lab.report import headline, load_runs


def fake_run(runs_dir, grid, params, metrics, status=runs.COMPLETE, reason=None):
    folder = runs_dir / grid / runs.run_name(params)
    if status == runs.COMPLETE:
        tasks.save_run(folder, params, metrics)
    else:
        folder.mkdir(parents=True)
    runs.write_status(folder, status, point=params, **({"reason": reason} if reason else {}))
    return folder


def scores(b):
    return {"f1": b - 0.05, "roc_auc": b + 0.05, "balanced_accuracy": b, "accuracy": b}


def mode_run(tmp_path, mode, seed, train_s, ba, dataset="digits", n_train=100, **measured):
    params = {"dataset": dataset, "mode": mode, "seed": seed, "n_train": n_train, "threads": 2, "folds": 2}
    fake_run(tmp_path, "final-modes", params, {"task": "qcnn", "stage": "final-modes", "dataset": dataset,
                                               "mode": mode, "qcnn": scores(ba), "timings": {"train_s": train_s},
                                               **measured})


@pytest.fixture
def final_runs(tmp_path):
    # digits at n_train 100: sequential 10 / 12 s, fold-parallel 5 / 4 s, data-parallel 8 s (seed 0 only)
    for mode, seed, t, ba in [("sequential", 0, 10.0, 0.80), ("sequential", 1, 12.0, 0.90),
                              ("fold-parallel", 0, 5.0, 0.70), ("fold-parallel", 1, 4.0, 0.74),
                              ("data-parallel", 0, 8.0, 0.85)]:
        mode_run(tmp_path, mode, seed, t, ba)
    # the same modes at another training size: a separate row, never pooled with the n_train=100 ones
    mode_run(tmp_path, "sequential", 0, 100.0, 0.99, n_train=200)
    mode_run(tmp_path, "fold-parallel", 0, 25.0, 0.98, n_train=200)
    mode_run(tmp_path, "sequential", 0, 30.0, 0.60, dataset="fashion-mnist")
    # a failed run and a run of another grid are not read
    fake_run(tmp_path, "final-modes", {"dataset": "digits", "mode": "sequential", "seed": 9}, {}, status=runs.FAILED)
    fake_run(tmp_path, "threads", {"dataset": "digits", "mode": "sequential", "seed": 0, "threads": 1},
             {"task": "qcnn", "stage": "threads", "dataset": "digits", "mode": "sequential", "qcnn": scores(0.1),
              "timings": {"train_s": 1.0}})
    for seed, fit in ((0, 0.5), (1, 0.7)):
        params = {"dataset": "digits", "seed": seed, "n_train": 100, "backend": "openmp"}
        fake_run(tmp_path, "final", params, {
            "task": "qsvm", "stage": "final", "dataset": "digits", "mode": "sequential", "qcnn": scores(0.8),
            "qsvm": scores(0.9),
            "timings": {"train_s": 10.0, "gram_s": 1.0 + seed, "svm_fit_s": 0.5},
            "baselines": {"rbf_svm_embeddings": {**scores(0.6 + 0.1 * seed), "fit_s": fit},
                          "linear_svm_pixels": {**scores(0.7), "fit_s": 0.1},
                          "cnn": {**scores(0.75 + 0.05 * seed), "fit_s": 3.0 + seed}}})
    fake_run(tmp_path, "final", {"dataset": "svhn", "seed": 0}, {}, status=runs.SKIPPED,
             reason="dataset 'svhn' is not in the data directory: missing train_32x32.mat, test_32x32.mat")
    return tmp_path


def row(table, model, mode, setting_part=""):
    match = table[(table["model"] == model) & (table["mode"] == mode) & table["setting"].str.contains(setting_part)]
    assert len(match) == 1, (model, mode, setting_part, table)
    return match.iloc[0]


def test_one_table_per_dataset_one_row_per_mode_and_setting(final_runs):
    tables = headline.headline_tables(load_runs(final_runs))
    assert list(tables) == ["digits", "fashion-mnist"]
    digits = tables["digits"]
    assert list(digits.columns) == headline.COLUMNS
    seq = row(digits, "QCNN", "sequential", "n_train=100")
    assert seq["n"] == 2
    assert seq["balanced accuracy"] == "0.850 ± 0.071"  # mean and sample std of 0.80, 0.90
    assert seq["F1"] == "0.800 ± 0.071" and seq["ROC AUC"] == "0.900 ± 0.071"
    assert seq["training time (s)"] == "11 [10.5-11.5]"
    # the QSVM runs have no folds or threads, and n_train differs: nothing is shared by every digits row
    assert digits.attrs["common_setting"] == ""
    assert seq["setting"] == "folds=2, n_train=100, threads=2"  # not 2.0 (a column with NaN)
    # one row: all of its setting is said once above the table
    fashion = tables["fashion-mnist"]
    assert fashion.attrs["common_setting"] == "folds=2, n_train=100, threads=2" and list(fashion["setting"]) == ["—"]
    fold = row(digits, "QCNN", "fold-parallel", "n_train=100")
    # seed 0: 10/5 = 2, seed 1: 12/4 = 3 -> median 2.5 over 2 seeds
    assert fold["speedup vs sequential"] == "2.50 [2.00-3.00], across runs, 2 seed pair(s)"
    data = row(digits, "QCNN", "data-parallel", "n_train=100")
    assert data["speedup vs sequential"] == "1.25 [1.25-1.25], across runs, 1 seed pair(s)"
    assert data["balanced accuracy"] == "0.850 (one run)"
    big = row(digits, "QCNN", "fold-parallel", "n_train=200")
    assert big["speedup vs sequential"].startswith("4.00") and big["balanced accuracy"].startswith("0.980")
    # the QSVM and baseline rows of the final grid, with their own timing
    qsvm = row(digits, "QSVM on the QCNN's embeddings", "sequential")
    assert qsvm["training time (s)"] == "2 [1.75-2.25]" and qsvm["n"] == 2  # gram + svm fit: 1.5, 2.5
    rbf = row(digits, headline.BASELINE_NAMES["rbf_svm_embeddings"], "classical")
    assert rbf["balanced accuracy"] == "0.650 ± 0.071" and rbf["training time (s)"] == "0.6 [0.55-0.65]"
    # the classical CNN (linear head, same trainer and budget) beside CNN+SVM, timed by its training
    cnn = row(digits, headline.BASELINE_NAMES[stages.CNN_BASELINE], "classical")
    assert cnn["model"] == "CNN (linear head, same trainer and budget)"
    assert cnn["balanced accuracy"] == "0.775 ± 0.035" and cnn["n"] == 2
    assert cnn["training time (s)"] == "3.5 [3.25-3.75]" and cnn["timed"].startswith("training")
    classical = list(digits.loc[digits["mode"] == "classical", "model"])
    assert classical == [headline.BASELINE_NAMES[name]
                         for name in (stages.CNN_BASELINE, "rbf_svm_embeddings", "linear_svm_pixels")]
    fm = tables["fashion-mnist"]
    assert len(fm) == 1 and fm.iloc[0]["speedup vs sequential"] == "1 (reference)"
    for table in tables.values():
        assert not table.isna().any().any()
        assert not table.astype(str).apply(lambda c: c.str.contains("nan")).any().any()


def test_a_parallel_mode_without_a_sequential_run_says_so(tmp_path):
    mode_run(tmp_path, "fold-parallel", 0, 5.0, 0.7)
    table = headline.headline_tables(load_runs(tmp_path))["digits"]
    assert table.iloc[0]["speedup vs sequential"].startswith("— (no sequential run")


def test_no_final_runs_gives_no_tables(tmp_path):
    assert headline.headline_tables(pd.DataFrame()) == {}


def test_skipped_datasets_name_the_files_they_need(final_runs):
    tables = headline.headline_tables(load_runs(final_runs))
    skipped = headline.skipped_datasets(final_runs, tables)
    assert list(skipped["dataset"]) == ["svhn"]
    assert "train_32x32.mat" in skipped.iloc[0]["reason"]


def test_decision_lines_and_the_flow_diagram(tmp_path):
    for threads, t in {1: 4.0, 2: 2.0}.items():
        folder = tmp_path / "threads" / runs.run_name({"threads": threads})
        folder.mkdir(parents=True)
        _util.atomic_write_json(folder / runs.PARAMS_FILE, {"threads": threads})
        _util.atomic_write_json(folder / runs.METRICS_FILE, {"timings": {"train_s": t}})
        runs.write_status(folder, runs.COMPLETE, point={"threads": threads})
    rows = decisions.collect(sorted((tmp_path / "threads").iterdir()), "threads", "timings.train_s")
    decisions.record(tmp_path, decisions.decide(rows, "fastest", "threads", "threads"))
    lines = headline.decision_lines(tmp_path)
    assert len(lines) == 1 and lines[0].startswith("**optimal threads: 2**") and "because threads=2" in lines[0]
    _util.atomic_write_json(tmp_path / "threads" / "flow.json", {"stage": "threads", "order": 0, "references": []})
    _util.atomic_write_json(tmp_path / "final" / "flow.json", {"stage": "final", "order": 1, "references": [
        {"key": "threads", "from": "threads", "pick": "fastest", "param": "threads", "value": 2}]})
    stages = headline.flow_stages(tmp_path)
    assert [s["stage"] for s in stages] == ["threads", "final"]
    assert headline.flow_text(stages) == "1. threads\n2. final  <-  threads=2 (fastest of threads)"
    import matplotlib

    matplotlib.use("Agg")
    fig = headline.plot_flow(stages)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "final\nthreads=2" in texts and "threads" in texts
    raised = {"key": "threads", "from": "threads", "pick": "fastest", "decided": 1, "at_least": 2, "value": 2}
    assert headline.flow_text([{"stage": "modes", "references": [raised]}]) == \
        "1. modes  <-  threads=2 (decided 1, at least 2) (fastest of threads)"


def test_a_millisecond_time_keeps_its_digits(tmp_path):
    mode_run(tmp_path, "sequential", 0, 0.00312, 0.7)
    table = headline.headline_tables(load_runs(tmp_path))["digits"]
    assert table.iloc[0]["training time (s)"] == "0.00312 [0.00312-0.00312]"


def test_tables_follow_the_catalogue_order(tmp_path):
    for dataset in ("cifar10", "fashion-mnist", "digits"):
        mode_run(tmp_path, "sequential", 0, 1.0, 0.7, dataset=dataset)
    assert list(headline.headline_tables(load_runs(tmp_path))) == ["digits", "fashion-mnist", "cifar10"]


def test_a_speedup_measured_in_the_run_is_shown_instead_of_a_ratio_across_runs(tmp_path):
    mode_run(tmp_path, "sequential", 0, 10.0, 0.8, speedup_vs_sequential=1.0)
    mode_run(tmp_path, "fold-parallel", 0, 5.0, 0.8, speedup_vs_sequential=1.6)
    mode_run(tmp_path, "fold-parallel", 1, 5.0, 0.8, speedup_vs_sequential=1.8)
    table = headline.headline_tables(load_runs(tmp_path))["digits"]
    fold = row(table, "QCNN", "fold-parallel")
    # 10 s / 5 s across runs would say 2.00: the runs' own measurements say 1.6 and 1.8
    assert fold["speedup vs sequential"] == "1.70 [1.60-1.80], measured in each run, 2 run(s)"


def test_the_sequential_reference_on_fewer_threads_is_named_and_the_sequential_row_shows_its_own_speedup(tmp_path):
    # compare_threads 1: each run trained sequentially on 1 thread beside itself (the threads stage's fastest)
    on_one = {"reference_threads": 1, "reference_mode": "sequential"}
    mode_run(tmp_path, "sequential", 0, 10.0, 0.8, speedup_vs_sequential=0.5, comparison=on_one)
    mode_run(tmp_path, "fold-parallel", 0, 5.0, 0.8, speedup_vs_sequential=1.2, comparison=on_one)
    table = headline.headline_tables(load_runs(tmp_path))["digits"]
    # 2 threads made sequential training slower than 1: said, not hidden behind "1 (reference)"
    assert row(table, "QCNN", "sequential")["speedup vs sequential"] == \
        "0.50 [0.50-0.50], measured in each run against sequential on 1 thread(s), 1 run(s)"
    assert row(table, "QCNN", "fold-parallel")["speedup vs sequential"] == \
        "1.20 [1.20-1.20], measured in each run against sequential on 1 thread(s), 1 run(s)"


# ---------------------------------------------------------------- simulators against PennyLane
def states_metrics(ratio=25.0, noisy=False):
    return {"n_states": 16, "n_qubits": 10, "qmlnb_s": 16 * 2e-5, "pennylane_s": 16 * 2e-5 * ratio,
            "qmlnb_per_state_s": 2e-5, "pennylane_per_state_s": 2e-5 * ratio, "ratio": ratio, "ratio_q1": ratio - 1,
            "ratio_q3": ratio + 2, "rounds": 5, "max_abs_difference": 6.7e-8, "load": 0.5, "noisy": noisy}


def simulator_metrics(ratio=7.0):
    return {"against": "torchlayer", "batch_size": 16, "n_qubits": 4, "threads": 2, "rounds": 5,
            "steps_per_call": {"torch": 20, "torchlayer": 2}, "torch_samples_per_s": 7000.0,
            "torchlayer_samples_per_s": 7000.0 / ratio, "ratio": ratio, "ratio_q1": ratio - 0.5,
            "ratio_q3": ratio + 0.5, "load": 2.7, "noisy": True}


def test_simulator_table_reads_the_comparisons_each_run_measured(tmp_path):
    fake_run(tmp_path, "gram-scaling", {"backend": "cpu", "pennylane_states": 16},
             {"task": stages.GRAM, "stage": stages.GRAM_SCALING, "backend": "cpu",
              "states_vs_pennylane": states_metrics()})
    # a run of the same stage that did not compare (another backend) gives no row
    fake_run(tmp_path, "gram-scaling", {"backend": "numba"}, {"task": stages.GRAM, "stage": stages.GRAM_SCALING,
                                                              "backend": "numba"})
    fake_run(tmp_path, "sequential", {"dataset": "digits", "mode": "sequential", "compare_simulator": "torchlayer"},
             {"task": "qcnn", "stage": stages.SEQUENTIAL, "dataset": "digits", "mode": "sequential",
              "qcnn": scores(0.9), "timings": {"train_s": 3.0}, "simulator_comparison": simulator_metrics()})
    table = headline.simulator_table(load_runs(tmp_path))
    assert list(table.columns) == headline.SIMULATOR_COLUMNS
    assert list(table["comparison"]) == [headline.STATES_LABEL, headline.QCNN_LABEL]  # one row per measuring run
    states, qcnn = table.iloc[0], table.iloc[1]
    assert states["ours"] == "20 µs per state" and states["PennyLane"] == "500 µs per state"
    assert states["ratio [q1-q3]"] == "25 [24-27]" and states["max |difference|"] == "6.7e-08"
    assert states["setting"] == "10 qubits, 16 states, 5 rounds"
    assert (states["load"], states["noisy"]) == ("0.50", "no")
    assert states["measured in"].startswith("gram-scaling run backend-cpu")
    assert qcnn["ours"] == "7,000 samples/s" and qcnn["PennyLane"] == "1,000 samples/s"
    assert qcnn["ratio [q1-q3]"] == "7 [6.5-7.5]" and (qcnn["load"], qcnn["noisy"]) == ("2.70", "yes")
    assert qcnn["setting"] == "digits, 4 qubits, batch 16, 2 thread(s), 5 rounds"
    assert qcnn["measured in"].startswith("sequential run ")
    assert not table.isna().any().any() and not table.astype(str).apply(lambda c: c.str.contains("nan")).any().any()


def test_simulator_table_without_runs_names_the_stage_that_measures_each_row(tmp_path, final_runs):
    for frame in (pd.DataFrame(), load_runs(final_runs)):  # no runs at all; runs that compared nothing
        table = headline.simulator_table(frame)
        assert list(table["comparison"]) == [headline.STATES_LABEL, headline.QCNN_LABEL]
        assert list(table["measured in"]) == [headline.STATES_SOURCE, headline.QCNN_SOURCE]
        assert "50-gram-scaling.yaml" in table.iloc[0]["measured in"]
        assert "10-sequential.yaml" in table.iloc[1]["measured in"]
        assert not table.isna().any().any() and (table.drop(columns=["comparison", "measured in"]) == "—").all().all()


def test_the_grids_that_measure_the_simulator_rows_set_their_parameters():
    from qmlnb.lab.grid import load_sweep

    gram = load_sweep(_util.project_root() / "params" / "50-gram-scaling.yaml")
    assert [p["backend"] for p in gram.points if p.get("pennylane_states", 0) > 0] == ["cpu"]
    sequential = load_sweep(_util.project_root() / "params" / "10-sequential.yaml")
    assert all(p.get("compare_simulator") == "torchlayer" for p in sequential.points)
