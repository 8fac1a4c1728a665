"""Sweeps: grid validation before any run, failure tolerance, resume, skips, threads and parallel runs."""
import ast
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from qmlnb import cli, report, runs, sweep

ROOT = Path(__file__).resolve().parent.parent

# a fast notebook (no torch): records its parameters and environment, fails or skips on request
PARAMS = 'a = 1\nscale = 0.5\nname = "x"\nflag = False\nthreads = 0\nfail = False\nskip = False\nsizes = [1, 2]\nbackend = "cpu"\nsleep = 0.0\n'
BODY = """
import os, pathlib, time
from qmlnb import experiments
if os.environ.get("TOY_SLOW"):
    time.sleep(sleep)
if skip:
    raise experiments.RunSkipped("no data here")
if fail:
    raise RuntimeError(f"planned failure a={a}")
folder = experiments.run_dir("toy")
experiments.save_run(folder, dict(a=a, scale=scale, name=name, threads=threads),
                     {"stage": "toy", "omp": os.environ.get("OMP_NUM_THREADS"), "cwd": os.getcwd(),
                      "pid": os.getpid()})
"""


@pytest.fixture
def toy(tmp_path):
    nb = new_notebook(cells=[new_code_cell(PARAMS, metadata={"tags": ["parameters"]}), new_code_cell(BODY)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = tmp_path / "toy.ipynb"
    nbformat.write(nb, path)
    return path


def grid_file(tmp_path, notebook, grid, **extra):
    path = tmp_path / f"{extra.pop('stem', 'grid')}.yaml"
    path.write_text(yaml.safe_dump({"notebook": str(notebook), "grid": grid, **extra}))
    return path


# ------------------------------------------------------------------ validation
def test_grid_is_a_product_and_lists_of_grids_are_joined(tmp_path, toy):
    s = sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1, 2], "name": ["u", "v"], "flag": True}))
    assert s.points == [{"a": 1, "name": "u", "flag": True}, {"a": 1, "name": "v", "flag": True},
                        {"a": 2, "name": "u", "flag": True}, {"a": 2, "name": "v", "flag": True}]
    s = sweep.load_sweep(grid_file(tmp_path, toy, [{"a": [1, 2]}, {"scale": [2]}]))
    assert s.points == [{"a": 1}, {"a": 2}, {"scale": 2}]
    assert s.name == "grid" and s.notebook == toy.resolve()


def test_unknown_parameter_is_refused_naming_the_notebooks_parameters(tmp_path, toy):
    with pytest.raises(sweep.SweepError, match=r"unknown parameter\(s\) 'treads'.*a, scale, name, flag, threads"):
        sweep.load_sweep(grid_file(tmp_path, toy, {"treads": [1]}))


@pytest.mark.parametrize("grid, message", [
    ({"a": ["1"]}, r"'a' = '1' is a str, but toy.ipynb expects a int"),
    ({"a": [1.5]}, r"'a' = 1.5 is a float"),
    ({"flag": [1]}, r"'flag' = 1 is a int, but .* expects a bool"),
    ({"a": [True]}, r"'a' = True is a bool"),
    ({"sizes": [3]}, r"'sizes' = 3 is a int, but .* expects a list"),
])
def test_wrong_type_is_refused(tmp_path, toy, grid, message):
    with pytest.raises(sweep.SweepError, match=message):
        sweep.load_sweep(grid_file(tmp_path, toy, grid))


def test_int_is_accepted_for_a_float_parameter(tmp_path, toy):
    assert sweep.load_sweep(grid_file(tmp_path, toy, {"scale": [1, 2.5]})).points == [{"scale": 1}, {"scale": 2.5}]


@pytest.mark.parametrize("grid", [None, [], {"a": []}, [{"a": [1]}, {"scale": []}]])
def test_empty_grid_is_refused(tmp_path, toy, grid):
    with pytest.raises(sweep.SweepError, match="the grid is empty"):
        sweep.load_sweep(grid_file(tmp_path, toy, grid))


def test_missing_notebook_and_missing_or_bad_grid_file_are_refused(tmp_path, toy):
    with pytest.raises(sweep.SweepError, match="notebook 'nope.ipynb' not found"):
        sweep.load_sweep(grid_file(tmp_path, "nope.ipynb", {"a": [1]}))
    with pytest.raises(sweep.SweepError, match="does not exist"):
        sweep.load_sweep(tmp_path / "absent.yaml")
    with pytest.raises(sweep.SweepError, match="unknown keys"):
        sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1]}, jobz=2))
    with pytest.raises(sweep.SweepError, match="'jobs' must be a positive integer"):
        sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1]}, jobs=0))
    nb = nbformat.read(toy, as_version=4)
    nb.cells[0].metadata["tags"] = []
    nbformat.write(nb, toy)
    with pytest.raises(sweep.SweepError, match="no cell tagged 'parameters'"):
        sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1]}))


def test_cli_refuses_bad_grids_before_running_anything(tmp_path, toy, capsys):
    good = grid_file(tmp_path, toy, {"a": [1]}, stem="good")
    bad = grid_file(tmp_path, toy, {"b": [1]}, stem="bad")
    assert cli.main(["sweep", str(good), str(bad), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "unknown parameter(s) 'b'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ core budget
def test_core_budget_never_exceeds_the_cores():
    budget, lock = sweep.CoreBudget(3), threading.Lock()
    in_use, peak = [0], [0]

    def job(threads):
        taken = budget.acquire(threads)
        with lock:
            in_use[0] += taken
            peak[0] = max(peak[0], in_use[0])
        time.sleep(0.01)
        with lock:
            in_use[0] -= taken
        budget.release(taken)

    workers = [threading.Thread(target=job, args=(t,)) for t in [1, 2, 3, 2, 1, 5] * 3]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert peak[0] <= 3 and budget.free == 3


# ------------------------------------------------------------------ running
def test_sweep_records_failures_goes_on_and_resumes(tmp_path, toy):
    grid = grid_file(tmp_path, toy, [{"a": [1, 2], "threads": [1]}, {"a": [3], "fail": True, "threads": [1]},
                                     {"a": [4], "skip": True, "threads": [1]}, {"a": [5], "threads": [64]}],
                     name="toy-grid")
    s = sweep.load_sweep(grid, tmp_path / "runs")
    summary = sweep.run_sweeps([s], jobs=2, cores=2, progress=False)
    assert (summary["complete"], summary["failed"], summary["skipped"]) == (2, 1, 2)
    folder = tmp_path / "runs" / "toy-grid"
    ok = folder / "a-1_threads-1"
    assert runs.is_complete(ok)
    metrics = json.loads((ok / "metrics.json").read_text())
    assert metrics["omp"] == "1" and Path(metrics["cwd"]) == ok.resolve()
    assert metrics["environment"]["machine"]["cores"] >= 1
    assert json.loads((ok / "params.json").read_text())["a"] == 1
    assert (ok / "toy.ipynb").is_file() and not list(ok.glob(".*executing*"))
    failed = runs.read_status(folder / "a-3_fail-True_threads-1")
    assert failed["status"] == "failed" and "RuntimeError: planned failure a=3" in failed["error"]
    skipped = runs.read_status(folder / "a-4_skip-True_threads-1")
    assert skipped["status"] == "skipped" and skipped["reason"] == "no data here"
    assert "exceeds the 2 cores" in runs.read_status(folder / "a-5_threads-64")["reason"]

    # an interrupted run: its folder has files but no final marker
    interrupted = folder / "a-2_threads-1"
    runs.write_status(interrupted, runs.RUNNING)
    (interrupted / "metrics.json").write_text("{half")
    stamp = (ok / "status.json").stat().st_mtime_ns
    summary = sweep.run_sweeps([s], jobs=1, cores=2, progress=False)
    assert summary["already_complete"] == 1 and summary["complete"] == 1 and summary["failed"] == 1
    assert (ok / "status.json").stat().st_mtime_ns == stamp  # the completed run was not redone
    assert runs.is_complete(interrupted) and json.loads((interrupted / "metrics.json").read_text())["stage"] == "toy"


def test_a_sweep_killed_mid_run_loses_only_that_run(tmp_path, toy):
    grid = grid_file(tmp_path, toy, [{"a": [1], "threads": [1]}, {"a": [2], "sleep": [60.0], "threads": [1]}],
                     name="killed")
    runs_dir = tmp_path / "runs"
    # TOY_SLOW: only this first sweep's slow run really sleeps (the kernel inherits the environment)
    proc = subprocess.Popen([sys.executable, "-m", "qmlnb", "sweep", str(grid), "--runs-dir", str(runs_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "TOY_SLOW": "1"})
    slow = runs_dir / "killed" / "a-2_sleep-60.0_threads-1"
    try:
        deadline = time.monotonic() + 120
        while not list(slow.glob(".*executing.ipynb")):  # papermill has started the slow run
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its papermill/kernel children, at once
        proc.wait()
    assert runs.is_complete(runs_dir / "killed" / "a-1_threads-1")
    assert runs.read_status(slow)["status"] == runs.RUNNING
    assert list(report.load_runs(runs_dir)["run"]) == ["a-1_threads-1"]  # the summary never sees the killed run
    summary = sweep.run_sweeps([sweep.load_sweep(grid, runs_dir)], cores=2, progress=False)
    assert (summary["already_complete"], summary["complete"]) == (1, 1)
    assert runs.is_complete(slow) and not list(slow.glob(".*executing*"))


def test_default_threads_share_the_cores_between_parallel_runs(tmp_path, toy):
    s = sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1, 2]}, name="par"), tmp_path / "runs")
    summary = sweep.run_sweeps([s], jobs=2, cores=2, progress=False)
    assert summary["complete"] == 2
    for a in (1, 2):
        metrics = json.loads((tmp_path / "runs" / "par" / f"a-{a}" / "metrics.json").read_text())
        assert metrics["omp"] == "1"  # 2 cores / 2 jobs
    # the grid may cap parallelism: a timing stage asks for one run at a time, all cores
    s = sweep.load_sweep(grid_file(tmp_path, toy, {"a": [7]}, name="serial", jobs=1), tmp_path / "runs")
    assert [t for *_, t, _ in sweep.plan([s], cores=2, jobs=2)] == [2]


def test_points_naming_an_unusable_backend_are_skipped_before_a_kernel_starts(tmp_path, toy, monkeypatch):
    import qmlnb.kernels

    monkeypatch.setattr(qmlnb.kernels, "available_backends",
                        lambda: {"cpu": (True, "BLAS"), "gpu": (False, "no CUDA device here")})
    s = sweep.load_sweep(grid_file(tmp_path, toy, {"backend": ["gpu"], "threads": [1]}, name="gpu"), tmp_path / "runs")
    summary = sweep.run_sweeps([s], cores=2, progress=False)
    record = runs.read_status(tmp_path / "runs" / "gpu" / "backend-gpu_threads-1")
    assert summary["skipped"] == 1 and record["status"] == "skipped"
    assert record["reason"] == "Gram backend 'gpu' cannot run here: no CUDA device here"
    assert not list((tmp_path / "runs" / "gpu" / "backend-gpu_threads-1").glob("*.ipynb"))  # nothing ran


def test_cli_sweep_exit_code_and_list(tmp_path, toy, capsys):
    grid = grid_file(tmp_path, toy, {"a": [1], "fail": [False, True], "threads": [1]}, name="cli")
    args = ["sweep", str(grid), "--runs-dir", str(tmp_path / "runs")]
    assert cli.main(args + ["--list"]) == 0
    assert capsys.readouterr().out.count("  run") == 2
    assert cli.main(args) == 1
    out = capsys.readouterr()
    assert "1 run, 0 already complete, 0 skipped, 1 failed" in out.out and "planned failure" in out.err


# ------------------------------------------------------------------ committed files
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
GRIDS = sorted((ROOT / "params").glob("*.yaml"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_are_stripped_with_one_literal_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged 'parameters'"
    for statement in ast.parse(tagged[0].source).body:
        assert isinstance(statement, ast.Assign) and len(statement.targets) == 1
        assert isinstance(statement.targets[0], ast.Name)
        ast.literal_eval(statement.value)  # literals only
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"outputs left in {path.name}"


def test_there_are_notebooks_and_grids(tmp_path):
    import re

    # docs/notebooks.md lists exactly the committed grids, and only notebooks that exist
    docs = (ROOT / "docs" / "notebooks.md").read_text()
    assert set(re.findall(r"`(\d\d-[\w-]+\.yaml)`", docs)) == {p.name for p in GRIDS}
    assert set(re.findall(r"`(\d\d-[\w-]+\.ipynb)`", docs)) == {p.name for p in NOTEBOOKS}
    sweeps = [sweep.load_sweep(path, tmp_path) for path in GRIDS]
    names = [s.name for s in sweeps]
    assert len(set(names)) == len(names), names  # each grid writes its own runs/<name>/
    for s in sweeps:
        assert s.notebook in NOTEBOOKS and s.points, s.path
        assert set().union(*s.points) <= set(sweep.notebook_parameters(s.notebook)), s.path
    # every stage notebook is run by a grid; the summary is the report's
    assert {s.notebook.name for s in sweeps} == {p.name for p in NOTEBOOKS} - {"00-explore.ipynb", "90-summary.ipynb"}
    assert report.SUMMARY_NOTEBOOK in NOTEBOOKS
    # the report finds its QCNN sweeps by grid name: each such grid exists and varies what its section plots
    qcnn = [s for s in sweeps if s.notebook.name == "10-train-qcnn.ipynb"]
    for word, varied in (("threads", "threads"), ("dataset-size", "n_train"), ("batch-size", "batch_size")):
        assert any(word in s.name and len({p[varied] for p in s.points}) > 1 for s in qcnn), word


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: p.name)
def test_committed_grids_are_valid_for_their_notebooks(path, tmp_path):
    s = sweep.load_sweep(path, tmp_path)
    assert s.points and s.notebook.parent == ROOT / "notebooks"


@pytest.mark.timeout(180)
def test_sweep_points_run_as_dask_tasks(tmp_path, toy, monkeypatch):
    distributed = pytest.importorskip("distributed")
    monkeypatch.chdir(tmp_path)  # a relative runs folder must reach the workers as an absolute path
    grid = grid_file(tmp_path, toy, [{"a": [1, 2]}, {"a": [3], "fail": True}, {"a": [4], "threads": [2]}],
                     name="dask-grid")
    s = sweep.load_sweep(grid, "runs")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        with distributed.get_task_stream(client) as stream:
            summary = sweep.run_sweeps([s], client=client, progress=False)
    assert (summary["complete"], summary["failed"], summary["skipped"]) == (2, 1, 1)
    assert sum("_point_task" in str(task["key"]) for task in stream.data) == 3  # the runs were Dask tasks
    folder = tmp_path / "runs" / "dask-grid"
    metrics = json.loads((folder / "a-1" / "metrics.json").read_text())
    assert metrics["omp"] == "1" and Path(metrics["cwd"]) == (folder / "a-1").resolve()  # a worker's one thread
    assert "planned failure a=3" in runs.read_status(folder / "a-3_fail-True")["error"]
    assert "exceeds the 1 cores of a Dask worker" in runs.read_status(folder / "a-4_threads-2")["reason"]
    # the command line: a fresh LocalCluster; completed points are not redone
    assert cli.main(["sweep", str(grid), "--runs-dir", "runs", "--dask", "local"]) == 1  # a=3 fails again
    assert runs.is_complete(folder / "a-1") and json.loads((folder / "a-1" / "metrics.json").read_text()) == metrics


@pytest.mark.timeout(60)
def test_a_dask_cluster_without_workers_is_refused_before_anything_runs(tmp_path, toy, capsys):
    distributed = pytest.importorskip("distributed")
    grid = grid_file(tmp_path, toy, {"a": [1]}, name="no-workers")
    with distributed.LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=":0") as cluster:
        args = ["sweep", str(grid), "--runs-dir", str(tmp_path / "runs"), "--dask", cluster.scheduler_address]
        assert cli.main(args) == 2
    assert "has no workers" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
