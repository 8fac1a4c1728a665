"""The report: tables from run folders only, refusal without runs, and one smoke sweep to HTML checked in Chromium."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from qmlnb import cli, experiments, report, runs, sweep

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def fake_run(runs_dir, grid, name, metrics, status=runs.COMPLETE, params=None, tables=None):
    folder = runs_dir / grid / name
    experiments.save_run(folder, params or {}, metrics, tables)
    runs.write_status(folder, status)
    return folder


def qcnn(mode, train_s, acc=0.8, folds=2, threads=2, dataset="digits", n_train=100):
    return {"stage": "qcnn", "dataset": dataset, "mode": mode, "folds": folds, "threads": threads, "n_train": n_train,
            "qcnn": {"accuracy": acc, "f1": acc, "roc_auc": acc, "balanced_accuracy": acc},
            "timings": {"train_s": train_s}}


def qsvm(backend, gram_s, acc=0.9):
    scores = {"accuracy": acc, "f1": acc, "roc_auc": acc, "balanced_accuracy": acc}
    return {"stage": "qsvm", "dataset": "digits", "mode": "sequential", "backend": backend, "threads": 2,
            "n_train": 100, "qcnn": scores, "qsvm": scores, "timings": {"train_s": 10.0, "gram_s": gram_s},
            "baselines": {"rbf_svm_embeddings": {**scores, "fit_s": 0.5}}}


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


def test_results_table_speedups_against_sequential_and_cpu(tmp_path):
    fake_run(tmp_path, "modes", "seq", qcnn("sequential", 8.0))
    fake_run(tmp_path, "modes", "fold", qcnn("fold-parallel", 5.0))
    fake_run(tmp_path, "modes", "seq1", qcnn("sequential", 3.0, folds=1))  # other work: not the reference
    fake_run(tmp_path, "qsvm", "cpu", qsvm("cpu", 2.0))
    fake_run(tmp_path, "qsvm", "numba", qsvm("numba", 0.5, acc=0.7))
    table = report.results_table(report.load_runs(tmp_path)).set_index(["model", "variant", "folds"])
    assert table.loc[("QCNN", "fold-parallel", 2), "speedup"] == pytest.approx(8.0 / 5.0)
    assert table.loc[("QCNN", "sequential", 1), "speedup"] == pytest.approx(1.0)
    assert table.loc[("QSVM", "numba", 1), "speedup"] == pytest.approx(4.0)
    assert table.loc[("QSVM", "numba", 1), "accuracy"] == pytest.approx(0.7)
    # the baselines of both QSVM runs (same split) are averaged
    assert table.loc[("rbf_svm_embeddings", "classical", 1), ["f1", "runs"]].tolist() == pytest.approx([0.8, 2])


def test_gram_slope_and_backend_speedup(tmp_path):
    n = np.array([100, 200, 400, 800])
    assert report.fit_loglog_slope(n, 3e-8 * n**2) == pytest.approx(2.0)
    assert np.isnan(report.fit_loglog_slope([100], [1.0]))
    for backend, factor in (("cpu", 1.0), ("numba", 0.25)):
        table = pd.DataFrame({"n_qubits": 6, "n_samples": n, "gram_s": factor * 1e-7 * n**2})
        fake_run(tmp_path, "gram", backend, {"stage": "gram-scaling", "backend": backend, "threads": 2},
                 tables={"gram_times": table})
    times = report.gram_table(report.load_runs(tmp_path), tmp_path)
    assert set(times["backend"]) == {"cpu", "numba"}
    assert report.gram_slopes(times)["slope"].to_numpy() == pytest.approx([2.0, 2.0])
    speed = report.backend_speedup(times)
    assert speed.loc[speed["backend"] == "numba", "speedup_vs_cpu"].to_numpy() == pytest.approx([4.0] * 4)


def test_report_refuses_without_runs(tmp_path, capsys):
    with pytest.raises(report.ReportError, match="no complete runs under .*run a sweep first"):
        report.build_report(tmp_path / "runs", tmp_path / "reports")
    fake_run(tmp_path / "runs", "g", "failed-only", qcnn("sequential", 1.0), status=runs.FAILED)
    assert cli.main(["report", "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "reports")]) == 2
    assert "no complete runs" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()
    with pytest.raises(report.ReportError, match="summary notebook .* not found"):
        report.build_report(tmp_path / "runs", tmp_path / "reports", notebook=tmp_path / "absent.ipynb")


@pytest.fixture
def runs_with_a_corrupt_one(tmp_path):
    """A readable complete QCNN run beside a complete run whose metrics.json is corrupt."""
    scores = {"accuracy": 0.75, "f1": 0.75, "roc_auc": 0.75, "balanced_accuracy": 0.75}
    good = tmp_path / "runs" / "modes" / "good"
    experiments.save_run(good, {"n_train": 40}, {"stage": "qcnn", "dataset": "digits", "mode": "sequential",
                                                 "folds": 1, "threads": 1, "n_train": 40, "qcnn": scores,
                                                 "timings": {"train_s": 2.0}})
    runs.write_status(good, runs.COMPLETE)
    bad = tmp_path / "runs" / "modes" / "corrupt"
    experiments.save_run(bad, {"n_train": 80}, {"stage": "qcnn"})
    (bad / "metrics.json").write_text('{"stage": "qcnn", "qcnn": {"accur')  # e.g. edited by hand, a bad disk
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


# ------------------------------------------------------------------ one smoke sweep, end to end
SMOKE = [
    ("gram-threads", "30-gram-scaling.ipynb",
     {"backend": ["cpu"], "qubits": [[3, 4]], "sizes": [[20, 40]], "repeats": [1], "threads": [1, 2]}),
    ("dataset-size", "10-train-qcnn.ipynb", {"n_train": [40], "batch_size": [16], "epochs": [1], "threads": [1]}),
    ("qsvm", "20-qsvm.ipynb", {"n_train": [40], "epochs": [1], "batch_size": [16], "threads": [1]}),
]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Run the real notebooks on tiny grids, then the report (with a half-written run lying beside them)."""
    tmp = tmp_path_factory.mktemp("smoke")
    grids = []
    for name, notebook, grid in SMOKE:
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"name": name, "notebook": str(ROOT / "notebooks" / notebook), "grid": grid}))
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


def test_smoke_sweep_completes_every_run(smoke):
    summary, _, tmp = smoke
    assert summary["failed"] == 0, summary["failures"]
    assert summary["complete"] == 4
    for folder in runs.iter_runs(tmp / "runs"):
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["environment"]["git"]["commit"] and metrics["threads"] >= 1
        assert (folder / "params.json").is_file()


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


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (.ci/run installs it)")
def test_html_renders_tables_and_images_in_headless_chromium(smoke, tmp_path):
    _, html, _ = smoke
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--dump-dom", html.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=True).stdout
    assert "Scores per dataset and model" in dom and "Gram matrix: time against N per backend" in dom
    assert dom.count("<table") >= 5
    images = re.findall(r'<img[^>]+src="data:image/png;base64,', dom)
    assert len(images) >= 4
    assert re.search(r'<button id="qmlnb-code-toggle"[^>]*>show code</button>', dom)
