"""The report page as a benchmark report: rows that never pool settings, spread where repeats exist, no NaN or cut
cells, a header from the runs' recorded environment, one headline part (each dataset's table, then the Gram
headline), and the skipped runs grouped at the end.

Built from fabricated run folders (``fake_run`` of test_report.py); one end-to-end HTML build.
"""
import json
import re
from html import escape, unescape

import numpy as np
import pandas as pd
import pytest

from qmlnb.lab import report, runs, stages
from test_report import fake_run, qcnn, qsvm

LONG_REASON = ("dataset 'svhn' is not in the data directory /work/shared/data: it needs svhn/train_32x32.mat and "
               "svhn/test_32x32.mat (download them from http://ufldl.stanford.edu/housenumbers/ and put them in "
               "that folder); this reason is long on purpose and must reach the page whole, word for word, to the end")

# QCNN runs of one stage, dataset, mode, n_train, folds, threads: they differ in epochs and batch size (recorded
# params) and repeat over seeds.  (name, epochs, batch_size, seed, accuracy, train_s, load, noisy)
QCNN_RUNS = [
    ("e5-b16-s0", 5, 16, 0, 0.80, 10.0, 0.5, False), ("e5-b16-s1", 5, 16, 1, 0.90, 12.0, 0.7, False),
    ("e5-b16-s2", 5, 16, 2, 0.85, 11.0, 0.6, False),
    ("e3-b16-s0", 3, 16, 0, 0.60, 6.0, 2.5, True),   # other epochs: another row, never pooled with e5
    ("e5-b64-s0", 5, 64, 0, 0.50, 4.0, 1.0, False), ("e5-b64-s1", 5, 64, 1, 0.54, 4.4, 1.2, False),
]


def qcnn_runs(root):
    for name, epochs, batch, seed, acc, train_s, load, noisy in QCNN_RUNS:
        metrics = qcnn("sequential", train_s, acc, folds=1, threads=2, n_train=200, batch_size=batch)
        metrics |= {"epochs": epochs, "load": load, "noisy": noisy}
        fake_run(root, "sequential", name, metrics,
                 params={"epochs": epochs, "batch_size": batch, "seed": seed, "n_train": 200, "threads": 2})


def gram_runs(root):
    """Two backends at N = 100, 200, 400 with GFLOP/s, the cherk ratio and the cpu speedup measured in the run."""
    for backend, scale, noisy in (("cpu", 1.0, False), ("openmp", 0.25, True)):
        rows = []
        for n in (100, 200, 400):
            gram_s = 1e-7 * scale * n ** 2
            rows.append({"n_qubits": 6, "n_samples": n, "dim": 64, "gram_s": gram_s, "gram_iqr_s": gram_s / 10,
                         "gflops": 8 * n * n * 64 / gram_s / 1e9, "vs_cherk": 0.1 / scale,
                         "speedup_vs_cpu": np.nan if backend == "cpu" else 3.5, "load": 0.4, "noisy": noisy})
        # the cpu run also compared the states with PennyLane's (gram_scaling's pennylane_states)
        states = {"states_vs_pennylane": {
            "n_states": 16, "n_qubits": 6, "qmlnb_per_state_s": 1e-5, "pennylane_per_state_s": 3e-4, "ratio": 30.0,
            "ratio_q1": 28.0, "ratio_q3": 31.0, "rounds": 5, "max_abs_difference": 5e-8, "load": 0.4,
            "noisy": False}} if backend == "cpu" else {}
        fake_run(root, "gram-scaling", backend, {"task": stages.GRAM, "backend": backend, "threads": 2,
                                                  "load_max": 0.4, "noisy": noisy, **states},
                 tables={stages.GRAM_TIMES: pd.DataFrame(rows)})


def skipped_runs(root):
    for i in (10, 2, 1):  # natural order: 1, 2, 10
        runs.write_status(root / "final" / f"svhn-{i}", runs.SKIPPED, reason=LONG_REASON)
    runs.write_status(root / "final" / "broken", runs.FAILED, error="RuntimeError: planned failure")


@pytest.fixture
def page_runs(tmp_path):
    root = tmp_path / "runs"
    qcnn_runs(root)
    gram_runs(root)
    skipped_runs(root)
    return root


def test_rows_never_pool_different_settings_and_show_spread_where_repeats_exist(page_runs):
    frame = report.load_runs(page_runs)
    table = report.results_table(frame)
    # epochs and batch size vary among the runs: each is a column, and a row's runs share every parameter but
    # the seed
    assert {"epochs", "batch_size"} <= set(table.columns) and "param.seed" not in table.columns
    assert "param.epochs" not in table.columns and "param.batch_size" not in table.columns  # one column each
    qcnn_rows = table[table["model"] == "QCNN"].set_index(["epochs", "batch_size"])
    assert qcnn_rows.index.is_unique and set(qcnn_rows.index) == {(5, 16), (3, 16), (5, 64)}
    for (epochs, batch), row in qcnn_rows.iterrows():
        behind = frame[(frame["task"] == stages.QCNN) & (frame["epochs"] == epochs) & (frame["batch_size"] == batch)]
        assert row["n"] == len(behind)
        params = [c for c in behind.columns if c.startswith("param.") and c != "param.seed"]
        assert (behind[params].astype(str).nunique() == 1).all(), (epochs, batch)
        assert row["accuracy"] == pytest.approx(behind["qcnn.accuracy"].mean())
        if len(behind) > 1:
            assert row["accuracy_std"] == pytest.approx(behind["qcnn.accuracy"].std(ddof=1))
        else:
            assert np.isnan(row["accuracy_std"])
    # the page's cells: "mean ± std" where repeats exist, the mean alone for one run, n as an integer
    cells = report.format_table(table[table["model"] == "QCNN"]).set_index(["epochs", "batch_size"])
    assert cells.loc[("5", "16"), "accuracy"] == "0.850 ± 0.050" and cells.loc[("5", "16"), "n"] == "3"
    assert cells.loc[("3", "16"), "accuracy"] == "0.600" and cells.loc[("3", "16"), "n"] == "1"
    assert "accuracy_std" not in cells.columns
    modes = report.training_modes(frame)
    assert {"epochs", "batch_size", "n", "accuracy_std"} <= set(modes.columns)
    assert modes.set_index(["epochs", "batch_size"]).index.is_unique


def test_a_setting_that_does_not_vary_is_no_column():
    frame = pd.DataFrame({"param.epochs": [5, 5], "param.seed": [0, 1], "param.lr": [0.1, 0.2],
                          "batch_size": [16, 16], "n_train": [1, 2]})
    assert report.setting_columns(frame, ["n_train"]) == ["param.lr"]
    # a parameter also recorded as a metric is one column: the metric's
    both = frame.assign(**{"param.epochs": [3, 5], "epochs": [3, 5]})
    assert report.setting_columns(both, ["n_train"]) == ["epochs", "param.lr"]
    # a comparison with PennyLane made after the run's own work changes none of its numbers: not a setting
    compared = frame.assign(**{"param.compare_simulator": ["torchlayer", None], "param.pennylane_states": [16, 0]})
    assert report.setting_columns(compared, ["n_train"]) == ["param.lr"]


def test_no_cell_is_nan_or_cut_and_integers_stay_integers():
    table = pd.DataFrame({"grid": ["g"], "n_train": [25.0], "x": [np.nan], "y": [0.123456], "long": [LONG_REASON],
                          "score": [0.5], "score_std": [np.nan], "k": pd.array([pd.NA], dtype="Int64")})
    cells = report.format_table(table)
    assert cells.iloc[0].to_dict() == {"grid": "g", "n_train": "25", "x": "—", "y": "0.123", "long": LONG_REASON,
                                       "score": "0.500", "k": "—"}
    html = report.to_html(table)
    assert escape(LONG_REASON) in html and "NaN" not in html and "nan" not in html and "..." not in html
    assert "<th></th>" not in html and '<div class="qmlnb-scroll"><table class="qmlnb-table">' in html


def test_skipped_runs_grouped_with_full_reasons_in_natural_order(page_runs):
    summary = report.skipped_summary(report.run_overview(page_runs))
    assert list(summary.columns) == ["grid", "status", "runs", "which", "reason"]
    rows = {r.status: r for r in summary.itertuples()}
    assert set(rows) == {"skipped", "failed"}
    assert rows["skipped"].runs == 3 and rows["skipped"].which == "svhn-1, svhn-2, svhn-10"
    assert rows["skipped"].reason == LONG_REASON and rows["failed"].reason == "RuntimeError: planned failure"
    cells = report.format_table(summary)
    assert not cells.isin(["—"]).any().any() and set(cells["runs"]) == {"3", "1"}
    assert report.natural_key("run10") > report.natural_key("run9")


def test_gram_headline_at_the_largest_n_with_gflops_and_cherk_ratio(page_runs):
    frame = report.load_runs(page_runs)
    head = report.gram_headline(report.gram_table(frame, page_runs)).set_index("backend")
    assert set(head["N"]) == {400} and set(head.index) == {"cpu", "openmp"}
    assert head.loc["cpu", "gram_s"] == pytest.approx(1e-7 * 400 ** 2)
    assert head.loc["openmp", "gflops"] == pytest.approx(8 * 400 * 400 * 64 / (0.25e-7 * 400 ** 2) / 1e9)
    assert head.loc["openmp", "vs_cherk"] == pytest.approx(0.4) and head.loc["cpu", "vs_cherk"] == pytest.approx(0.1)
    assert head.loc["cpu", "speedup_vs_cpu"] == 1.0 and head.loc["openmp", "speedup_vs_cpu"] == 3.5
    assert head.loc["openmp", "noisy"] == 1 and head.loc["cpu", "noisy"] == 0 and set(head["n"]) == {1}
    slopes = report.gram_slopes(report.gram_table(frame, page_runs)).set_index("backend")
    assert slopes.loc["cpu", "slope"] == pytest.approx(2.0)
    assert (slopes.loc["cpu", "slope_min"], slopes.loc["cpu", "slope_max"]) == pytest.approx((2.0, 2.0))
    assert report.slope_range([1, 2, 4], [1, 2, 8]) == pytest.approx((1.0, 2.0))


def set_environment(run_dir, **changes):
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = metrics["environment"]
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    path.write_text(json.dumps(metrics))


def test_header_fields_from_the_recorded_environment(page_runs):
    for run_dir in runs.iter_runs(page_runs, runs.COMPLETE):
        set_environment(run_dir, **{"git.commit": "a" * 40, "git.dirty": False, "machine.cpu": "Test CPU",
                                    "machine.cores": 2, "machine.memory_gib": 16.0, "versions.numpy": "2.0.0",
                                    "blas.vendor": "openblas", "blas.version": "0.3.99", "blas.threads": 2,
                                    "data_dir": "/data/here", "timestamp": "2026-01-02T03:04:05+00:00"})
    frame, overview = report.load_runs(page_runs), report.run_overview(page_runs)
    fields = report.header_fields(frame, overview)
    assert list(fields)[:9] == ["date", "commit", "machine", "packages", "BLAS", "thread settings", "data folder",
                                "load", "runs"]
    assert fields["commit"] == "aaaaaaaaaa (clean)" and fields["machine"] == "Test CPU, 2 cores, 16 GiB memory"
    assert "numpy 2.0.0" in fields["packages"] and all(p in fields["packages"] for p in ("scipy", "torch",
                                                                                         "pennylane", "numba"))
    assert fields["BLAS"] == "openblas 0.3.99, 2 thread(s) at start" and fields["data folder"] == "/data/here"
    assert "2026-01-02T03:04:05+00:00" in fields["date"]
    # loads: six QCNN runs and two Gram runs (load_max 0.4); one QCNN run and the openmp Gram run are noisy
    loads = sorted([r[6] for r in QCNN_RUNS] + [0.4, 0.4])
    assert (f"min {min(loads):.2f}, median {np.median(loads):.2f}, max {max(loads):.2f}" in fields["load"])
    assert "2 of 8 runs flagged noisy" in fields["load"]
    assert fields["runs"] == "8 complete, 1 failed, 3 skipped"
    assert fields["warnings"] == ["2 run(s) are noisy: other work wanted cores while they were timed"]
    # runs from another commit (dirty) and another machine are flagged
    one = next(runs.iter_runs(page_runs, runs.COMPLETE))
    set_environment(one, **{"git.commit": "b" * 40, "git.dirty": True, "machine.cpu": "Other CPU"})
    warnings = report.header_fields(report.load_runs(page_runs))["warnings"]
    assert "the runs come from 2 commits" in warnings and "the runs come from 2 different machines" in warnings
    assert "some runs ran on a tree with uncommitted changes" in warnings
    assert report.header_markdown({"a": "b", "warnings": ["x"]}) == "**Warning: x.**\n\n- **a:** b"


def test_the_environment_records_blas_threads_and_data_folder():
    from qmlnb.lab import provenance

    env = provenance.environment()
    assert set(env["blas"]) == {"vendor", "version", "threads"} and env["blas"]["vendor"]
    assert set(env["thread_env"]) == set(provenance.THREAD_VARS) and env["data_dir"]


# the page's sections in the order a reader meets them: after the first screen (verdicts, forest plot, contents),
# the headline tables (final comparison, training modes), the Gram step's performance, then the rest; the runs,
# machine and software near the end and the runs that did not complete last
PAGE_ORDER = ("The final comparison, per dataset", "Training modes: sequential against parallel",
              "The Gram step at the largest N", "Simulators against PennyLane, measured in the same run",
              "Scores per configuration", "Gram matrix: time against N per backend", "What the controls show",
              "Runs, machine and software", "Runs that did not complete")


def headings(markdown_cells) -> list[str]:
    """The Markdown headings (##, ###) of the summary notebook's cells, without their #s, in page order."""
    return [line.lstrip("#").strip() for cell in markdown_cells for line in cell.splitlines()
            if line.startswith(("## ", "### "))]


def test_the_summary_opens_with_the_verdicts_then_the_headline_tables_and_ends_with_skipped_runs():
    nb = json.loads(report.SUMMARY_NOTEBOOK.read_text())
    found = headings("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert found[0] == PAGE_ORDER[0] and found[-1] == "Runs that did not complete"
    assert [h for h in found if h in PAGE_ORDER] == list(PAGE_ORDER)
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    first = next(i for i, c in enumerate(code) if "verdicts.first_screen_html" in c)
    tables = next(i for i, c in enumerate(code) if "for table in final_tables" in c)
    gram = next(i for i, c in enumerate(code) if "report.gram_headline" in c)
    assert first < tables < gram < next(i for i, c in enumerate(code) if "simulators.simulator_table" in c)
    assert "skipped_summary" in code[-1]
    # the contents list every section, from the notebook itself: a new section joins it with its heading
    assert report.notebook_sections(report.SUMMARY_NOTEBOOK) == [h for h in found if h in
                                                                 report.notebook_sections(report.SUMMARY_NOTEBOOK)]
    assert set(PAGE_ORDER) <= set(report.notebook_sections(report.SUMMARY_NOTEBOOK))


@pytest.mark.slow  # runs the summary notebook (a few seconds)
def test_the_page_reads_as_a_benchmark_report(page_runs, tmp_path):
    # a final-stage run: the dataset headline has a table (with the classical CNN beside CNN+SVM) to show first
    fake_run(page_runs, "final", "digits-s0", {**qsvm("openmp", 0.01), "baselines": {
        "cnn": {"accuracy": 0.8, "f1": 0.8, "roc_auc": 0.8, "balanced_accuracy": 0.8, "fit_s": 2.0},
        "rbf_svm_embeddings": {"accuracy": 0.7, "f1": 0.7, "roc_auc": 0.7, "balanced_accuracy": 0.7, "fit_s": 0.5}}},
        params={"dataset": "digits", "seed": 0, "n_train": 100, "backend": "openmp"})
    html = report.build_report(page_runs, tmp_path / "reports").read_text()
    # the page's text without its table of contents (which names every section first)
    text = re.sub(r"<[^>]+>", " ", re.sub(r'<nav id="qmlnb-toc">.*?</nav>', "", html, flags=re.S))
    for label in ("date:", "commit:", "machine:", "packages:", "BLAS:", "data folder:", "load:"):
        assert label in text, label
    page = [unescape(re.sub(r"<[^>]+>", "", h)).rstrip("¶").strip()
            for h in re.findall(r"<h[23][^>]*>(.*?)</h[23]>", html, flags=re.S)]
    assert page[0] == PAGE_ORDER[0] and page[-1] == "Runs that did not complete"  # the skipped runs last
    assert [h for h in page if h in PAGE_ORDER] == list(PAGE_ORDER)
    # the verdict and the contents come before every section; the final table (its CNN row) before the Gram one
    assert html.index('id="qmlnb-verdict"') < html.index('id="qmlnb-toc"') < html.index('<h2 id="The-final')
    assert text.index("Best: ") < text.index("The final comparison, per dataset")
    cnn = text.index("CNN: CNN (linear head, same trainer and budget)")
    assert text.index("The final comparison, per dataset") < cnn < text.index("The Gram step at the largest N")
    # every link of the contents points at a heading of the page
    ids = set(re.findall(r'<h2 id="([^"]+)"', html))
    links = re.findall(r'<li><a href="#([^"]+)">', html)
    assert links and set(links) <= ids, set(links) - ids
    # the simulators' table after the Gram headline: the states row measured in the cpu run, the QCNN row
    # naming the stage that measures it (no sequential run compared its simulator here)
    simulators = text.index("Simulators against PennyLane, measured in the same run")
    assert text.index("The Gram step at the largest N") < simulators < text.index("Scores per configuration")
    assert "10 µs per state" in unescape(text[simulators:]) and "30 [28-31]" in text[simulators:]
    assert "no run yet: the sequential stage measures it" in unescape(text[simulators:])
    tables = re.findall(r"<table.*?</table>", html, flags=re.S)
    assert tables and all(">NaN<" not in t and ">nan<" not in t and "..." not in t for t in tables)
    assert LONG_REASON in unescape(html) and "0.850 ± 0.050" in html
    assert ".qmlnb-scroll" in html and "overflow-x: auto" in html


def test_the_gram_scaling_legend_never_prints_nan_for_a_stage_with_one_n():
    import matplotlib

    matplotlib.use("Agg")
    from qmlnb.lab.report import plots, tables

    rows = [{"stage": "gram-scaling", "backend": "openmp", "n_qubits": 12, "threads": 2, "n_samples": n,
             "gram_s": 1e-8 * n * n, "gram_iqr_s": 1e-9 * n} for n in (800, 1200, 1600)]
    # a threads run times one N: no slope can be fitted
    rows.append({"stage": "gram-threads", "backend": "openmp", "n_qubits": 12, "threads": 2, "n_samples": 1600,
                 "gram_s": 0.03, "gram_iqr_s": 0.001})
    times = pd.DataFrame(rows)
    fig = plots.plot_gram_scaling(times, tables.gram_slopes(times))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("[gram-threads]: one N, no slope" in label for label in labels)
    assert any(label.startswith("openmp, 2 thr [gram-scaling]: slope 2.00") for label in labels), labels
    assert not any("nan" in label for label in labels)


def test_automatic_and_unused_values_and_rounding_leftovers_read_as_such():
    table = pd.DataFrame({"param.C": [0.0, 10.0], "bandwidth": [0, 0.2], "compare_threads": [0, 2],
                          "difference": [4.44e-17, -0.0123], "model": ["a", "b"]})
    cells = report.format_table(table)
    assert list(cells["C"]) == ["auto", "10"] and list(cells["bandwidth"]) == ["auto", "0.2"]
    assert list(cells["compare_threads"]) == ["—", "2"] and list(cells["difference"]) == ["0", "-0.0123"]
    from qmlnb.lab.report import headline

    assert headline._describe({"epochs": 2, "compare_threads": 0, "C": 0}) == "epochs=2; compare_threads=—, C=auto"
    # median [IQR] cells: the median alone where there is no spread
    iqr = pd.DataFrame({"t": [2.0, 3.0], "t_q1": [1.5, 3.0], "t_q3": [2.5, 3.0]})
    assert list(report.format_table(iqr)["t"]) == ["2 [1.5–2.5]", "3"]


def test_the_explorer_heatmap_draws_the_class_boundary_and_prints_the_alignment():
    import matplotlib

    matplotlib.use("Agg")
    from qmlnb.lab import tasks
    from qmlnb.qsvm.svm import kernel_target_alignment

    y = np.array([0, 0, 0, 1, 1])
    K = np.where(y[:, None] == y[None, :], 0.9, 0.1)
    np.fill_diagonal(K, 1.0)
    result = {"images": np.zeros((2, 4, 4)), "labels": ["3", "8"], "K": K, "y": y, "gram_s": 1e-3}
    fig = tasks.plot_exploration(result)
    ax = next(a for a in fig.axes if "fidelity kernel" in a.get_title())
    lines = [(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax.lines]
    assert ((3, 3), (0, 1)) in lines and ((0, 1), (3, 3)) in lines  # one vertical, one horizontal line at row 3
    assert tasks.class_edges(y) == [3]
    assert f"alignment {kernel_target_alignment(K, y):.3f}" in ax.get_title()
