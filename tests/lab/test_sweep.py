"""Sweeps: grid validation before any run, failure tolerance, resume, skips, threads and parallel runs."""
import ast
import errno
import hashlib
import json
import os
import re
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

from qmlnb import cli
from qmlnb.lab import executor, report, runs, stages, sweep, tasks
from qmlnb import _util

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable  # the real one: the fake_papermill fixture replaces sys.executable

# a fast notebook (no torch): records its parameters and environment, fails or skips on request
PARAMS = 'a = 1\nscale = 0.5\nname = "x"\nflag = False\nthreads = 0\nfail = False\nskip = False\nsizes = [1, 2]\nbackend = "cpu"\nsleep = 0.0\n'
BODY = """
import os, pathlib, time
from qmlnb.lab import tasks
if os.environ.get("TOY_SLOW"):
    pathlib.Path("kernel.pid").write_text(str(os.getpid()))  # the kernel is running this point
    time.sleep(sleep)
if skip:
    raise tasks.RunSkipped("no data here")
if fail:
    raise RuntimeError(f"planned failure a={a}")
folder = tasks.run_dir("toy")
tasks.save_run(folder, dict(a=a, scale=scale, name=name, threads=threads),
                     {"stage": "toy", "omp": os.environ.get("OMP_NUM_THREADS"), "cwd": os.getcwd(),
                      "pid": os.getpid(), "data_dir": os.environ.get("QMLNB_DATA_DIR")})
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


def run_of(folder, **point):
    """The run folder of ``point`` in the grid folder ``folder``."""
    return folder / runs.run_name(point)


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
    ({"a": ["1"]}, r"'a' = '1' is a str, but toy.ipynb expects an int"),
    ({"a": [1.5]}, r"'a' = 1.5 is a float"),
    ({"flag": [1]}, r"'flag' = 1 is an int, but .* expects a bool"),
    ({"a": [True]}, r"'a' = True is a bool"),
    ({"sizes": [3]}, r"'sizes' = 3 is an int, but .* expects a list"),
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


@pytest.mark.parametrize("name", ["../../x", "/tmp/qmlnb-abs", "a/b", "..", ".", ".hidden", "a\\b", "a b", "x" * 101])
def test_grid_name_must_be_one_plain_folder_name(tmp_path, toy, name):
    with pytest.raises(sweep.SweepError, match="is not a plain folder name"):
        sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1]}, name=name), tmp_path / "runs")


def test_a_grid_name_pointing_outside_the_runs_folder_touches_nothing(tmp_path, toy, capsys):
    victim = tmp_path / "victim" / runs.run_name({"a": 1})
    victim.mkdir(parents=True)
    (victim / "keep.txt").write_text("precious")
    grid = grid_file(tmp_path, toy, {"a": [1]}, name="../victim")
    assert cli.main(["sweep", str(grid), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "'../victim' is not a plain folder name" in capsys.readouterr().err
    assert [p.name for p in victim.iterdir()] == ["keep.txt"] and not (tmp_path / "runs").exists()
    # a grid folder that is a symlink out of the runs folder is refused as well
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "linked").symlink_to(tmp_path / "victim")
    s = sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1]}, name="linked"), tmp_path / "runs")
    with pytest.raises(sweep.SweepError, match="not inside the runs folder"):
        sweep.run_sweeps([s], cores=2, progress=False)
    assert [p.name for p in victim.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("grid", [{"a": [1, 1]}, [{"a": [1]}, {"a": [2]}, {"a": [1]}], {"a": [[1, 2], [1, 2]]}])
def test_duplicate_points_are_refused(tmp_path, toy, grid):
    with pytest.raises(sweep.SweepError, match="appears twice in the grid"):
        sweep.load_sweep(grid_file(tmp_path, toy, grid))


def test_two_grids_sharing_a_run_folder_are_refused(tmp_path, toy, capsys):
    one = grid_file(tmp_path, toy, {"a": [1, 2]}, name="same", stem="one")
    two = grid_file(tmp_path, toy, {"a": [2, 3]}, name="same", stem="two")
    assert cli.main(["sweep", str(one), str(two), "--runs-dir", str(tmp_path / "runs"), "--list"]) == 2
    assert "both have the point {'a': 2} under the name 'same'" in capsys.readouterr().err


@pytest.mark.parametrize("text", ["not json", "{}", '{"cells": [', "[1, 2]"])
def test_a_notebook_that_is_not_a_notebook_is_refused(tmp_path, text):
    bad = tmp_path / "bad.ipynb"
    bad.write_text(text)
    with pytest.raises(sweep.SweepError, match="bad.ipynb is not a valid Jupyter notebook"):
        sweep.load_sweep(grid_file(tmp_path, bad, {"a": [1]}))


def test_cli_refuses_bad_grids_before_running_anything(tmp_path, toy, capsys):
    good = grid_file(tmp_path, toy, {"a": [1]}, stem="good")
    bad = grid_file(tmp_path, toy, {"b": [1]}, stem="bad")
    assert cli.main(["sweep", str(good), str(bad), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "unknown parameter(s) 'b'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flag", ["--jobs", "--cores"])
def test_cli_refuses_a_non_positive_jobs_or_cores(tmp_path, toy, capsys, flag):
    grid = grid_file(tmp_path, toy, {"a": [1]})
    assert cli.main(["sweep", str(grid), "--runs-dir", str(tmp_path / "runs"), flag, "0"]) == 2
    assert f"{flag} must be a positive integer, got 0" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("kwargs, message", [({"repeats": 0}, "repeats must be a positive integer, got 0"),
                                             ({"qubits": [4, 0]}, "each of qubits must be a positive integer"),
                                             ({"qubits": [2.5]}, "each of qubits must be a positive integer")])
def test_gram_scaling_refuses_bad_counts_before_loading_data(kwargs, message, monkeypatch):
    monkeypatch.setattr(tasks.common, "load_data", lambda *a, **k: pytest.fail("data loaded before the arguments were checked"))
    with pytest.raises(ValueError, match=message):
        tasks.gram_scaling(**kwargs)


def test_the_papermill_command_is_written_once(tmp_path):
    from qmlnb.lab.papermill_run import papermill_command

    cmd = papermill_command(tmp_path / "in.ipynb", tmp_path / "out.ipynb", cwd=tmp_path,
                            parameters={"a": 1, "b": 1.0, "c": [1, 2]}, timeout=30)
    assert cmd[:5] == [sys.executable, "-m", "qmlnb.lab.papermill_run", str(tmp_path / "in.ipynb"),
                       str(tmp_path / "out.ipynb")]
    assert cmd[cmd.index("--cwd") + 1] == str(tmp_path) and cmd[cmd.index("--execution-timeout") + 1] == "30"
    assert json.loads(cmd[cmd.index("-y") + 1]) == {"a": 1, "b": 1.0, "c": [1, 2]}
    assert "--execution-timeout" not in papermill_command("a", "b", cwd=".", parameters={})
    with pytest.raises(ValueError, match="timeout must be a positive integer"):
        papermill_command("a", "b", cwd=".", parameters={}, timeout=0)
    # the sweep and the report build their command with it: no other module spells papermill's argv
    spelled = [p.relative_to(ROOT).as_posix() for p in (ROOT / "qmlnb").rglob("*.py")
               if '"-m", "qmlnb.lab.papermill_run"' in p.read_text() or "execute_notebook(" in p.read_text()]
    assert spelled == ["qmlnb/lab/papermill_run.py"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_runner_executes_then_kills_the_kernel_with_its_children(tmp_path):
    from qmlnb.lab.papermill_run import papermill_command

    # a cell leaves a child process running, as a fold-parallel pool or a data-parallel group does
    nb = new_notebook(cells=[new_code_cell("a = 1", metadata={"tags": ["parameters"]}),
                             new_code_cell("import pathlib, subprocess, sys\n"
                                           "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
                                           "pathlib.Path('child.pid').write_text(str(child.pid))\n"
                                           "print('a x 2 =', a * 2)")],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, tmp_path / "in.ipynb")
    cmd = papermill_command(tmp_path / "in.ipynb", tmp_path / "out.ipynb", cwd=tmp_path, parameters={"a": 21})
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert "a x 2 = 42" in out.cells[-1].outputs[0]["text"]  # the injected parameter, then every cell ran
    pid = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:  # killed with the kernel's process group
        time.sleep(0.1)
    assert not _alive(pid)


def test_the_runner_fails_with_the_cells_error(tmp_path):
    from qmlnb.lab.papermill_run import papermill_command

    nb = new_notebook(cells=[new_code_cell("raise ValueError('planned')")],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, tmp_path / "in.ipynb")
    done = subprocess.run(papermill_command(tmp_path / "in.ipynb", tmp_path / "out.ipynb", cwd=tmp_path,
                                            parameters={}), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "PapermillExecutionError" in done.stderr and "planned" in done.stderr
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert out.cells[-1].outputs[0]["ename"] == "ValueError"


@pytest.mark.parametrize("call", ["papermill_run.main(['absent.ipynb', 'out.ipynb', '--cwd', '.'])",
                                  "cli.main(['sweep', 'absent.yaml', '--list'])"])
def test_the_runner_and_the_commands_do_not_import_the_iri_checker_no_notebook_uses(tmp_path, call):
    # jsonschema imported rfc3987_syntax (2 to 5 s) for a string format no notebook schema has: every papermill
    # run and every `python -m qmlnb` command (a sweep, a report) paid it
    code = (f"import sys\nfrom qmlnb import cli\nfrom qmlnb.lab import papermill_run\ntry:\n    {call}\n"
            "except BaseException as exc:\n    print(type(exc).__name__)\nimport nbformat\n"
            "print(sys.modules.get('rfc3987_syntax', 'absent'), 'jsonschema' in sys.modules)")
    done = subprocess.run([PYTHON, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-2:] == ["None", "True"]  # nbformat's schema checks loaded, not that parser


@pytest.mark.parametrize("literal, owner", [('"QMLNB_RUN_DIR"', "qmlnb/lab/runs.py"),
                                            ('"QMLNB_DATA_DIR"', "qmlnb/data/catalog.py")])
def test_environment_variable_names_are_written_once(literal, owner):
    spelled = [p.relative_to(ROOT).as_posix() for p in (ROOT / "qmlnb").rglob("*.py") if literal in p.read_text()]
    assert spelled == [owner]


def test_a_grid_stage_must_be_a_known_stage(tmp_path, toy):
    with pytest.raises(sweep.SweepError, match=r"'stage' = 'thread' is not a known stage; known stages: sequential"):
        sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1]}, stage="thread"))
    assert sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1]}, stage=stages.THREADS)).stage == "threads"


def test_each_run_records_its_grids_stage(tmp_path, toy, monkeypatch):
    monkeypatch.setenv(stages.STAGE_ENV, "from-the-shell")  # never leaks into a run
    staged = sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1], "threads": [1]}, name="renamed",
                                        stage=stages.DATASET_SIZE, stem="staged"), tmp_path / "runs")
    plain = sweep.load_sweep(grid_file(tmp_path, toy, {"a": [2], "threads": [1]}, name="plain", stem="plain"),
                             tmp_path / "runs")
    assert sweep.run_sweeps([staged, plain], cores=2, progress=False)["complete"] == 2
    folder = staged.run_dir({"a": 1, "threads": 1})
    assert json.loads((folder / "metrics.json").read_text())["stage"] == "dataset-size"
    assert runs.read_status(folder)["stage"] == "dataset-size"
    # no stage in the grid: the notebook's own ("toy") stands
    assert json.loads((plain.run_dir({"a": 2, "threads": 1}) / "metrics.json").read_text())["stage"] == "toy"
    # a run recorded under another stage belongs to another report section: it is run again
    moved = sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1], "threads": [1]}, name="renamed",
                                       stage=stages.BATCH_SIZE, stem="moved"), tmp_path / "runs")
    assert [action for *_, action in sweep.plan([staged], 2, 1)] == ["done"]
    assert [action for *_, action in sweep.plan([moved], 2, 1)] == ["run"]


@pytest.mark.parametrize("grid, message", [
    ({"backend": ["cpu", "gpu"]}, r"parameter 'backend' = 'gpu' is not a known Gram backend; known: cpu, numba, openmp"),
    ([{"a": [1]}, {"dataset": ["mnist"]}],
     r"parameter 'dataset' = 'mnist' is not a known dataset; known: digits, fashion-mnist, cifar10, svhn"),
])
def test_unknown_backend_or_dataset_is_refused_when_the_grid_is_loaded(tmp_path, toy, grid, message):
    nb = nbformat.read(toy, as_version=4)
    nb.cells[0].source += 'dataset = "digits"\n'
    nbformat.write(nb, toy)
    path = grid_file(tmp_path, toy, grid)
    with pytest.raises(sweep.SweepError, match=f"^{re.escape(str(path))}: {message}"):
        sweep.load_sweep(path)


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_a_data_folder_that_does_not_exist_is_refused_before_anything_runs(tmp_path, toy, capsys, monkeypatch, how):
    grid = grid_file(tmp_path, toy, {"a": [1]})
    missing = tmp_path / "no-such-data"
    args = ["sweep", str(grid), "--runs-dir", str(tmp_path / "runs")]
    if how == "flag":
        args += ["--data-dir", str(missing)]
    else:
        monkeypatch.setenv("QMLNB_DATA_DIR", str(missing))
    assert cli.main(args) == 2
    source = "--data-dir" if how == "flag" else "$QMLNB_DATA_DIR"
    assert f"the data folder {missing}, given by {source}, does not exist" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(sweep.SweepError, match="does not exist"):
        sweep.run_sweeps([sweep.load_sweep(grid, tmp_path / "runs")], cores=2, progress=False,
                         data_dir=missing if how == "flag" else None)
    assert not (tmp_path / "runs").exists()


def test_sweep_data_dir_reaches_every_run_as_an_absolute_path(tmp_path, toy, monkeypatch):
    (tmp_path / "my-data").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QMLNB_DATA_DIR", str(tmp_path / "elsewhere"))  # the flag wins over the variable
    grid = grid_file(tmp_path, toy, {"a": [1], "threads": [1]}, name="data")
    assert cli.main(["sweep", str(grid), "--runs-dir", "runs", "--data-dir", "my-data"]) == 0
    metrics = json.loads((run_of(tmp_path / "runs" / "data", a=1, threads=1) / "metrics.json").read_text())
    assert metrics["data_dir"] == str(tmp_path / "my-data")


def test_progress_labels_show_the_values_that_tell_points_apart(tmp_path, toy):
    grid = {"name": ["a-long-shared-value-" * 3], "sizes": [[1, 2, 3, 4, 5, 6, 7, 8]], "scale": [0.5], "a": [1, 2]}
    s = sweep.load_sweep(grid_file(tmp_path, toy, grid, name="labels"))
    # the run folders' names differ only in "a-1"/"a-2" up front and in the hash at the end
    assert [s.label(p) for p in s.points] == ["labels: a=1", "labels: a=2"]
    one = sweep.load_sweep(grid_file(tmp_path, toy, {"name": ["x" * 80]}, name="one", stem="one"))
    assert one.label(one.points[0]) == ("one: name=" + '"' + "x" * 80 + '"')[:57] + "..."
    assert len(one.label(one.points[0])) == 60


def test_messages_use_an_before_a_vowel_and_plural_counts():
    assert _util.a_or_an("int") == "an int" and _util.a_or_an("str") == "a str"
    assert _util.plural(1, "run") == "1 run" and _util.plural(28, "run") == "28 runs" and _util.plural(0, "run") == "0 runs"


# ------------------------------------------------------------------ core budget
def test_core_budget_never_exceeds_the_cores():
    budget, lock = executor.CoreBudget(3), threading.Lock()
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
    ok = run_of(folder, a=1, threads=1)
    assert runs.is_complete(ok)
    metrics = json.loads((ok / "metrics.json").read_text())
    assert metrics["omp"] == "1" and Path(metrics["cwd"]) == ok.resolve()
    assert metrics["environment"]["machine"]["cores"] >= 1
    assert json.loads((ok / "params.json").read_text())["a"] == 1
    assert (ok / "toy.ipynb").is_file() and not list(ok.glob(".*executing*"))
    failed = runs.read_status(run_of(folder, a=3, fail=True, threads=1))
    assert failed["status"] == "failed" and "RuntimeError: planned failure a=3" in failed["error"]
    skipped = runs.read_status(run_of(folder, a=4, skip=True, threads=1))
    assert skipped["status"] == "skipped" and skipped["reason"] == "no data here"
    assert "exceeds the 2 cores" in runs.read_status(run_of(folder, a=5, threads=64))["reason"]

    # an interrupted run: its folder has files but no final marker
    interrupted = run_of(folder, a=2, threads=1)
    runs.write_status(interrupted, runs.RUNNING)
    (interrupted / "metrics.json").write_text("{half")
    stamp = (ok / "status.json").stat().st_mtime_ns
    summary = sweep.run_sweeps([s], jobs=1, cores=2, progress=False)
    assert summary["already_complete"] == 1 and summary["complete"] == 1 and summary["failed"] == 1
    assert (ok / "status.json").stat().st_mtime_ns == stamp  # the completed run was not redone
    assert runs.is_complete(interrupted) and json.loads((interrupted / "metrics.json").read_text())["stage"] == "toy"


def _start_slow_sweep(grid, runs_dir, slow):
    """A sweep command in its own session whose slow point sleeps; returns once that point's kernel runs."""
    # TOY_SLOW: only this sweep's slow run really sleeps (the kernel inherits the environment)
    proc = subprocess.Popen([sys.executable, "-m", "qmlnb", "sweep", str(grid), "--runs-dir", str(runs_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "TOY_SLOW": "1"})
    deadline = time.monotonic() + 120
    while not (slow / "kernel.pid").is_file():
        if time.monotonic() > deadline or proc.poll() is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"the slow point never started: {proc.communicate()[1]}")
        time.sleep(0.2)
    return proc


def _wait_until_unlocked(run_dir, timeout=60.0):
    """Wait until no process holds the run folder's lock.

    A killed papermill's main thread turns zombie (what stop_process_trees waits
    for) while its other threads may still be exiting on a loaded machine; the
    kernel drops the lock only when the last of them has closed the descriptor.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with runs.RunLock(run_dir):
                return
        except runs.RunBusy:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _live_members(groups):
    """Processes (not zombies) whose process group is in ``groups``."""
    import psutil

    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) in groups and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return members


@pytest.mark.timeout(240)
def test_a_sweep_killed_mid_run_loses_only_that_run_and_never_runs_it_twice(tmp_path, toy):
    import psutil

    grid = grid_file(tmp_path, toy, [{"a": [1], "threads": [1]}, {"a": [2], "sleep": [60.0], "threads": [1]}],
                     name="killed")
    runs_dir = tmp_path / "runs"
    slow = run_of(runs_dir / "killed", a=2, sleep=60.0, threads=1)
    proc = _start_slow_sweep(grid, runs_dir, slow)
    papermill = None
    try:
        os.kill(proc.pid, signal.SIGKILL)  # the sweep only: SIGKILL cannot be caught, its papermill lives on
        proc.wait()
        record = runs.read_status(slow)
        assert record["status"] == runs.RUNNING
        papermill = record["pid"]
        assert psutil.pid_exists(papermill)
        assert runs.is_complete(run_of(runs_dir / "killed", a=1, threads=1))
        # the summary never sees the killed run
        assert list(report.load_runs(runs_dir)["run"]) == [runs.run_name({"a": 1, "threads": 1})]
        # the orphaned papermill still holds the point: a new sweep leaves it alone
        s = sweep.load_sweep(grid, runs_dir)
        summary = sweep.run_sweeps([s], cores=2, progress=False)
        assert (summary["already_complete"], summary["complete"], summary["busy"]) == (1, 0, 1)
        assert summary["busy_runs"] == [(str(slow), papermill)]
        assert runs.read_status(slow) == record  # not touched
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if papermill:
            executor.stop_process_trees([papermill], grace=10)
    _wait_until_unlocked(slow)
    summary = sweep.run_sweeps([sweep.load_sweep(grid, runs_dir)], cores=2, progress=False)
    assert (summary["already_complete"], summary["complete"]) == (1, 1)
    assert runs.is_complete(slow) and not list(slow.glob(".*executing*"))


@pytest.mark.timeout(240)
def test_sigterm_stops_papermill_and_its_kernel_and_marks_the_run_interrupted(tmp_path, toy):
    grid = grid_file(tmp_path, toy, {"a": [2], "sleep": [60.0], "threads": [1]}, name="term")
    runs_dir = tmp_path / "runs"
    slow = run_of(runs_dir / "term", a=2, sleep=60.0, threads=1)
    proc = _start_slow_sweep(grid, runs_dir, slow)
    papermill, kernel = runs.read_status(slow)["pid"], int((slow / "kernel.pid").read_text())
    groups = {os.getpgid(papermill), os.getpgid(kernel)}
    try:
        assert os.getpgid(proc.pid) not in groups  # papermill and its kernel lead their own groups
        os.kill(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        executor.stop_process_trees([papermill, kernel], grace=10)  # nothing left behind, whatever happened
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "marked interrupted" in err
    assert _live_members(groups) == []  # the sweep returned only after papermill and the kernel were gone
    record = runs.read_status(slow)
    assert record["status"] == runs.INTERRUPTED and not runs.is_complete(slow)
    assert not (slow / "toy.ipynb").exists()  # an interrupted notebook never takes the final name


def test_default_threads_share_the_cores_between_parallel_runs(tmp_path, toy):
    s = sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1, 2]}, name="par"), tmp_path / "runs")
    summary = sweep.run_sweeps([s], jobs=2, cores=2, progress=False)
    assert summary["complete"] == 2
    for a in (1, 2):
        metrics = json.loads((run_of(tmp_path / "runs" / "par", a=a) / "metrics.json").read_text())
        assert metrics["omp"] == "1"  # 2 cores / 2 jobs
    # the grid may cap parallelism: a timing stage asks for one run at a time, all cores
    s = sweep.load_sweep(grid_file(tmp_path, toy, {"a": [7]}, name="serial", jobs=1), tmp_path / "runs")
    assert [t for *_, t, _ in sweep.plan([s], cores=2, jobs=2)] == [2]


def test_points_naming_an_unusable_backend_are_skipped_before_a_kernel_starts(tmp_path, toy, monkeypatch):
    from qmlnb.kernels.backends import torch_cuda

    # the sweep asks the registry's check_backend, which asks the backend's probe
    monkeypatch.setattr(torch_cuda, "probe", lambda: (False, "no CUDA device here"))
    s = sweep.load_sweep(grid_file(tmp_path, toy, {"backend": ["torchcuda"], "threads": [1]}, name="gpu"),
                         tmp_path / "runs")
    summary = sweep.run_sweeps([s], cores=2, progress=False)
    folder = run_of(tmp_path / "runs" / "gpu", backend="torchcuda", threads=1)
    record = runs.read_status(folder)
    assert summary["skipped"] == 1 and record["status"] == "skipped"
    assert record["reason"] == "Gram backend 'torchcuda' cannot run here: no CUDA device here"
    assert not list(folder.glob("*.ipynb"))  # nothing ran
    # a usable backend, no backend, or an unknown name (left to the notebook's own error) is no skip
    assert sweep.backend_unusable({"backend": "cpu"}) is None
    assert sweep.backend_unusable({"threads": 1}) is None
    assert sweep.backend_unusable({"backend": "tpu"}) is None



def test_a_notebook_task_skips_an_unusable_backend_and_refuses_an_unknown_one(monkeypatch):
    from qmlnb.kernels import UnknownBackendError
    from qmlnb.kernels.backends import torch_cuda
    from qmlnb.lab import tasks

    assert tasks.check_backend("cpu") is None
    monkeypatch.setattr(torch_cuda, "probe", lambda: (False, "no CUDA device here"))
    with pytest.raises(tasks.RunSkipped, match="Gram backend 'torchcuda' cannot run here: no CUDA device here"):
        tasks.check_backend("torchcuda")
    with pytest.raises(UnknownBackendError, match="known backends: cpu"):
        tasks.check_backend("tpu")


def test_cli_sweep_exit_code_and_list(tmp_path, toy, capsys):
    grid = grid_file(tmp_path, toy, {"a": [1], "fail": [False, True], "threads": [1]}, name="cli")
    args = ["sweep", str(grid), "--runs-dir", str(tmp_path / "runs")]
    assert cli.main(args + ["--list"]) == 0
    assert capsys.readouterr().out.count("  run") == 2
    assert cli.main(args) == 1
    out = capsys.readouterr()
    assert "sweep: 1 run completed, 0 already complete, 0 skipped, 1 failed" in out.out and "planned failure" in out.err


# ------------------------------------------------------------------ a fake papermill
# stands in for `python -m papermill NOTEBOOK OUTPUT ... -y PARAMS`: logs each call, then copies the
# notebook to OUTPUT (FAKE_MODE=ok) or dies writing a torn OUTPUT on a full disk (FAKE_MODE=torn)
FAKE_PAPERMILL = """#!{python}
import json, os, shutil, sys
notebook, output = sys.argv[3], sys.argv[4]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"output": output, "params": json.loads(sys.argv[sys.argv.index("-y") + 1])}}) + "\\n")
if os.environ.get("FAKE_MODE") == "torn":
    with open(output, "w") as handle:
        handle.write('{{"cells": [{{"cell_type": "code", "sou')
    sys.exit("OSError: [Errno 28] No space left on device")
shutil.copyfile(notebook, output)
"""


@pytest.fixture
def fake_papermill(tmp_path, monkeypatch):
    """Make the sweep start a fake papermill; returns a function giving the logged calls."""
    script = tmp_path / "fake-python"
    script.write_text(FAKE_PAPERMILL.format(python=PYTHON))
    script.chmod(0o755)
    log = tmp_path / "papermill-calls.jsonl"
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setattr(sys, "executable", str(script))
    return lambda: [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_points_that_slug_alike_get_their_own_folders_with_their_exact_parameters(tmp_path, toy, fake_papermill):
    grid = [{"a": [1, -1]}, {"name": ["a b", "a-b", "a/b"]}]
    s = sweep.load_sweep(grid_file(tmp_path, toy, grid, name="alike"), tmp_path / "runs")
    assert sweep.run_sweeps([s], cores=2, progress=False)["complete"] == 5
    folders = list(runs.iter_runs(tmp_path / "runs"))
    assert len(folders) == 5 and len(fake_papermill()) == 5
    recorded = sorted((json.loads((f / "params.json").read_text()) for f in folders), key=json.dumps)
    expected = sorted(({**point, "threads": 2} for point in s.points), key=json.dumps)
    assert recorded == expected
    summary = sweep.run_sweeps([s], cores=2, progress=False)
    assert (summary["already_complete"], summary["complete"], len(fake_papermill())) == (5, 0, 5)


def test_a_run_is_complete_only_for_the_same_notebook_and_point(tmp_path, toy, fake_papermill):
    runs_dir = tmp_path / "runs"
    s = sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1]}, name="same"), runs_dir)
    assert sweep.run_sweeps([s], cores=2, progress=False)["complete"] == 1
    assert [action for *_, action in sweep.plan([s], 2, 1)] == ["done"]
    record = runs.read_status(s.run_dir({"a": 1}))
    assert record["notebook_path"] == str(toy.resolve()) and record["point"] == {"a": 1}
    assert record["notebook_sha256"] == hashlib.sha256(toy.read_bytes()).hexdigest()
    # another notebook under the same grid name
    other = tmp_path / "other" / "toy.ipynb"
    other.parent.mkdir()
    other.write_bytes(toy.read_bytes())
    moved = sweep.load_sweep(grid_file(tmp_path, other, {"a": [1]}, name="same", stem="other"), runs_dir)
    assert [action for *_, action in sweep.plan([moved], 2, 1)] == ["run"]
    # the same path, edited since the run
    nb = nbformat.read(toy, as_version=4)
    nb.cells.append(new_code_cell("a = a + 1"))
    nbformat.write(nb, toy)
    edited = sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1]}, name="same"), runs_dir)
    assert [action for *_, action in sweep.plan([edited], 2, 1)] == ["run"]
    assert sweep.run_sweeps([edited], cores=2, progress=False)["complete"] == 1
    assert runs.read_status(s.run_dir({"a": 1}))["notebook_sha256"] == edited.notebook_sha256
    assert [action for *_, action in sweep.plan([edited], 2, 1)] == ["done"]
    # a status recording another point (e.g. written by hand) does not count either
    runs.write_status(s.run_dir({"a": 1}), runs.COMPLETE, **{**edited.identity({"a": 1}), "point": {"a": 2}})
    assert [action for *_, action in sweep.plan([edited], 2, 1)] == ["run"]


@pytest.mark.timeout(120)
def test_a_point_held_by_another_live_sweep_is_counted_busy_and_not_run(tmp_path, toy, fake_papermill, capsys):
    grid = grid_file(tmp_path, toy, {"a": [1, 2]}, name="shared")
    s = sweep.load_sweep(grid, tmp_path / "runs")
    held = s.run_dir({"a": 2})
    held.mkdir(parents=True)
    holder = subprocess.Popen(  # another sweep, as far as the lock can tell
        [PYTHON, "-c",
         "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('locked', flush=True); "
         "time.sleep(600)", str(held / runs.LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        summary = sweep.run_sweeps([s], jobs=2, cores=2, progress=False)
        assert (summary["complete"], summary["busy"]) == (1, 1)
        assert summary["busy_runs"] == [(str(held), holder.pid)]
        assert runs.read_status(held) is None and [p.name for p in held.iterdir()] == [runs.LOCK_FILE]
        assert cli.main(["sweep", str(grid), "--runs-dir", str(tmp_path / "runs")]) == 0
        out = capsys.readouterr().out
        assert "sweep: 0 runs completed, 1 already complete, 0 skipped, 0 failed, 1 busy (held by another sweep)" in out
        assert f"busy {held}: held by pid {holder.pid}, not run" in out
    finally:
        holder.kill()
        holder.wait()
    assert [call["params"] for call in fake_papermill()] == [{"a": 1, "threads": 1}]  # nothing ran twice
    summary = sweep.run_sweeps([s], jobs=2, cores=2, progress=False)
    assert (summary["already_complete"], summary["complete"], summary["busy"]) == (1, 1, 0)


def test_a_point_completed_after_the_plan_was_made_is_not_run_again(tmp_path, toy, fake_papermill):
    s = sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1]}, name="late"), tmp_path / "runs")
    assert [action for *_, action in sweep.plan([s], 2, 1)] == ["run"]
    assert executor.run_point(s, {"a": 1}, 1)["status"] == runs.COMPLETE  # e.g. by another sweep, meanwhile
    stamp = (s.run_dir({"a": 1}) / runs.STATUS_FILE).stat().st_mtime_ns
    assert executor.run_point(s, {"a": 1}, 1) == {"status": executor.ALREADY_COMPLETE}
    assert (s.run_dir({"a": 1}) / runs.STATUS_FILE).stat().st_mtime_ns == stamp and len(fake_papermill()) == 1


def test_a_notebook_torn_by_a_full_disk_never_takes_the_final_name(tmp_path, toy, fake_papermill, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "torn")
    s = sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1]}, name="full"), tmp_path / "runs")
    summary = sweep.run_sweeps([s], cores=2, progress=False)
    folder = s.run_dir({"a": 1})
    assert summary["failed"] == 1 and "No space left on device" in summary["failures"][0][1]
    record = runs.read_status(folder)
    assert record["status"] == runs.FAILED and "No space left on device" in record["error"]
    assert not (folder / "toy.ipynb").exists() and record["notebook"] == ".toy.executing.ipynb"
    assert not runs.is_complete(folder)


@pytest.mark.parametrize("failing", ["final notebook", "complete status", "every status"])
def test_a_full_disk_gives_a_failed_run_naming_enospc_and_the_path(tmp_path, toy, fake_papermill, monkeypatch,
                                                                    failing):
    s = sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1]}, name="full"), tmp_path / "runs")
    folder = s.run_dir({"a": 1})
    real_replace, real_write = os.replace, _util.atomic_write_bytes

    def replace(src, dst):  # the move of the executed notebook into place
        if failing == "final notebook" and str(dst).endswith("toy.ipynb"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst)

    def write(path, data):  # the status writes after the run started
        if Path(path).name == runs.STATUS_FILE and (
                failing == "every status" and b'"running"' not in data
                or failing == "complete status" and b'"complete"' in data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_write(path, data)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(_util, "atomic_write_bytes", write)
    summary = sweep.run_sweeps([s], cores=2, progress=False)  # no OSError traceback out of the sweep
    failed_at = folder / ("toy.ipynb" if failing == "final notebook" else runs.STATUS_FILE)
    assert summary["failures"] == [(str(folder), f"ENOSPC (No space left on device): {failed_at}")]
    record = runs.read_status(folder)
    if failing == "every status":
        assert record["status"] == runs.RUNNING  # the disk stayed full: still not complete
    else:
        assert record["status"] == runs.FAILED and record["error"] == summary["failures"][0][1]
    assert not runs.is_complete(folder)


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
    # the summary ships inside the package (an installed wheel builds reports); notebooks/ links to it
    assert (ROOT / "notebooks" / "90-summary.ipynb").resolve() == report.SUMMARY_NOTEBOOK
    # every committed grid declares its stage, and each stage the report plots a QCNN quantity against
    # has a grid that varies that quantity
    assert all(s.stage in stages.STAGES for s in sweeps)
    qcnn = [s for s in sweeps if s.notebook.name == "10-train-qcnn.ipynb"]
    for stage, varied in ((stages.THREADS, "threads"), (stages.DATASET_SIZE, "n_train"),
                          (stages.BATCH_SIZE, "batch_size")):
        assert any(s.stage == stage and len({p[varied] for p in s.points}) > 1 for s in qcnn), stage


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
    metrics = json.loads((run_of(folder, a=1) / "metrics.json").read_text())
    assert metrics["omp"] == "1" and Path(metrics["cwd"]) == run_of(folder, a=1).resolve()  # a worker's one thread
    assert "planned failure a=3" in runs.read_status(run_of(folder, a=3, fail=True))["error"]
    assert "exceeds the 1 core of a Dask worker" in runs.read_status(run_of(folder, a=4, threads=2))["reason"]
    # the command line: a fresh LocalCluster; completed points are not redone
    assert cli.main(["sweep", str(grid), "--runs-dir", "runs", "--dask", "local"]) == 1  # a=3 fails again
    assert runs.is_complete(run_of(folder, a=1)) and json.loads((run_of(folder, a=1) / "metrics.json").read_text()) == metrics


def test_a_dask_worker_runs_points_without_importing_a_notebook_reader():
    # each worker unpickles the point task (executor_dask, executor, grid): nbformat and jsonschema cost seconds
    # at every worker's start; only a failed run's error is read from its notebook (executor._error_of)
    code = ("import sys; from qmlnb.lab.executor_dask import _point_task; "
            "print(sorted(m for m in ('nbformat', 'jsonschema') if m in sys.modules))")
    assert subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


@pytest.mark.timeout(60)
def test_a_dask_cluster_without_workers_is_refused_before_anything_runs(tmp_path, toy, capsys):
    distributed = pytest.importorskip("distributed")
    grid = grid_file(tmp_path, toy, {"a": [1]}, name="no-workers")
    with distributed.LocalCluster(n_workers=0, processes=True, host="127.0.0.1", dashboard_address=":0") as cluster:
        args = ["sweep", str(grid), "--runs-dir", str(tmp_path / "runs"), "--dask", cluster.scheduler_address]
        assert cli.main(args) == 2
    assert "has no workers" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_the_progress_bar_counts_only_the_points_that_run(tmp_path, toy, monkeypatch):
    # 3 points already complete, 1 skipped before running, 2 to run: the bar's total (and so its rate and ETA)
    # is 2, and only the 2 runs move it
    s = sweep.load_sweep(grid_file(tmp_path, toy, {"a": [1, 2, 3, 4, 5, 6]}, name="bar"))
    actions = ["done", "done", "done", "threads=9 exceeds the 2 cores of this machine", "run", "run"]
    monkeypatch.setattr(sweep, "plan", lambda sweeps, cores, jobs, where="": [
        (s, p, 1, a) for p, a in zip(s.points, actions)])
    monkeypatch.setattr(sweep, "run_point", lambda *a, **k: {"status": runs.COMPLETE})
    monkeypatch.setattr(sweep, "skip_point", lambda *a, **k: {"status": runs.SKIPPED, "reason": "threads"})
    bars = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total, self.n = total, 0
            bars.append(self)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, k):
            self.n += k

        def set_postfix_str(self, text):
            pass

        write = staticmethod(print)

    monkeypatch.setattr(sweep, "tqdm", Bar)
    summary = sweep.run_sweeps([s], cores=2)
    assert (summary["already_complete"], summary["skipped"], summary["complete"]) == (3, 1, 2)
    assert (bars[0].total, bars[0].n) == (2, 2)


def test_a_data_folder_holding_no_known_dataset_warns_and_missing_files_are_the_needed_ones(tmp_path, monkeypatch):
    from qmlnb.lab import decisions

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.warns(UserWarning, match="holds none of the datasets fashion-mnist, cifar10, svhn"):
        sweep.resolve_data_dir(empty)
    # a folder with the Fashion-MNIST test files: no warning, and that dataset is known
    fashion = tmp_path / "data" / "fashion-mnist"
    fashion.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte"):
        (fashion / name).write_bytes(b"")
    assert sweep.known_datasets(tmp_path / "data") == ["fashion-mnist"]
    # SVHN with its test file present but not its training file: usable, no message; with neither, the message
    # names only the files that are missing
    monkeypatch.setenv("QMLNB_DATA_DIR", str(tmp_path / "data"))
    svhn = tmp_path / "data" / "svhn"
    svhn.mkdir()
    reason = decisions.dataset_unusable({"dataset": "cifar10"})
    assert "data_batch_1" in reason and "test_batch" in reason and " or test_batch" in reason
    (svhn / "test_32x32.mat").write_bytes(b"")
    assert decisions.dataset_unusable({"dataset": "svhn"}) is None
