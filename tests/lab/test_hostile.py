"""Hostile inputs: files in runs/, grids, data files and servers that must not stop the lab, leak a file or
write outside the runs folder.  Each test names the problem it guards (the numbers of the audit)."""
from __future__ import annotations

import contextlib
import gzip
import http.server
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import test_decisions as td  # fabricated run folders and the flow's grids
from test_decisions import fake_sweep  # noqa: F401 - fixture: run_sweeps writing complete runs
from test_sweep import grid_file, toy  # noqa: F401 - the fast toy notebook (fixture) and grid writer of the sweep tests

from qmlnb import _util
from qmlnb.data.catalog import CorruptDataError
from qmlnb.data.download import DownloadError, fetch
from qmlnb.data.readers import read_idx
from qmlnb.lab import decision_records, decisions, flow, sweep as sweep_mod
from qmlnb.lab.decisions import DecisionError
from qmlnb.lab.report import header, headline, load, present

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- 14: data files, slow servers, the papermill runner
def test_idx_header_whose_shape_overflows_int64_is_corrupt_data(tmp_path):
    # four sizes of 2**16 multiply to 2**64: in int64 that wraps to 0, which an empty payload "matches"
    path = tmp_path / "images-idx4-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 4]) + struct.pack(">4I", 1 << 16, 1 << 16, 1 << 16, 1 << 16))
    with pytest.raises(CorruptDataError, match="payload is 0 bytes"):
        read_idx(path, 4)
    gz = tmp_path / "big.gz"
    gz.write_bytes(gzip.compress(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1)))
    with pytest.raises(CorruptDataError, match="needs"):
        read_idx(gz, 3)


@contextlib.contextmanager
def _trickle_server(interval: float, count: int):
    """An http.server on 127.0.0.1 only that sends a body of ``count`` bytes, one every ``interval`` s."""
    stop = threading.Event()

    class Trickle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Length", str(count))
            self.end_headers()
            for _ in range(count):
                if stop.wait(interval):
                    return
                try:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                except OSError:
                    return

        def log_message(self, *args):
            pass

    from test_data import _serve  # a threaded http.server on 127.0.0.1, stopped on exit

    with _serve(Trickle) as url:
        try:
            yield url + "file"
        finally:
            stop.set()  # the handler's thread stops sending


def test_fetch_has_a_total_deadline_against_a_trickling_server(tmp_path):
    # one byte every 0.2 s: every read comes well within timeout=2, so only a total deadline stops it
    with _trickle_server(0.2, 200) as url:
        start = time.monotonic()
        with pytest.raises(DownloadError, match="deadline"):
            fetch(url, tmp_path / "file", "0" * 32, timeout=2, deadline=1.5, progress=False)
        assert time.monotonic() - start < 8
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="deadline must be a positive number"):
        fetch("https://example.org/x", tmp_path / "file", "0" * 32, deadline=0, progress=False)


def test_papermill_run_with_bad_json_parameters_says_so_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "qmlnb.lab.papermill_run", "in.ipynb", "out.ipynb", "--cwd", ".",
                           "-y", "{bad"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "-y must be a JSON object" in proc.stderr


# ---------------------------------------------------------------- 12: states_torch checks the angles like states()
def test_states_torch_refuses_angles_that_overflow():
    pytest.importorskip("torch", reason="states_torch simulates with torch")
    from qmlnb.kernels import FeatureMap
    from qmlnb.kernels.states_torch import states_torch

    fm = FeatureMap(n_qubits=3, reps=2)
    X = np.zeros((2, 3))
    X[1, 2] = 1e154
    with pytest.raises(ValueError, match="overflow float64"):
        fm.states(X)
    with pytest.raises(ValueError, match="overflow float64"):
        states_torch(fm, X, "cpu")
    assert np.isfinite(states_torch(fm, X[:1], "cpu").numpy()).all()


# ---------------------------------------------------------------- 6, 7: grids


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_grid_refuses_nan_and_infinities(tmp_path, toy, value):  # noqa: F811 - toy is the fixture
    from qmlnb.lab import sweep

    # JSON has no NaN: status.json would record null, the point would never count as done and rerun every sweep
    with pytest.raises(sweep.SweepError, match="NaN or an infinity"):
        sweep.load_sweep(grid_file(tmp_path, toy, {"scale": [0.5, value]}))
    with pytest.raises(sweep.SweepError, match="NaN or an infinity"):
        sweep.load_sweep(grid_file(tmp_path, toy, {"sizes": [[1, value]]}))


def test_grid_product_is_counted_before_it_is_built(tmp_path, toy, monkeypatch):  # noqa: F811
    from qmlnb.lab import grid, sweep

    # the stated limit (here lowered, so the check is cheap) holds for a product and for a list of grids
    monkeypatch.setattr(grid, "MAX_POINTS", 1000, raising=False)
    with pytest.raises(sweep.SweepError, match="more than the 1,000"):
        sweep.load_sweep(grid_file(tmp_path, toy, {"a": list(range(10)), "scale": [0.5 + i for i in range(10)],
                                                   "threads": list(range(11))}))
    with pytest.raises(sweep.SweepError, match="more than the 1,000"):
        sweep.load_sweep(grid_file(tmp_path, toy, [{"a": list(range(600))}, {"threads": list(range(600))}]))
    assert len(sweep.load_sweep(grid_file(tmp_path, toy, {"a": list(range(10)), "threads": list(range(10))})).points) == 100
    monkeypatch.undo()
    # 9 keys x 10 values in a 10-line YAML: 10**9 points, refused at once instead of a MemoryError a minute later
    start = time.monotonic()
    with pytest.raises(sweep.SweepError, match="1,000,000,000 points"):
        sweep.load_sweep(grid_file(tmp_path, toy, {f"k{i}": list(range(10)) for i in range(9)}))
    assert time.monotonic() - start < 5


# ---------------------------------------------------------------- 1-5: decision and flow records, the flow's writes


@pytest.fixture
def flow_toy(tmp_path):
    """The flow tests' notebook (threads, batch_size, seed, dataset), written beside the test's files."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(td.PARAMS, metadata={"tags": ["parameters"]}), new_code_cell("pass")],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = tmp_path / "flow-toy.ipynb"
    nbformat.write(nb, path)
    return path


def _decision(stage="threads", **change) -> dict:
    """A decision record as decision_records.record writes it (valid unless ``change`` says otherwise)."""
    record = {"stage": stage, "param": "threads", "rule": "fastest", "rule_text": "", "metric": "timings.train_s",
              "value": 2, "reason": "threads=2 has the smallest median", "time": "2026-01-01T00:00:00+00:00",
              "per_value": [{"value": 2, "n": 3, "median": 1.0, "q1": 0.9, "q3": 1.1, "mean": 1.0, "std": 0.1,
                             "runs": ["r"]}], "runs": ["r"], "history": []}
    return {**record, **change}


def _flow_record(stage="final", **change) -> dict:
    record = {"stage": stage, "order": 1, "grid_files": ["params/70-final.yaml"], "time": "t",
              "references": [{"key": "threads", "from": "threads", "pick": "fastest", "param": "threads",
                              "at_least": None, "decided": 2, "value": 2}]}
    return {**record, **change}


def _write(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value if isinstance(value, str) else json.dumps(value))
    return path


HOSTILE_DECISIONS = {
    "only-value": {"value": 1},
    "nan-value": _decision(value=float("nan")),
    "no-evidence": _decision(per_value=[{"value": 2}]),
    "other-stage": _decision(stage="elsewhere"),
    "mathtext-stage": _decision(stage="$\\undefinedmacro{$"),
    "not-json": "{not json",
    "a-list": [1, 2],
}
HOSTILE_FLOWS = {
    "mathtext": _flow_record(stage="$\\undefinedmacro{$"),
    "no-key": _flow_record(references=[{"from": "threads", "pick": "fastest", "param": "threads", "value": 2,
                                        "decided": 2}]),
    "order-x": _flow_record(order="x"),
    "refs-text": _flow_record(references="threads"),
    "value-text": _flow_record(references=[{**_flow_record()["references"][0], "value": "$x^{$"}]),
}


def plant_hostile_records(runs_dir: Path) -> dict[str, Path]:
    """Every malformed decision and flow record above, each in a stage folder of its own: {name: path}."""
    out = {}
    for name, value in HOSTILE_DECISIONS.items():
        out[f"decision-{name}"] = _write(runs_dir / f"d-{name}" / "decision-threads-fastest.json",
                                         value if not isinstance(value, dict) or name == "only-value"
                                         else {**value, "stage": value["stage"] if name in ("other-stage",
                                                                                            "mathtext-stage")
                                               else f"d-{name}"})
    for name, value in HOSTILE_FLOWS.items():
        stage = f"f-{name}"
        out[f"flow-{name}"] = _write(runs_dir / stage / flow.FLOW_FILE,
                                     {**value, "stage": value["stage"] if name == "mathtext" else stage})
    return out


def test_malformed_decision_and_flow_records_are_listed_not_fatal(tmp_path):
    runs_dir = tmp_path / "runs"
    planted = plant_hostile_records(runs_dir)
    good = _write(runs_dir / "threads" / "decision-threads-fastest.json", _decision())
    _write(runs_dir / "threads" / flow.FLOW_FILE, _flow_record(stage="threads", order=0, references=[]))
    _write(runs_dir / "final" / flow.FLOW_FILE, _flow_record())
    records, unreadable = decision_records.load_decisions(runs_dir)
    assert [r["path"] for r in records] == [str(good)]
    assert {p for p, _ in unreadable} == {p for n, p in planted.items() if n.startswith("decision-")}
    lines = headline.decision_lines(runs_dir)  # used to raise KeyError on {"value": 1}
    assert len(lines) == 1 and lines[0].startswith("**optimal threads: 2**")
    stages = headline.flow_stages(runs_dir)  # used to raise on order "x"
    assert [s["stage"] for s in stages] == ["threads", "final"]
    assert "threads=2 (fastest of threads)" in headline.flow_text(stages)
    fig = headline.plot_flow(stages)
    fig.canvas.draw()  # a $...$ stage name would fail here, in matplotlib's mathtext
    why = dict(flow.load_flow(runs_dir)[1])
    assert set(why) == {p for n, p in planted.items() if n.startswith("flow-")}
    assert "'order' must be a stage count" in why[planted["flow-order-x"]]
    assert "'references' must be" in why[planted["flow-no-key"]]
    # the report's run overview lists each of them as unreadable, with the reason
    overview = load.run_overview(runs_dir)
    listed = overview[overview["status"] == load.UNREADABLE]
    assert sorted(listed["run"]) == sorted(p.name for p in planted.values())
    assert all(listed["note"].str.len() > 0)


def test_a_run_provided_link_is_text_in_the_report(tmp_path):
    from nbconvert.filters.markdown_mistune import markdown2html_mistune as md2html
    import pandas as pd

    hostile = "[click](javascript:alert(1)) ![x](javascript:alert(2)) <img src=x onerror=alert(3)> <javascript:x>"
    frame = pd.DataFrame({"env.data_dir": [hostile], "env.versions.numpy": ["<script>alert(4)</script>"]})
    page = md2html(header.header_markdown(header.header_fields(frame)))
    assert "href" not in page and "<a " not in page and "<img" not in page and "<script" not in page
    assert "[click](javascript:alert(1))" in page  # shown as written
    runs_dir = tmp_path / "runs"
    _write(runs_dir / "threads" / "decision-threads-fastest.json", _decision(reason=hostile))
    [line] = headline.decision_lines(runs_dir)
    page = md2html(line)
    assert "<a " not in page and "<img" not in page and "[click](javascript:alert(1))" in page
    assert present.markdown_text("a\n# b") == "a # b"


def test_a_symlinked_decision_file_is_never_read_or_written_through(tmp_path):
    runs_dir = tmp_path / "runs"
    secret = _write(tmp_path / "secret.txt", "SECRET-TOKEN not json")
    link = runs_dir / "threads" / "decision-threads-fastest.json"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    records, unreadable = decision_records.load_decisions(runs_dir)
    assert records == [] and "symbolic link" in unreadable[0][1] and "SECRET" not in unreadable[0][1]
    decision = {k: v for k, v in _decision().items() if k not in ("time", "history")}
    with pytest.raises(DecisionError, match="symbolic link"):
        decision_records.record(runs_dir, decision)
    assert secret.read_text() == "SECRET-TOKEN not json" and link.is_symlink()
    assert "SECRET" not in "".join(p.read_text() for p in runs_dir.rglob("*") if p.is_file() and not p.is_symlink())


def test_a_decision_path_that_is_a_folder_is_a_decision_error(tmp_path):
    runs_dir = tmp_path / "runs"
    (runs_dir / "threads" / "decision-threads-fastest.json").mkdir(parents=True)
    decision = {k: v for k, v in _decision().items() if k not in ("time", "history")}
    with pytest.raises(DecisionError, match="not a regular file"):
        decision_records.record(runs_dir, decision)


def test_a_nan_parameter_in_a_referenced_run_is_a_decision_error(tmp_path):
    for threads, t in {1: 3.0, float("nan"): 1.0}.items():
        td.fake_run(tmp_path, "threads", {"threads": threads}, train_s=t)
    rows = decisions.collect(sorted((tmp_path / "threads").iterdir()), "threads", "timings.train_s")
    with pytest.raises(DecisionError, match="not all finite numbers"):
        decisions.decide(rows, "fastest", "threads", "threads")
    # a complete run whose point is not a mapping, or whose params.json is not JSON, is named, not a traceback
    bad = td.fake_run(tmp_path / "b", "threads", {"threads": 1}, train_s=1.0)
    (bad / "params.json").write_text("{oops")
    with pytest.raises(DecisionError, match="cannot be read"):
        decisions.collect([bad], "threads", "timings.train_s")
    _util.atomic_write_json(bad / "params.json", {"threads": 1})
    _write(bad / "status.json", {"status": "complete", "point": [1]})
    with pytest.raises(DecisionError, match="JSON objects"):
        decisions.collect([bad], "threads", "timings.train_s")


def test_the_flow_never_writes_through_a_linked_stage_folder(tmp_path, flow_toy, fake_sweep):
    runs_dir, outside = tmp_path / "runs", tmp_path / "outside"
    # the referenced stage's folder is a link out of the runs folder (its complete runs lie there)
    for threads, t in {1: 1.0, 2: 5.0}.items():
        td.fake_run(outside, "ext", {"threads": threads}, train_s=t)
    runs_dir.mkdir()
    (runs_dir / "ext").symlink_to(outside / "ext")
    before = sorted(p.name for p in (outside / "ext").iterdir())
    final = td.grid(tmp_path, "70-final", flow_toy, {"threads": {"from": "ext", "pick": "fastest"}}, name="final")
    with pytest.raises(DecisionError, match="not inside the runs folder"):
        flow.run_flow([sweep_mod.load_sweep(final, runs_dir)], progress=False)
    assert sorted(p.name for p in (outside / "ext").iterdir()) == before  # no decision-*.json out there
    # the referring stage's own folder is the link: its flow.json must not land outside either
    for threads, t in {1: 1.0, 2: 5.0}.items():
        td.fake_run(runs_dir, "threads", {"threads": threads}, train_s=t)
    (outside / "final").mkdir()
    (runs_dir / "final").symlink_to(outside / "final")
    final = td.grid(tmp_path, "71-final", flow_toy, {"threads": {"from": "threads", "pick": "fastest"}},
                    name="final")
    with pytest.raises(DecisionError, match="not inside the runs folder"):
        flow.run_flow([sweep_mod.load_sweep(final, runs_dir)], progress=False)
    assert list((outside / "final").iterdir()) == [] and fake_sweep == []


# ---------------------------------------------------------------- 9: the tracker export
def _mlflow_store_runs(store: Path) -> list:
    from test_track import mlflow_client

    client = mlflow_client(store)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def test_tracker_export_never_follows_links_and_trusts_the_store_over_tracker_json(tmp_path):
    pytest.importorskip("mlflow", reason="the MLflow tracker (qmlnb's track extra)")
    from test_track import POINTS, fabricate_run

    from qmlnb.lab import track

    runs_dir, store, outside = tmp_path / "runs", tmp_path / "mlruns", tmp_path / "outside"
    plain = fabricate_run(runs_dir, POINTS[0])
    # a run whose metrics.json is a link to a secret JSON file
    leaky = fabricate_run(runs_dir, POINTS[1])
    secret = _write(tmp_path / "secret.json", {"token": "SECRET-TOKEN"})
    (leaky / "metrics.json").unlink()
    (leaky / "metrics.json").symlink_to(secret)
    # a run folder that is a link out of the runs folder
    far = fabricate_run(outside, {"backend": "cpu", "n": 3})
    (runs_dir / "tiny" / "linked").symlink_to(far)
    far_files = sorted(p.name for p in far.iterdir())
    summary = track.export(runs_dir, "mlflow", store)
    assert (summary["logged"], summary["failed"]) == (1, 2)
    failures = dict(summary["failures"])
    assert "symbolic link" in failures[str(leaky)] and "symbolic link" in failures[str(runs_dir / "tiny" / "linked")]
    assert sorted(p.name for p in far.iterdir()) == far_files  # no tracker.json, no .lock out there
    logged = _mlflow_store_runs(store)
    assert len(logged) == 1 and "SECRET" not in json.dumps([r.data.tags for r in logged])
    # the store is gone: tracker.json says "logged", but the store decides and the run is logged again
    import shutil

    shutil.rmtree(store)
    assert track.read_tracker_file(plain)["mlflow"]["status"] == "logged"
    # (a new process, as `rm -rf mlruns; python -m qmlnb track export` is: MLflow caches a store per process)
    proc = subprocess.run([sys.executable, "-m", "qmlnb", "track", "export", str(runs_dir), "--to", "mlflow",
                           "--store", str(store)], capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "1 logged, 0 already logged, 2 failed" in proc.stdout, proc.stderr[-2000:]
    assert len(_mlflow_store_runs(store)) == 1
    # a tracker.json that is a link is not read (its target never lands in the run folder)
    (plain / track.TRACKER_FILE).unlink()
    (plain / track.TRACKER_FILE).symlink_to(secret)
    assert track.read_tracker_file(plain) == {}
    track.export(runs_dir, "mlflow", store)
    assert "SECRET" not in (plain / track.TRACKER_FILE).read_text() and secret.read_text().count("SECRET") == 1


# ---------------------------------------------------------------- 10: the MPS Gram's and mps()'s memory
def test_mps_gram_work_memory_is_bounded_and_checked(monkeypatch):
    import tracemalloc

    from qmlnb.kernels import FeatureMap, gram, validation
    from qmlnb.kernels.backends import cpu_blas

    fm = FeatureMap(n_qubits=3, reps=3, entanglement="circular")  # bond 4**3 = 64
    M = fm.mps(np.random.default_rng(0).uniform(-1, 1, (16, 3)))
    expected = gram(fm.states(np.random.default_rng(0).uniform(-1, 1, (16, 3))))
    # a small work budget: the tile shrinks to fit it (a 16 x 16 tile of bond 64 would take ~90 MiB)
    monkeypatch.setattr(cpu_blas, "MPS_WORK_BYTES", 16 << 20, raising=False)
    tracemalloc.start()
    try:
        K = gram(M, backend="cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    np.testing.assert_allclose(K, expected, atol=1e-5)
    assert peak < 40 << 20, f"peak {peak / 2**20:.0f} MiB for a 2 KiB Gram"
    # the check counts the work, not only the 2 KiB output: with 20 MiB free it refuses, naming the bond
    monkeypatch.setattr(validation, "available_memory_bytes", lambda: 20 << 20)
    with pytest.raises(validation.InsufficientMemoryError, match="work arrays \\(bond 64\\)"):
        gram(M, backend="cpu")


@pytest.mark.parametrize("reps, entanglement, n, N", [(1, "linear", 64, 2000), (2, "linear", 32, 500),
                                                      (2, "circular", 8, 200)])
def test_mps_memory_estimate_is_an_upper_bound(reps, entanglement, n, N):
    import tracemalloc

    from qmlnb.kernels import FeatureMap
    from qmlnb.kernels.mps import mps_peak_bytes

    fm = FeatureMap(n_qubits=n, reps=reps, entanglement=entanglement)
    X = np.random.default_rng(0).uniform(-1, 1, (N, n))
    tracemalloc.start()
    try:
        fm.mps(X)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # mps() checks this estimate before it starts: it must not be below what it then takes
    assert peak <= mps_peak_bytes(N, n, fm.mps_bond_dim, 2**reps, len(fm.pairs))


# ---------------------------------------------------------------- 13: `make lab` quoting of the data folder
HOSTILE_DATA_DIRS = ["my data", "x`touch {marker}`y", "it's $(shell touch {marker}) $$(touch {marker}) $HOME"]


@pytest.mark.parametrize("value", HOSTILE_DATA_DIRS)
def test_make_lab_passes_the_data_folder_as_one_path_and_runs_nothing_in_it(tmp_path, value):
    import shlex
    import shutil

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    marker = tmp_path / "pwned"
    value = value.format(marker=marker)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["QMLNB_DATA_DIR"] = value
    # what `make -n lab` prints: one assignment of the whole (absolute) path
    printed = subprocess.run(["make", "-s", "-n", "-o", ".venv/.installed", "lab", "LAB_PORT=1"], cwd=ROOT, env=env,
                             capture_output=True, text=True, check=True).stdout
    cmd = shlex.split(printed.replace("\\\n", " "))
    assert cmd[0] == f"QMLNB_DATA_DIR={ROOT / value}" and cmd[1:3] == [".venv/bin/jupyter", "lab"]
    # and what the shell does with it: a stand-in jupyter records the environment it got; nothing else runs
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    got = tmp_path / "got.json"
    fake = venv / "bin" / "jupyter"
    fake.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"json.dump({{'data': os.environ.get('QMLNB_DATA_DIR'), 'argv': sys.argv[1:]}}, "
                    f"open({str(got)!r}, 'w'))\n")
    fake.chmod(0o755)
    subprocess.run(["make", "-s", "-o", f"{venv}/.installed", "lab", f"VENV={venv}", "LAB_PORT=1"], cwd=ROOT, env=env,
                   capture_output=True, text=True, check=True, timeout=60)
    recorded = json.loads(got.read_text())
    assert recorded["data"] == str(ROOT / value) and recorded["argv"][:2] == ["lab", "--ip=127.0.0.1"]
    assert not marker.exists()


# ---------------------------------------------------------------- 8: no orphans (SIGHUP, kill -9 of papermill/kernel)
SPAWNING_BODY = """
import os, pathlib, subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # a worker of the kernel's
pathlib.Path("pids.txt").write_text(f"{os.getpid()} {worker.pid}")
time.sleep(sleep)
"""


@pytest.fixture
def spawning(tmp_path):
    """A notebook whose kernel starts a long-lived worker process, writes both pids, then sleeps ``sleep`` s."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell("sleep = 0.0\n", metadata={"tags": ["parameters"]}),
                             new_code_cell(SPAWNING_BODY)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = tmp_path / "spawning.ipynb"
    nbformat.write(nb, path)
    return path


def _sweep_until_kernel_runs(tmp_path, notebook, name):
    """A sweep command (own session) of one slow point; returns (process, run folder, kernel pid, worker pid)."""
    from qmlnb.lab import runs

    grid = grid_file(tmp_path, notebook, {"sleep": [300.0]}, name=name)
    runs_dir = tmp_path / "runs"
    run_dir = runs_dir / name / runs.run_name({"sleep": 300.0})
    proc = subprocess.Popen([sys.executable, "-m", "qmlnb", "sweep", str(grid), "--runs-dir", str(runs_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not (run_dir / "pids.txt").is_file() or not (run_dir / "pids.txt").read_text():
        if time.monotonic() > deadline or proc.poll() is not None:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"the point never started: {proc.communicate()[1]}")
        time.sleep(0.2)
    kernel, worker = map(int, (run_dir / "pids.txt").read_text().split())
    return proc, run_dir, kernel, worker


def _gone(pids, timeout=30.0) -> bool:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return True
        time.sleep(0.2)
    return False


def _cleanup(proc, pids):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.timeout(300)
def test_sighup_stops_the_sweep_its_runs_and_marks_them_interrupted(tmp_path, spawning):
    from qmlnb.lab import runs

    proc, run_dir, kernel, worker = _sweep_until_kernel_runs(tmp_path, spawning, "hup")
    papermill = runs.read_status(run_dir)["pid"]
    try:
        os.kill(proc.pid, signal.SIGHUP)  # the terminal or ssh session closed
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGHUP, err
        assert "stopped by SIGHUP" in err
        assert _gone([papermill, kernel, worker])
        assert runs.read_status(run_dir)["status"] == runs.INTERRUPTED
    finally:
        _cleanup(proc, [papermill, kernel, worker])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("victim", ["papermill", "kernel"])
def test_kill_9_of_papermill_or_the_kernel_leaves_no_orphan(tmp_path, spawning, victim):
    from qmlnb.lab import runs

    proc, run_dir, kernel, worker = _sweep_until_kernel_runs(tmp_path, spawning, f"kill-{victim}")
    papermill = runs.read_status(run_dir)["pid"]
    try:
        os.kill(papermill if victim == "papermill" else kernel, signal.SIGKILL)  # what the OOM killer does
        proc.communicate(timeout=180)
        assert proc.returncode == 1  # the run failed; the sweep went on and ended
        assert _gone([papermill, kernel, worker], timeout=10), "a kernel or worker outlived its run"
        record = runs.read_status(run_dir)
        assert record["status"] == runs.FAILED
        assert set(record.get("killed_leftovers", [])) >= ({worker} if victim == "kernel" else {kernel, worker})
    finally:
        _cleanup(proc, [papermill, kernel, worker])


# ---------------------------------------------------------------- 11: a forged out-of-core Gram and ledger
@pytest.mark.parametrize("forgery", ["zeros", "plausible"])
def test_a_gram_file_forged_with_its_ledger_is_not_returned(tmp_path, forgery):
    from qmlnb.kernels import FeatureMap, gram
    from qmlnb.kernels.out_of_core import LEDGER_DTYPE, GramFileWarning, sidecar_paths, tile_checksum
    from qmlnb.kernels.tiling import tile_pairs

    S = FeatureMap(n_qubits=4, bandwidth=0.7).states(np.random.default_rng(7).uniform(0, np.pi, (40, 4)))
    exact = gram(S)
    path = tmp_path / "K.npy"
    gram(S, out=path, tile=16)
    # forge the data and rewrite the ledger with the forged tiles' checksums: the checksums alone then agree
    K = np.load(path, mmap_mode="r+")
    if forgery == "zeros":
        K[:] = 0  # the diagonal included
    else:  # unit diagonal, symmetric, in [0, 1]: passes every invariant, wrong everywhere else
        K[:] = 0.5
        np.fill_diagonal(K, 1.0)
    K.flush()
    ledger_path = sidecar_paths(path)[1]
    ledger = np.frombuffer(ledger_path.read_bytes(), dtype=LEDGER_DTYPE).copy()
    for k, (i0, i1, j0, j1) in enumerate(tile_pairs(40, None, 16)):
        ledger["checksum"][k] = tile_checksum(np.ascontiguousarray(K[i0:i1, j0:j1]))
    ledger_path.write_bytes(ledger.tobytes())
    del K
    with pytest.warns(GramFileWarning, match="6 of 6 tiles"):
        resumed = gram(S, out=path, tile=16)
    np.testing.assert_allclose(resumed, exact, atol=1e-6)


# ---------------------------------------------------------------- the report from a runs folder of hostile files
@pytest.mark.slow  # runs the summary notebook
def test_the_report_builds_from_a_hostile_runs_folder_and_lists_what_it_could_not_read(tmp_path):
    import pandas as pd

    from qmlnb.lab import report, runs, tasks

    runs_dir, outside = tmp_path / "runs", tmp_path / "outside"
    secret = _write(tmp_path / "secret.json", {"data_dir": "SECRET-TOKEN", "token": "SECRET-TOKEN"})
    link = "[click](javascript:alert(1))"
    scores = {"accuracy": 0.75, "f1": 0.75, "roc_auc": 0.75, "balanced_accuracy": 0.75}
    good = runs_dir / "modes" / "good"
    tasks.save_run(good, {"n_train": 40}, {"task": "qcnn", "dataset": "digits", "mode": "sequential", "folds": 1,
                                           "threads": 1, "n_train": 40, "qcnn": scores, "timings": {"train_s": 2.0}})
    metrics = json.loads((good / "metrics.json").read_text())
    metrics["environment"]["data_dir"] = link  # 2: a run-provided string that Markdown would make a live link
    metrics["environment"]["machine"]["cpu"] = "<img src=x onerror=alert(2)>"
    _util.atomic_write_json(good / "metrics.json", metrics)
    runs.write_status(good, runs.COMPLETE, point={"n_train": 40})
    # a complete run whose metrics.json is a link to a secret file: unreadable, never shown
    leaky = runs_dir / "modes" / "leaky"
    tasks.save_run(leaky, {"n_train": 80}, {"task": "qcnn"})
    (leaky / "metrics.json").unlink()
    (leaky / "metrics.json").symlink_to(secret)
    runs.write_status(leaky, runs.COMPLETE)
    # 5: a NaN in a complete run's status point
    nan_run = runs_dir / "threads" / "nan"
    tasks.save_run(nan_run, {"threads": 1}, {"task": "qcnn", "timings": {"train_s": 1.0}})
    (nan_run / "status.json").write_text('{"status": "complete", "point": {"threads": NaN}}')
    # 1: every malformed decision and flow record; 2: a valid decision whose reason is a link; valid flow records
    planted = plant_hostile_records(runs_dir)
    _write(runs_dir / "threads" / "decision-threads-fastest.json", _decision(reason=link))
    _write(runs_dir / "threads" / flow.FLOW_FILE, _flow_record(stage="threads", order=0, references=[]))
    _write(runs_dir / "final" / flow.FLOW_FILE, _flow_record())
    # 3: a decision file that is a link to the secret; 4: a stage folder that is a link out of the runs folder;
    # 5: a decision path that is a folder
    planted["decision-link"] = runs_dir / "d-link" / "decision-threads-fastest.json"
    planted["decision-link"].parent.mkdir()
    planted["decision-link"].symlink_to(secret)
    _write(outside / "ext" / "decision-threads-fastest.json", _decision(stage="ext", reason="SECRET-TOKEN"))
    (runs_dir / "ext").symlink_to(outside / "ext")
    planted["decision-ext"] = runs_dir / "ext" / "decision-threads-fastest.json"
    planted["decision-folder"] = runs_dir / "d-folder" / "decision-threads-fastest.json"
    planted["decision-folder"].mkdir(parents=True)

    with pytest.warns(UserWarning, match="unreadable run"):
        html = report.build_report(runs_dir, tmp_path / "reports").read_text()
    assert "SECRET" not in html
    assert 'href="javascript' not in html and "<img src=x" not in html
    assert "[click](javascript:alert(1))" in html  # shown as text
    assert "optimal threads: 2" in html  # the valid decision is stated
    listed = pd.read_csv(tmp_path / "reports" / "tables" / "runs_not_complete.csv")
    unreadable = set(zip(listed["grid"], listed["run"]))
    assert {(p.parent.name, p.name) for p in planted.values()} | {("modes", "leaky")} <= unreadable
    for path in planted.values():
        assert path.parent.name in html  # each unreadable record is named on the page


def test_read_record_refuses_links_folders_and_fifos_without_reading_them(tmp_path):
    from qmlnb.lab import runs

    secret = _write(tmp_path / "secret.json", {"token": "SECRET"})
    (tmp_path / "link.json").symlink_to(secret)
    (tmp_path / "folder.json").mkdir()
    os.mkfifo(tmp_path / "fifo.json")  # an open of a FIFO would wait for a writer forever
    for name, why in (("link.json", "symbolic link"), ("folder.json", "not a regular file"),
                      ("fifo.json", "not a regular file")):
        with pytest.raises(ValueError, match=why) as err:
            runs.read_record(tmp_path / name)
        assert "SECRET" not in str(err.value)
    assert runs.read_record(tmp_path / "absent.json") is None and runs.read_record(secret) == {"token": "SECRET"}
    _write(tmp_path / "bad.json", "SECRET {")
    with pytest.raises(ValueError, match="not valid JSON") as err:
        runs.read_record(tmp_path / "bad.json")
    assert "SECRET" not in str(err.value)
