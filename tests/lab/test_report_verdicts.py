"""The report's first screen and headline tables on fabricated runs with two budgets: no table mixes stages or
budgets, every headline plot draws exactly its table's values, and the verdicts follow the statistics rules."""
from __future__ import annotations

import json

import matplotlib
import numpy as np
import pandas as pd
import pytest

from qmlnb.lab import runs as run_files
from qmlnb.lab.report import headline, load_runs, to_html, verdicts
from test_headline import fake_run, scores

matplotlib.use("Agg")


def final_run(runs_dir, dataset, seed, epochs, qsvm, qcnn, cnn, rbf):
    params = {"dataset": dataset, "classes": [3, 8], "seed": seed, "n_train": 150, "epochs": epochs,
              "batch_size": 16, "threads": 2, "backend": "openmp"}
    fake_run(runs_dir, "final", params, {
        "task": "qsvm", "stage": "final", "dataset": dataset, "classes": [3, 8], "n_train": 150, "epochs": epochs,
        "n_qubits": 4, "backend": "openmp", "seed": seed, "qcnn": scores(qcnn), "qsvm": scores(qsvm),
        "timings": {"train_s": 10.0 + seed, "gram_s": 0.01, "svm_fit_s": 0.002},
        "baselines": {"cnn": {**scores(cnn), "fit_s": 3.0},
                      "rbf_svm_embeddings_alignment": {**scores(rbf), "fit_s": 0.1},
                      "rbf_svm_embeddings": {**scores(rbf - 0.01), "fit_s": 0.1},
                      "linear_svm_pixels": {**scores(0.7), "fit_s": 0.1},
                      "logreg_pixels": {**scores(0.72), "fit_s": 0.1}}})


def synthetic_runs(root):
    """Two datasets at 10 epochs (5 seeds), digits also at 2 epochs: three final tables; modes at 2 epochs."""
    for seed in range(5):
        final_run(root, "digits", seed, 10, 0.90 + 0.01 * seed, 0.85, 0.88 + 0.002 * seed, 0.91)
        final_run(root, "digits", seed, 2, 0.80, 0.70 + 0.01 * seed, 0.75, 0.79 + 0.003 * seed)
        final_run(root, "fashion-mnist", seed, 10, 0.93, 0.92 - 0.01 * seed, 0.94, 0.95 - 0.002 * seed)
    on_one = {"reference_threads": 1, "reference_mode": "sequential", "reference_train_s": 4.0}
    for dataset in ("digits", "fashion-mnist"):
        for seed in (0, 1):
            for mode, t, s in (("sequential", 5.0, 0.8), ("fold-parallel", 6.0, 0.68), ("data-parallel", 10.0, 0.38)):
                params = {"dataset": dataset, "mode": mode, "seed": seed, "n_train": 150, "epochs": 2,
                          "batch_size": 16, "threads": 2, "folds": 2, "compare": "sequential", "compare_threads": 1}
                fake_run(root, "final-modes", params, {
                    "task": "qcnn", "stage": "final-modes", "dataset": dataset, "mode": mode, "qcnn": scores(0.8),
                    "threads": 2, "folds": 2, "n_train": 150, "epochs": 2, "batch_size": 16,
                    "timings": {"train_s": t + seed}, "speedup_vs_sequential": s + 0.02 * seed, "comparison": on_one})
    return root



@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    return load_runs(synthetic_runs(tmp_path_factory.mktemp("runs")))


BUDGET_KEYS = ("epochs", "n_train", "batch_size", "threads", "seed")


def test_no_headline_table_mixes_stages_or_budgets(frame):
    tables = headline.headline_tables(frame)
    # digits at 10 and at 2 epochs, fashion-mnist at 10: three final tables; one modes table per dataset
    assert [(t.attrs["dataset"], t.attrs["stage"], t.attrs["setting"]["epochs"]) for t in tables] == [
        ("digits", "final", 2), ("digits", "final", 10), ("digits", "final-modes", 2),
        ("fashion-mnist", "final", 10), ("fashion-mnist", "final-modes", 2)]
    for table in tables:
        behind = frame[frame["path"].astype(str).isin(table.attrs["runs"])]
        assert len(behind) == len(table.attrs["runs"]) > 0
        assert set(behind["stage"]) == {table.attrs["stage"]}, table.attrs["title"]
        params = [c for c in behind.columns if c.startswith("param.") and c not in ("param.seed", "param.mode")]
        mixed = [c for c in params if behind[c].astype(str).nunique() > 1]
        assert not mixed, f"{table.attrs['title']} mixes {mixed}"
        # the page's table says its stage and budget
        html = to_html(table)
        assert f'data-stage="{table.attrs["stage"]}"' in html and "data-budget=" in html
    # a final table's rows all come from the same runs: one n, the same seeds
    for table in headline.final_tables(frame):
        assert table["n"].nunique() == 1 and table.attrs["seeds"] == [0, 1, 2, 3, 4]


def _points(ax):
    """(x, y) of every marker drawn, and (low, high, y) of every horizontal error bar."""
    points = [(x, y) for line in ax.lines if line.get_marker() not in (None, "None", "")
              for x, y in zip(line.get_xdata(), line.get_ydata())]
    bars = [(seg[0][0], seg[1][0], seg[0][1]) for c in ax.collections for seg in c.get_segments()
            if len(seg) == 2 and seg[0][1] == seg[1][1]]
    return points, bars


def test_the_forest_plot_draws_its_table(frame):
    forest = verdicts.forest_table(verdicts.comparison_family(frame))
    assert len(forest) == 6 and set(forest["comparison"]) == {"QCNN − CNN", "QSVM − RBF SVM"}
    fig = verdicts.plot_forest(forest)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == verdicts.forest_labels(forest)
    points, bars = _points(ax)
    ticks = list(ax.get_yticks())
    for i, row in forest.iterrows():
        y = ticks[i]
        assert any(np.isclose(x, row["difference"]) and np.isclose(py, y) for x, py in points), (i, row)
        if not row["identical"]:
            assert any(np.isclose(lo, row["ci_low"]) and np.isclose(hi, row["ci_high"]) and np.isclose(by, y)
                       for lo, hi, by in bars), (i, row)
    assert any(np.isclose(line.get_xdata()[0], 0.0) for line in ax.lines if line.get_linestyle() == "-"
               and len(line.get_xdata()) == 2)  # the line at 0


def test_the_modes_plot_draws_its_tables(frame):
    tables = headline.modes_tables(frame)
    fig = verdicts.plot_modes(tables)
    ax = fig.axes[0]
    heights = sorted(round(p.get_height(), 9) for p in ax.patches)
    expected = sorted(round(v, 9) for t in tables for v in t.loc[t["mode"].isin(
        ["sequential", "fold-parallel", "data-parallel"]), "speedup"])
    assert heights == expected
    # the IQR bars: from each row's q1 to q3
    spans = sorted((round(seg[0][1], 9), round(seg[1][1], 9)) for c in ax.collections for seg in c.get_segments())
    rows = pd.concat(tables)
    rows = rows[rows["mode"].isin(["sequential", "fold-parallel", "data-parallel"])]
    assert spans == sorted(zip(rows["speedup_q1"].round(9), rows["speedup_q3"].round(9)))
    assert "sequential training on 1 thread" in ax.get_title()


def test_sentences_follow_the_statistics_rules(frame):
    forest = verdicts.forest_table(verdicts.comparison_family(frame))
    blocks = verdicts.dataset_sentences(headline.final_tables(frame), headline.modes_tables(frame), forest)
    assert [b["dataset"] for b in blocks] == ["digits", "digits", "fashion-mnist"]
    ten = next(b for b in blocks if b["budget"].startswith("10 epochs") and b["dataset"] == "digits")
    # the CNN beats the QCNN in every one of 5 seeds by 0.03-0.04: said, and beyond the corrected interval
    assert any(line.startswith("QCNN − CNN = −0.034") and "QCNN lost in all 5 seeds: CNN better." in line
               for line in ten["lines"])
    # the training modes once per dataset, against the reference the table names
    said = [line for b in blocks for line in b["lines"] if line.startswith("Parallel")]
    assert len(said) == 2 and all("sequential training on 1 thread: slower." in line for line in said)
    assert all(line.count("×") == 2 for line in said)


def test_a_fallback_dataset_is_said_on_the_first_screen_and_in_its_headings(tmp_path, monkeypatch):
    from qmlnb.lab.report import controls, header_fields, load_tables

    record = {"asked": "fashion-mnist", "used": "digits", "reason": "fashion-mnist is not in the data directory"}
    monkeypatch.setenv(run_files.DATASET_FALLBACK_ENV, json.dumps(record))
    for seed in range(5):  # the controls stage, run by the sweep on digits because fashion-mnist was absent
        for head, score in (("", 0.9), ("linear", 0.8 + 0.01 * seed)):
            params = {"dataset": "digits", "seed": seed, "epochs": 10, **({"head": head} if head else {})}
            folder = fake_run(tmp_path, "controls", params, {
                "task": "qcnn", "stage": "controls", "dataset": "digits", "classes": [3, 8], "seed": seed,
                "qcnn": scores(score), **({"head": head} if head else {})})
        pd.DataFrame({"n_qubits": [4]}).to_csv(folder / "scale.csv", index=False)
    # a record that does not match the run, or names no known dataset, changes nothing
    monkeypatch.setenv(run_files.DATASET_FALLBACK_ENV, json.dumps({**record, "asked": "<b>x</b>"}))
    fake_run(tmp_path, "other", {"dataset": "digits", "seed": 0}, {"task": "qcnn", "stage": "controls",
                                                                   "dataset": "digits", "qcnn": scores(0.9)})
    frame = load_runs(tmp_path)
    label = "digits (fallback: fashion-mnist not in the data folder)"
    assert sorted(frame["dataset"]) == ["digits"] + [label] * 10
    assert "<b>" not in " ".join(map(str, frame.astype(str).to_numpy().ravel()))
    # the first screen's warnings say which stage ran on what
    warnings = header_fields(frame)["warnings"]
    assert "10 run(s) of stage controls ran on " + label in warnings
    page = verdicts.first_screen_html([], None, warnings, 0)
    assert "fallback: fashion-mnist not in the data folder" in page
    # the controls section's heading and a run's own table name the fallback
    sentences = controls.control_sentences(controls.qcnn_controls(frame), controls.QCNN_REFERENCE, "the quantum layer")
    assert any(task.startswith(label) for task in sentences), list(sentences)
    assert set(load_tables(tmp_path, "scale", frame)["dataset"]) == {label}
