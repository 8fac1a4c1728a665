"""The headline tables on fabricated final-stage runs: one row per setting, spread columns, seed-paired speedups."""
from __future__ import annotations

import pandas as pd
import pytest

from qmlnb import _util
from qmlnb.lab import decision_records, decisions, runs, stages, tasks
from qmlnb.lab.report import headline, load_runs, simulators


def fake_run(runs_dir, grid, params, metrics, status=runs.COMPLETE, reason=None, stage=None):
    """A run folder as the sweep leaves it: the grid's stage recorded in the status (as Sweep.identity does)."""
    folder = runs_dir / grid / runs.run_name(params)
    if status == runs.COMPLETE:
        tasks.save_run(folder, params, metrics)
    else:
        folder.mkdir(parents=True)
    runs.write_status(folder, status, point=params, stage=stage or metrics.get("stage"),
                      **({"reason": reason} if reason else {}))
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
    fake_run(tmp_path, "final", {"dataset": "svhn", "seed": 0}, {}, status=runs.SKIPPED, stage=stages.FINAL,
             reason="dataset 'svhn' is not in the data directory: missing train_32x32.mat, test_32x32.mat")
    # a grid of another stage that happens to be named like the final one's folder does not count: the stage does
    fake_run(tmp_path, "final-modes", {"dataset": "cifar10", "seed": 0}, {}, status=runs.SKIPPED,
             stage=stages.THREADS, reason="dataset 'cifar10' is not in the data directory")
    return tmp_path


def by_title(tables):
    return {(t.attrs["title"], t.attrs["budget"]): t for t in tables}


def test_final_tables_hold_the_final_stage_only_one_budget_each(final_runs):
    from qmlnb.lab.report import format_table

    tables = headline.final_tables(load_runs(final_runs))
    assert len(tables) == 1  # the final-modes and threads runs are no part of it
    digits = tables[0]
    assert digits.attrs["dataset"] == "digits" and digits.attrs["stage"] == "final" and digits.attrs["seeds"] == [0, 1]
    assert list(digits.columns) == headline.FINAL_COLUMNS
    # sorted by balanced accuracy; every row from the same two runs
    assert list(digits["model"]) == ["QSVM", "QCNN", "CNN", "linear SVM (pixels)", "CNN+SVM"]
    assert set(digits["n"]) == {2}
    cells = format_table(digits).set_index("model")
    assert cells.loc["CNN", "balanced accuracy"] == "0.775 ± 0.035" and cells.loc["CNN", "time (s)"] == "3.5 [3.25–3.75]"
    assert cells.loc["QSVM", "time (s)"] == "2 [1.75–2.25]"  # gram + svm fit: 1.5, 2.5
    assert cells.loc["CNN+SVM", "balanced accuracy"] == "0.650 ± 0.071"
    assert "CNN: CNN (linear head, same trainer and budget)" in digits.attrs["legend"]


def test_modes_tables_name_one_reference_and_never_pool_budgets(final_runs):
    from qmlnb.lab.report import format_table

    tables = headline.modes_tables(load_runs(final_runs))
    budgets = [(t.attrs["dataset"], t.attrs["setting"]["n_train"]) for t in tables]
    assert budgets == [("digits", 100), ("digits", 200), ("fashion-mnist", 100)]
    digits = format_table(tables[0]).set_index("mode")
    # no run timed its own reference here: sequential time over the mode's, seed by seed, said in the notes
    assert digits.loc["fold-parallel", "speedup"] == "2.5 [2.25–2.75]"  # 10/5 and 12/4
    assert digits.loc["data-parallel", "speedup"] == "1.25" and digits.loc["sequential", "speedup"] == "1"
    assert tables[0].attrs["notes"] == ["sequential: the reference", "fold-parallel: across runs, seed by seed",
                                        "data-parallel: across runs, seed by seed"]


def test_the_reference_on_fewer_threads_is_a_row_and_every_speedup_is_against_it(tmp_path):
    on_one = {"reference_threads": 1, "reference_mode": "sequential", "reference_train_s": 4.0}
    mode_run(tmp_path, "sequential", 0, 10.0, 0.8, speedup_vs_sequential=0.4, comparison=on_one)
    mode_run(tmp_path, "fold-parallel", 0, 5.0, 0.8, speedup_vs_sequential=0.8, comparison=on_one)
    mode_run(tmp_path, "fold-parallel", 1, 5.0, 0.8, speedup_vs_sequential=0.7, comparison=on_one)
    (table,) = headline.modes_tables(load_runs(tmp_path))
    assert table.attrs["reference"] == "sequential training on 1 thread" and table.attrs["notes"] == []
    rows = table.set_index("mode")
    reference = rows.loc["reference: sequential training on 1 thread"]
    assert reference["training time (s)"] == 4.0 and reference["speedup"] == 1.0 and reference["n"] == 3
    # 2 threads made sequential training slower than 1: its speedup says so, it is no "1 (reference)"
    assert rows.loc["sequential", "speedup"] == 0.4 and rows.loc["sequential", "training time (s)"] == 10.0
    assert rows.loc["fold-parallel", "speedup"] == pytest.approx(0.75)
    assert (rows.loc["fold-parallel", "speedup_q1"], rows.loc["fold-parallel", "speedup_q3"]) == \
        pytest.approx((0.725, 0.775))


def test_no_final_runs_gives_no_tables(tmp_path):
    assert headline.headline_tables(pd.DataFrame()) == []


def test_a_millisecond_time_keeps_its_digits(tmp_path):
    from qmlnb.lab.report import format_table

    mode_run(tmp_path, "sequential", 0, 0.00312, 0.7)
    mode_run(tmp_path, "sequential", 1, 0.00412, 0.7)
    (table,) = headline.modes_tables(load_runs(tmp_path))
    assert format_table(table).iloc[0]["training time (s)"] == "0.00362 [0.00337–0.00387]"


def test_tables_follow_the_catalogue_order(tmp_path):
    for dataset in ("cifar10", "fashion-mnist", "digits"):
        mode_run(tmp_path, "sequential", 0, 1.0, 0.7, dataset=dataset)
    assert [t.attrs["dataset"] for t in headline.headline_tables(load_runs(tmp_path))] == [
        "digits", "fashion-mnist", "cifar10"]


def test_skipped_datasets_name_the_files_they_need(final_runs):
    tables = headline.headline_tables(load_runs(final_runs))
    skipped = headline.skipped_datasets(final_runs, tables)
    assert list(headline.skipped_datasets(final_runs, ["digits"])["dataset"]) == ["svhn"]
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
    decision_records.record(tmp_path, decisions.decide(rows, "fastest", "threads", "threads"))
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
    table = simulators.simulator_table(load_runs(tmp_path))
    assert list(table.columns) == simulators.SIMULATOR_COLUMNS
    assert list(table["comparison"]) == [simulators.STATES_LABEL, simulators.QCNN_LABEL]  # one row per measuring run
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
        table = simulators.simulator_table(frame)
        assert list(table["comparison"]) == [simulators.STATES_LABEL, simulators.QCNN_LABEL]
        assert list(table["measured in"]) == [simulators.STATES_SOURCE, simulators.QCNN_SOURCE]
        assert "50-gram-scaling.yaml" in table.iloc[0]["measured in"]
        assert "10-sequential.yaml" in table.iloc[1]["measured in"]
        assert not table.isna().any().any() and (table.drop(columns=["comparison", "measured in"]) == "—").all().all()


def test_the_grids_that_measure_the_simulator_rows_set_their_parameters():
    from qmlnb.lab.grid import load_sweep

    gram = load_sweep(_util.project_root() / "params" / "50-gram-scaling.yaml")
    assert [p["backend"] for p in gram.points if p.get("pennylane_states", 0) > 0] == ["cpu"]
    sequential = load_sweep(_util.project_root() / "params" / "10-sequential.yaml")
    assert all(p.get("compare_simulator") == "torchlayer" for p in sequential.points)
