"""Experiment trackers: a tiny sweep logged to a temporary MLflow file store and to W&B offline, read back."""
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import psutil
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook, new_output

from qmlnb import cli
from qmlnb.lab import provenance, report, runs, tasks, track

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
GRID = "tiny"
POINTS = [{"backend": "cpu", "n": 8}, {"backend": "numba", "n": 16}]


def metrics_of(point: dict) -> dict:
    """The metrics.json content of a fabricated run (scores, timing median/IQR, kernel diagnostics)."""
    n = point["n"]
    return {"stage": "qsvm", "backend": point["backend"], "noisy": False,
            "qsvm": {"accuracy": 0.5 + n / 100, "f1": 0.25 + n / 200},
            "timings": {"gram_s": {"median": n / 1000, "iqr": n / 10000, "repeats": 5}},
            "diagnostics": {"offdiag_mean": 0.125, "offdiag_std": 0.0625, "bandwidth_on_edge": False}}


def fabricate_run(runs_dir: Path, point: dict, status: str = runs.COMPLETE) -> Path:
    """A run folder as a sweep leaves it: params, tables, metrics (tasks.save_run), the executed notebook, status."""
    run_dir = runs_dir / GRID / runs.run_name(point)
    run_dir.mkdir(parents=True)
    tasks.save_run(run_dir, point, metrics_of(point), {"scores": pd.DataFrame({"n": [point["n"]], "f1": [0.5]})})
    nb = new_notebook(cells=[new_code_cell("plot()", outputs=[new_output(
        "display_data", data={"image/png": base64.b64encode(PNG).decode(), "text/plain": "<Figure>"})])])
    nbformat.write(nb, run_dir / "20-qsvm.ipynb")
    runs.write_status(run_dir, status, point=point, params=point, notebook="20-qsvm.ipynb", seconds=2.5,
                      notebook_path="/nb/20-qsvm.ipynb", notebook_sha256="0" * 64)
    return run_dir


@pytest.fixture
def tiny(tmp_path):
    """runs/tiny/ with two complete runs and one failed run (never exported)."""
    runs_dir = tmp_path / "runs"
    folders = [fabricate_run(runs_dir, point) for point in POINTS]
    fabricate_run(runs_dir, {"backend": "cpu", "n": 99}, status=runs.FAILED)
    return runs_dir, folders


@pytest.fixture(autouse=True)
def no_tracker_process_left():
    """wandb's service (and anything else started) must be gone after each test."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    yield
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"processes left behind: {[(p.pid, p.name()) for p in left]}"


def mlflow_client(store: Path):
    track.require("mlflow")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store.resolve().as_uri())


def mlflow_runs(store: Path) -> dict:
    """{run name: Run} of the experiment ``tiny`` (active runs only)."""
    client = mlflow_client(store)
    exp = client.get_experiment_by_name(GRID)
    return {} if exp is None else {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


# ------------------------------------------------------------------ what a run folder becomes
def test_read_run_maps_numbers_to_metrics_text_to_info_and_files_to_artifact_folders(tiny):
    _, (run_dir, _) = tiny
    rec = track.read_run(run_dir)
    assert (rec.grid, rec.name, rec.key) == (GRID, run_dir.name, f"{GRID}/{run_dir.name}")
    assert rec.params == POINTS[0]
    assert rec.metrics == {"qsvm.accuracy": 0.58, "qsvm.f1": 0.29, "timings.gram_s.median": 0.008,
                           "timings.gram_s.iqr": 0.0008, "timings.gram_s.repeats": 5.0,
                           "diagnostics.offdiag_mean": 0.125, "diagnostics.offdiag_std": 0.0625}
    assert rec.info == {"stage": "qsvm", "backend": "cpu", "noisy": "false", "diagnostics.bandwidth_on_edge": "false"}
    assert rec.env["git.commit"] == provenance.git_commit()["commit"] and "machine.cpu" in rec.env
    assert sorted((p.name, folder) for p, folder in rec.files) == [
        ("20-qsvm.ipynb", "notebook"), ("metrics.json", "run"), ("params.json", "run"), ("scores.csv", "tables"),
        ("status.json", "run")]
    assert rec.figures == [("20-qsvm-cell00-0.png", PNG)]
    assert rec.fingerprint == track.fingerprint(run_dir) != track.fingerprint(tiny[1][1])


# ------------------------------------------------------------------ MLflow
def test_mlflow_export_logs_a_tiny_sweep_that_reads_back(tiny, tmp_path, capsys):
    runs_dir, folders = tiny
    store = tmp_path / "mlruns"
    assert cli.main(["track", "export", str(runs_dir), "--to", "mlflow", "--store", str(store)]) == 0
    assert "2 logged, 0 already logged, 0 failed, 0 busy" in capsys.readouterr().out
    logged = mlflow_runs(store)
    assert sorted(logged) == sorted(f.name for f in folders)  # the failed run is not exported
    client = mlflow_client(store)
    for point, run_dir in zip(POINTS, folders):
        run = logged[run_dir.name]
        assert run.info.status == "FINISHED"
        assert run.data.params == {"backend": point["backend"], "n": str(point["n"])}
        assert run.data.metrics == {f"{k}": v for k, v in track.read_run(run_dir).metrics.items()}
        assert run.data.metrics["timings.gram_s.median"] == point["n"] / 1000
        assert run.data.metrics["diagnostics.offdiag_std"] == 0.0625
        tags = run.data.tags
        env = json.loads((run_dir / "metrics.json").read_text())["environment"]
        assert tags["env.git.commit"] == env["git"]["commit"] == tags["mlflow.source.git.commit"]
        assert tags["env.machine.hostname"] == env["machine"]["hostname"]
        assert tags["env.versions.numpy"] == env["versions"]["numpy"]
        assert tags["info.backend"] == point["backend"] and tags["info.stage"] == "qsvm"
        assert tags["qmlnb.run_key"] == f"{GRID}/{run_dir.name}" and tags["qmlnb.status"] == "complete"
        artifacts = {a.path for folder in ("tables", "figures", "notebook", "run")
                     for a in client.list_artifacts(run.info.run_id, folder)}
        assert artifacts == {"tables/scores.csv", "figures/20-qsvm-cell00-0.png", "notebook/20-qsvm.ipynb",
                             "run/params.json", "run/metrics.json", "run/status.json"}
        local = Path(client.download_artifacts(run.info.run_id, "tables/scores.csv", str(tmp_path)))
        assert local.read_bytes() == (run_dir / "scores.csv").read_bytes()
        figure = Path(client.download_artifacts(run.info.run_id, "figures/20-qsvm-cell00-0.png", str(tmp_path)))
        assert figure.read_bytes() == PNG
        entry = track.read_tracker_file(run_dir)["mlflow"]
        assert entry["status"] == "logged" and entry["id"] == run.info.run_id
        assert entry["store"] == str(store.resolve())
        assert runs.read_status(run_dir)["status"] == "complete"
    # the run folders are still the summary's complete runs, tracker.json beside them changes nothing
    assert len(report.load_runs(runs_dir)) == 2


def test_mlflow_export_is_idempotent_and_logs_a_redone_run_again(tiny, tmp_path):
    runs_dir, folders = tiny
    store = tmp_path / "mlruns"
    assert track.export(runs_dir, "mlflow", store)["logged"] == 2
    again = track.export(runs_dir, "mlflow", store)
    assert (again["logged"], again["already_logged"]) == (0, 2)
    # tracker.json lost (or never written): the store is searched, nothing is logged twice
    for run_dir in folders:
        (run_dir / track.TRACKER_FILE).unlink()
    again = track.export(runs_dir, "mlflow", store)
    assert (again["logged"], again["already_logged"]) == (0, 2)
    assert track.read_tracker_file(folders[0])["mlflow"]["found_in_store"] is True
    assert len(mlflow_runs(store)) == 2
    # the sweep redoes one run: new content, logged once more
    tasks.save_run(folders[0], POINTS[0], {**metrics_of(POINTS[0]), "qsvm": {"accuracy": 0.75, "f1": 0.5}})
    again = track.export(runs_dir, "mlflow", store)
    assert (again["logged"], again["already_logged"]) == (1, 1)
    client = mlflow_client(store)
    exp = client.get_experiment_by_name(GRID)
    found = client.search_runs([exp.experiment_id], f"attributes.run_name = '{folders[0].name}'")
    assert sorted(r.data.metrics["qsvm.accuracy"] for r in found) == [0.58, 0.75]


def test_a_failing_tracker_never_fails_the_run_and_export_retries_it(tiny, tmp_path, monkeypatch):
    runs_dir, folders = tiny
    store = tmp_path / "mlruns"
    status_before = [(f / runs.STATUS_FILE).read_bytes() for f in folders]
    real_log_artifact = track.require("mlflow").tracking.MlflowClient.log_artifact

    def broken(self, run_id, local_path, artifact_path=None):  # dies half way: the run exists, incomplete
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(track.require("mlflow").tracking.MlflowClient, "log_artifact", broken)
    summary = track.export(runs_dir, "mlflow", store)
    assert (summary["logged"], summary["failed"]) == (0, 2)
    assert "No space left on device" in summary["failures"][0][1]
    for run_dir, before in zip(folders, status_before):
        assert (run_dir / runs.STATUS_FILE).read_bytes() == before  # the run is untouched and still complete
        entry = track.read_tracker_file(run_dir)["mlflow"]
        assert entry["status"] == "failed" and "OSError" in entry["error"] and entry["attempts"] == 1
    assert track.export(runs_dir, "mlflow", store)["failed"] == 2
    assert track.read_tracker_file(folders[0])["mlflow"]["attempts"] == 2
    monkeypatch.setattr(track.require("mlflow").tracking.MlflowClient, "log_artifact", real_log_artifact)
    summary = track.export(runs_dir, "mlflow", store)
    assert (summary["logged"], summary["failed"]) == (2, 0)
    logged = mlflow_runs(store)  # the half-logged attempts were removed: one finished run per folder
    assert sorted(logged) == sorted(f.name for f in folders)
    assert {r.info.status for r in logged.values()} == {"FINISHED"}


def test_a_tracker_that_cannot_write_its_store_is_recorded_as_failed(tiny, tmp_path):
    runs_dir, folders = tiny
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store should be")
    entry = track.log_run(folders[0], "mlflow", blocker / "mlruns")
    assert entry["status"] == "failed" and entry["error"]
    assert track.read_tracker_file(folders[0])["mlflow"]["status"] == "failed"


# ------------------------------------------------------------------ Weights & Biases (offline)
def wandb_offline_runs(store: Path) -> dict:
    """{display name: {"run", "summary", "artifacts", "exit"}} read from the offline run files under store/wandb/."""
    out = {}
    for path in sorted((store / "wandb").glob("offline-run-*/run-*.wandb")):
        info = {"summary": {}, "artifacts": [], "exit": False}
        for record in track.read_wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                info["run"] = record.run
            elif kind == "summary":
                info["summary"].update({u.key: json.loads(u.value_json) for u in record.summary.update if u.key})
            elif kind == "artifact":
                info["artifacts"].append(record.artifact)
            elif kind == "exit":
                info["exit"] = True
        out[info["run"].display_name] = info
    return out


def test_wandb_offline_export_logs_a_tiny_sweep_that_reads_back(tiny, tmp_path, capsys):
    runs_dir, folders = tiny
    store = tmp_path / "project"
    assert cli.main(["track", "export", str(runs_dir), "--to", "wandb", "--store", str(store)]) == 0
    assert "2 logged, 0 already logged, 0 failed" in capsys.readouterr().out
    logged = wandb_offline_runs(store)
    assert sorted(logged) == sorted(f.name for f in folders)
    for point, run_dir in zip(POINTS, folders):
        info = logged[run_dir.name]
        run, rec = info["run"], track.read_run(run_dir)
        assert info["exit"] and run.run_group == GRID and run.project == "qmlnb"
        assert run.run_id == track.wandb_run_id(rec) == track.read_tracker_file(run_dir)["wandb"]["id"]
        config = {u.key: json.loads(u.value_json) for u in run.config.update}
        assert {k: config[k] for k in point} == point
        env = json.loads((run_dir / "metrics.json").read_text())["environment"]
        assert config["qmlnb"]["environment"] == env and config["qmlnb"]["run_key"] == rec.key
        assert set(run.tags) == {f"commit:{env['git']['commit'][:12]}", f"host:{env['machine']['hostname']}"}
        assert {k: info["summary"][k] for k in rec.metrics} == rec.metrics
        assert info["summary"]["timings.gram_s.iqr"] == point["n"] / 10000 and info["summary"]["stage"] == "qsvm"
        (artifact,) = info["artifacts"]
        contents = {c.path: c for c in artifact.manifest.contents}
        assert set(contents) == {"tables/scores.csv", "figures/20-qsvm-cell00-0.png", "notebook/20-qsvm.ipynb",
                                 "run/params.json", "run/metrics.json", "run/status.json"}
        # offline artifacts wait for `wandb sync` in a staging folder under the store, not in the home folder
        staged = Path(contents["tables/scores.csv"].local_path)
        assert store.resolve() in staged.parents and staged.read_bytes() == (run_dir / "scores.csv").read_bytes()
        assert Path(contents["figures/20-qsvm-cell00-0.png"].local_path).read_bytes() == PNG


def test_wandb_export_is_idempotent_and_a_crashed_offline_run_is_redone(tiny, tmp_path):
    runs_dir, folders = tiny
    store = tmp_path / "project"
    assert track.export(runs_dir, "wandb", store)["logged"] == 2
    again = track.export(runs_dir, "wandb", store)
    assert (again["logged"], again["already_logged"]) == (0, 2)
    for run_dir in folders:
        (run_dir / track.TRACKER_FILE).unlink()
    # one offline run lost its end (a crash while logging): found unfinished, removed and logged again
    rec = track.read_run(folders[1])
    (offline,) = (store / "wandb").glob(f"offline-run-*-{track.wandb_run_id(rec)}")
    run_file = offline / f"run-{track.wandb_run_id(rec)}.wandb"
    records = track.read_wandb_records(run_file)
    run_file.write_bytes(run_file.read_bytes()[:200])
    assert len(track.read_wandb_records(run_file)) < len(records)
    again = track.export(runs_dir, "wandb", store)
    assert (again["logged"], again["already_logged"]) == (1, 1)
    assert len(list((store / "wandb").glob("offline-run-*"))) == 2
    assert all(info["exit"] for info in wandb_offline_runs(store).values())


# ------------------------------------------------------------------ sweeps and notebooks
FAKE_PAPERMILL = """#!{python}
import json, os, shutil, sys
notebook, output = sys.argv[3], sys.argv[4]
cwd = sys.argv[sys.argv.index("--cwd") + 1]
params = json.loads(sys.argv[sys.argv.index("-y") + 1])
with open(os.path.join(cwd, "metrics.json"), "w") as handle:
    json.dump({{"stage": "toy", "score": params["a"] / 10, "environment": {{"git": {{"commit": "abc"}}}}}}, handle)
shutil.copyfile(notebook, output)
"""


@pytest.fixture
def toy_grid(tmp_path, monkeypatch):
    """A grid of two points whose 'papermill' writes metrics.json and copies the notebook (no kernel)."""
    nb = new_notebook(cells=[new_code_cell("a = 1\nthreads = 0", metadata={"tags": ["parameters"]})],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, tmp_path / "toy.ipynb")
    script = tmp_path / "fake-python"
    script.write_text(FAKE_PAPERMILL.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(script))
    grid = tmp_path / "toy.yaml"
    grid.write_text(yaml.safe_dump({"notebook": str(tmp_path / "toy.ipynb"), "grid": {"a": [1, 2]}}))
    return grid


def test_sweep_with_a_tracker_logs_each_completed_run_and_survives_its_failures(tmp_path, toy_grid, monkeypatch,
                                                                                 capsys):
    runs_dir, store = tmp_path / "runs", tmp_path / "mlruns"
    args = ["sweep", str(toy_grid), "--runs-dir", str(runs_dir), "--tracker", "mlflow", "--tracker-store", str(store)]
    real_log = track.MlflowSink.log

    def fail_for_a2(self, rec):
        if rec.params.get("a") == 2:
            raise RuntimeError("tracking server on fire")
        return real_log(self, rec)

    monkeypatch.setattr(track.MlflowSink, "log", fail_for_a2)
    assert cli.main(args) == 0  # the tracker's failure does not fail the sweep
    out = capsys.readouterr().out
    assert "2 runs completed, 0 already complete, 0 skipped, 0 failed" in out
    assert "1 logged, 0 already logged, 1 failed" in out and "track export" in out
    folders = sorted(runs.iter_runs(runs_dir))
    assert len(folders) == 2  # both runs complete
    entries = {json.loads((f / "params.json").read_text())["a"]: track.read_tracker_file(f)["mlflow"] for f in folders}
    assert entries[1]["status"] == "logged"
    assert entries[2]["status"] == "failed" and "tracking server on fire" in entries[2]["error"]
    assert {r.data.metrics["score"] for r in mlflow_runs_named(store, "toy").values()} == {0.1}
    monkeypatch.setattr(track.MlflowSink, "log", real_log)
    assert cli.main(["track", "export", str(runs_dir), "--to", "mlflow", "--store", str(store)]) == 0
    assert "1 logged, 1 already logged, 0 failed" in capsys.readouterr().out
    logged = mlflow_runs_named(store, "toy")
    assert {r.data.metrics["score"] for r in logged.values()} == {0.1, 0.2}
    assert all(r.data.tags["qmlnb.status"] == "complete" for r in logged.values())
    assert {a.path for r in logged.values() for a in mlflow_client(store).list_artifacts(r.info.run_id, "notebook")} \
        == {"notebook/toy.ipynb"}


def mlflow_runs_named(store: Path, grid: str) -> dict:
    client = mlflow_client(store)
    exp = client.get_experiment_by_name(grid)
    return {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def test_a_notebook_logs_its_own_run_while_its_sweep_holds_the_lock(tmp_path, monkeypatch):
    folder = tmp_path / "runs" / "interactive" / "qsvm"
    folder.mkdir(parents=True)
    tasks.save_run(folder, {"n": 4}, {"qsvm": {"f1": 0.5}})
    store = tmp_path / "mlruns"
    holder = subprocess.Popen(  # the sweep's papermill holds the run folder's lock while the notebook runs
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)",
         str(folder / runs.LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        assert track.log_run(folder, "mlflow", store)["status"] == "busy"  # someone else's run: left alone
        monkeypatch.setenv(runs.RUN_DIR_ENV, str(folder))
        entry = track.log_run(folder, "mlflow", store)
    finally:
        holder.kill()
        holder.wait()
    assert entry["status"] == "logged"
    (run,) = mlflow_runs_named(store, "interactive").values()
    assert run.info.run_name == "qsvm" and run.data.metrics == {"qsvm.f1": 0.5}
    assert track.log_run(folder, "mlflow", store)["status"] == "already_logged"
    with pytest.raises(ValueError, match="no metrics.json"):
        track.log_run(tmp_path, "mlflow", store)
    with pytest.raises(ValueError, match=r"to must be one of \('mlflow', 'wandb'\)"):
        track.log_run(folder, "tensorboard", store)


def test_the_default_store_is_under_the_project_never_in_a_run_folder(tmp_path, monkeypatch):
    project = tmp_path / "proj"
    run_dir = project / "runs" / "g" / "r"
    run_dir.mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    assert track.default_store("mlflow", run_dir) == project.resolve() / "mlruns"
    assert track.default_store("wandb", run_dir) == project.resolve()
    (project / "pyproject.toml").unlink()
    assert track.default_store("mlflow", run_dir) == project.resolve() / "mlruns"  # the folder holding runs/
    monkeypatch.chdir(project)
    assert track.default_store("wandb") == project.resolve()


def test_an_absent_tracker_is_a_clear_error_naming_the_extra(tiny, tmp_path, monkeypatch, capsys, toy_grid):
    runs_dir, folders = tiny
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    with pytest.raises(track.TrackerUnavailable, match=r'pip install -e "\.\[track\]"'):
        track.log_run(folders[0], "wandb", tmp_path)
    assert cli.main(["track", "export", str(runs_dir), "--to", "wandb", "--store", str(tmp_path)]) == 2
    assert 'pip install -e ".[track]"' in capsys.readouterr().err
    assert cli.main(["sweep", str(toy_grid), "--runs-dir", str(tmp_path / "r2"), "--tracker", "wandb"]) == 2
    assert 'pip install -e ".[track]"' in capsys.readouterr().err
    assert not (tmp_path / "r2").exists()  # refused before anything ran
    assert not (folders[0] / track.TRACKER_FILE).exists()


def test_export_refuses_a_runs_folder_that_does_not_exist(tmp_path, capsys):
    assert cli.main(["track", "export", str(tmp_path / "nope"), "--to", "mlflow"]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_track_module_imports_no_tracker_until_asked():
    code = "import sys, qmlnb.cli, qmlnb.lab.track; print('mlflow' in sys.modules, 'wandb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}).stdout
    assert out.split() == ["False", "False"]
