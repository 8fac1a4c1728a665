"""Decisions between stages: rules on fabricated run folders, their records, ordering and errors."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from qmlnb import _util
from qmlnb.lab import decision_records, decisions, flow, runs, sweep
from qmlnb.lab.decisions import DecisionError


def fake_run(runs_dir: Path, stage: str, point: dict, train_s=None, score=None, status=runs.COMPLETE,
             identity: dict | None = None) -> Path:
    """A run folder as a sweep leaves it: params.json, metrics.json, then status.json."""
    folder = runs_dir / stage / runs.run_name(point)
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {"stage": "qcnn", "timings": {}, "qcnn": {}}
    if train_s is not None:
        metrics["timings"]["train_s"] = train_s
    if score is not None:
        metrics["qcnn"]["balanced_accuracy"] = score
    _util.atomic_write_json(folder / runs.PARAMS_FILE, point)
    _util.atomic_write_json(folder / runs.METRICS_FILE, metrics)
    runs.write_status(folder, status, **{"point": point, **(identity or {})})
    return folder


def rows_for(runs_dir, stage, param, rule):
    return decisions.collect(sorted((runs_dir / stage).iterdir()), param, decisions.RULES[rule].metric)


# ------------------------------------------------------------------ rules
def test_fastest_takes_the_smallest_median(tmp_path):
    for threads, times in {1: [10.0, 10.2, 10.1], 2: [6.0, 6.1, 5.9], 4: [7.0, 7.2, 6.9]}.items():
        for seed, t in enumerate(times):
            fake_run(tmp_path, "threads", {"threads": threads, "seed": seed}, train_s=t)
    d = decisions.decide(rows_for(tmp_path, "threads", "threads", "fastest"), "fastest", "threads", "threads")
    assert d["value"] == 2
    assert "smallest median" in d["reason"]
    by = {v["value"]: v for v in d["per_value"]}
    assert by[2]["median"] == pytest.approx(6.0) and by[2]["n"] == 3
    assert by[1]["q1"] == pytest.approx(10.05) and by[1]["q3"] == pytest.approx(10.15)
    assert len(d["runs"]) == 9


def test_fastest_within_overlapping_iqrs_goes_to_fewer_threads(tmp_path):
    # 2 threads has the smaller median, but the IQRs overlap: 1 thread is as fast within noise
    for threads, times in {1: [5.0, 6.2, 7.0, 8.0], 2: [4.0, 5.9, 6.1, 9.0]}.items():
        for seed, t in enumerate(times):
            fake_run(tmp_path, "threads", {"threads": threads, "seed": seed}, train_s=t)
    d = decisions.decide(rows_for(tmp_path, "threads", "threads", "fastest"), "fastest", "threads", "threads")
    assert d["value"] == 1
    assert "within noise" in d["reason"] and "threads=2" in d["reason"]


def test_best_score_takes_the_best_mean_unless_a_cheaper_one_is_within_one_std(tmp_path):
    scores = {8: [0.70, 0.72], 16: [0.80, 0.82], 32: [0.90, 0.91]}
    for batch, values in scores.items():
        for seed, s in enumerate(values):
            fake_run(tmp_path, "bs", {"batch_size": batch, "seed": seed}, score=s)
    d = decisions.decide(rows_for(tmp_path, "bs", "batch_size", "best_score"), "best_score", "batch_size", "bs")
    assert d["value"] == 32 and "best mean" in d["reason"]
    assert {v["value"]: v["mean"] for v in d["per_value"]}[32] == pytest.approx(0.905)
    # noisy seeds: 16's mean is within one std of 32's, so the cheaper 16 wins
    other = tmp_path / "other"
    for batch, values in {16: [0.70, 0.90], 32: [0.75, 0.95]}.items():
        for seed, s in enumerate(values):
            fake_run(other, "bs", {"batch_size": batch, "seed": seed}, score=s)
    d = decisions.decide(rows_for(other, "bs", "batch_size", "best_score"), "best_score", "batch_size", "bs")
    assert d["value"] == 16 and "within one std" in d["reason"]


def test_only_complete_runs_count_and_settings_are_never_pooled(tmp_path):
    fake_run(tmp_path, "t", {"threads": 1}, train_s=5.0)
    fake_run(tmp_path, "t", {"threads": 2}, train_s=1.0, status=runs.FAILED)
    d = decisions.decide(rows_for(tmp_path, "t", "threads", "fastest"), "fastest", "threads", "t")
    assert d["value"] == 1 and [v["value"] for v in d["per_value"]] == [1]
    fake_run(tmp_path, "t", {"threads": 2, "n_train": 50}, train_s=1.0)
    with pytest.raises(DecisionError, match="differ in \\['n_train'\\]"):
        decisions.decide(rows_for(tmp_path, "t", "threads", "fastest"), "fastest", "threads", "t")


def test_unknown_rule_and_no_run_are_errors():
    with pytest.raises(DecisionError, match="unknown rule"):
        decisions.decide([], "slowest", "threads")
    with pytest.raises(DecisionError, match="no complete run"):
        decisions.decide([], "fastest", "threads", "threads")
    with pytest.raises(DecisionError, match="unknown rule pick='slowest'"):
        decisions.parse_reference("threads", {"from": "threads", "pick": "slowest"}, "g.yaml")


# ------------------------------------------------------------------ records
def test_decision_is_recorded_with_evidence_and_a_changed_one_keeps_history(tmp_path, capsys):
    for threads, t in {1: 4.0, 2: 2.0}.items():
        fake_run(tmp_path, "threads", {"threads": threads}, train_s=t)
    d = decisions.decide(rows_for(tmp_path, "threads", "threads", "fastest"), "fastest", "threads", "threads")
    path = decision_records.record(tmp_path, d)
    assert path == tmp_path / "threads" / "decision-threads-fastest.json"
    saved = json.loads(path.read_text())
    assert saved["value"] == 2 and saved["rule"] == "fastest" and saved["history"] == []
    assert {v["value"]: v["median"] for v in saved["per_value"]} == {1: 4.0, 2: 2.0}
    assert len(saved["runs"]) == 2 and saved["reason"]
    # the same decision again: the file is left as it is
    before = path.read_text()
    decision_records.record(tmp_path, d)
    assert path.read_text() == before
    # a different decision: recorded, the earlier one kept in history, and said on stderr
    fake_run(tmp_path, "threads", {"threads": 4}, train_s=1.0)
    d2 = decisions.decide(rows_for(tmp_path, "threads", "threads", "fastest"), "fastest", "threads", "threads")
    decision_records.record(tmp_path, d2)
    saved = json.loads(path.read_text())
    assert saved["value"] == 4 and [h["value"] for h in saved["history"]] == [2]
    assert "was 2" in capsys.readouterr().err
    assert [r["value"] for r in decision_records.read_decisions(tmp_path)] == [4]


def test_floor_applies_to_the_chosen_value_only():
    ref = decisions.parse_reference("threads", {"from": "threads", "pick": "fastest", "at_least": 2}, "g.yaml")
    assert decisions.apply_floor(1, ref) == 2 and decisions.apply_floor(4, ref) == 4


# ------------------------------------------------------------------ ordering
def ref(key, stage, where="g.yaml"):
    return decisions.Reference(key=key, stage=stage, pick="fastest", param=key, grid_file=where)


def test_stage_order_puts_referenced_stages_first_and_keeps_independent_order():
    stages = {"final": [ref("threads", "threads"), ref("batch_size", "batch")], "batch": [ref("threads", "threads")],
              "gram": [], "threads": []}
    order = decisions.stage_order(stages)
    assert order.index("threads") < order.index("batch") < order.index("final")
    assert order.index("gram") < order.index("threads") or "gram" in order
    assert sorted(order) == sorted(stages)


def test_a_cycle_is_an_error_naming_files_and_keys():
    stages = {"a": [ref("x", "b", "a.yaml")], "b": [ref("y", "a", "b.yaml")]}
    with pytest.raises(DecisionError, match="cycle") as err:
        decisions.stage_order(stages)
    assert "a.yaml: x" in str(err.value) and "b.yaml: y" in str(err.value)
    with pytest.raises(DecisionError, match="cycle"):
        decisions.stage_order({"a": [ref("x", "a", "a.yaml")]})


# ------------------------------------------------------------------ with the sweep
PARAMS = "threads = 0\nbatch_size = 16\nseed = 0\ndataset = 'digits'\n"


@pytest.fixture
def toy(tmp_path):
    nb = new_notebook(cells=[new_code_cell(PARAMS, metadata={"tags": ["parameters"]}), new_code_cell("pass")],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    path = tmp_path / "toy.ipynb"
    nbformat.write(nb, path)
    return path


def grid(tmp_path, stem, toy, g, **extra):
    path = tmp_path / "params" / f"{stem}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({"notebook": str(toy), "grid": g, **extra}))
    return path


TIMES = {1: 3.0, 2: 1.0, 4: 2.0}


@pytest.fixture
def fake_sweep(monkeypatch):
    """run_sweeps writing complete run folders (train time from TIMES) instead of running notebooks."""
    calls = []

    def run_sweeps(sweeps, **kwargs):
        for s in sweeps:
            calls.append((s.name, list(s.points)))
            for p in s.points:
                fake_run(s.runs_dir, s.name, p, train_s=TIMES.get(p.get("threads"), 9.0), score=0.5,
                         identity=s.identity(p))
        return {"complete": sum(len(s.points) for s in sweeps), "failures": []}

    monkeypatch.setattr(sweep, "run_sweeps", run_sweeps)
    return calls


def test_the_flow_runs_the_referenced_stage_first_records_and_fills_the_decision(tmp_path, toy, fake_sweep):
    final = grid(tmp_path, "70-final", toy, {"threads": {"from": "threads", "pick": "fastest"}, "seed": [0, 1]},
                 name="final")
    threads = grid(tmp_path, "20-threads", toy, {"threads": [1, 2, 4]}, name="threads")
    sweeps = [sweep.load_sweep(p, tmp_path / "runs") for p in (final, threads)]
    summary = flow.run_flow(sweeps, progress=False)
    assert [name for name, _ in fake_sweep] == ["threads", "final"]
    assert fake_sweep[1][1] == [{"threads": 2, "seed": 0}, {"threads": 2, "seed": 1}]
    assert summary["complete"] == 5
    saved = json.loads((tmp_path / "runs" / "threads" / "decision-threads-fastest.json").read_text())
    assert saved["value"] == 2 and len(saved["runs"]) == 3


def test_the_referenced_stage_is_found_beside_the_grid(tmp_path, toy, fake_sweep):
    final = grid(tmp_path, "70-final", toy, {"threads": {"from": "threads", "pick": "fastest", "at_least": 4}},
                 name="final")
    grid(tmp_path, "20-threads", toy, {"threads": [1, 2]}, name="threads")
    flow.run_flow([sweep.load_sweep(final, tmp_path / "runs")], progress=False)
    assert [name for name, _ in fake_sweep] == ["threads", "final"]
    assert fake_sweep[1][1] == [{"threads": 4}]  # 2 decided, raised to at_least


def test_reference_errors_come_before_any_work(tmp_path, toy, fake_sweep, capsys):
    missing = grid(tmp_path, "a", toy, {"threads": {"from": "nowhere", "pick": "fastest"}}, name="a")
    with pytest.raises(DecisionError, match="a.yaml: threads: references stage 'nowhere'"):
        flow.run_flow([sweep.load_sweep(missing, tmp_path / "runs")], progress=False)
    b = grid(tmp_path, "b", toy, {"threads": {"from": "c", "pick": "fastest"}}, name="b")
    c = grid(tmp_path, "c", toy, {"batch_size": {"from": "b", "pick": "best_score"}}, name="c")
    with pytest.raises(DecisionError, match="cycle"):
        flow.run_flow([sweep.load_sweep(p, tmp_path / "runs") for p in (b, c)], progress=False)
    assert fake_sweep == []
    bad = grid(tmp_path, "d", toy, {"threads": {"from": "b", "pick": "slowest"}}, name="d")
    assert flow.run(_args(bad, tmp_path)) == 2
    assert "unknown rule pick='slowest'" in capsys.readouterr().err
    wrong = grid(tmp_path, "e", toy, {"threads": {"from": "b", "pick": "fastest"}, "nope": [1]}, name="e")
    with pytest.raises(sweep.SweepError, match="unknown parameter"):
        sweep.load_sweep(wrong, tmp_path / "runs")


def _args(path, tmp_path, **kw):
    import argparse

    return argparse.Namespace(grids=[str(path)], runs_dir=str(tmp_path / "runs"), jobs=1, cores=None, dask=None,
                              list=False, **kw)


def test_a_referenced_stage_with_no_complete_run_stops_before_its_dependents(tmp_path, toy, monkeypatch):
    calls = []

    def run_sweeps(sweeps, **kwargs):  # every run fails
        calls.extend(s.name for s in sweeps)
        for s in sweeps:
            for p in s.points:
                fake_run(s.runs_dir, s.name, p, train_s=1.0, status=runs.FAILED)
        return {"failed": 1, "failures": []}

    monkeypatch.setattr(sweep, "run_sweeps", run_sweeps)
    final = grid(tmp_path, "70-final", toy, {"threads": {"from": "threads", "pick": "fastest"}}, name="final")
    grid(tmp_path, "20-threads", toy, {"threads": [1, 2]}, name="threads")
    with pytest.raises(DecisionError, match="stage 'threads' has no complete run"):
        flow.run_flow([sweep.load_sweep(final, tmp_path / "runs")], progress=False)
    assert calls == ["threads"]


def test_complete_runs_on_disk_are_reused_when_the_stage_is_not_a_grid(tmp_path, toy, fake_sweep):
    for threads, t in {1: 1.0, 2: 5.0}.items():
        fake_run(tmp_path / "runs", "old-threads", {"threads": threads}, train_s=t)
    final = grid(tmp_path, "70-final", toy, {"threads": {"from": "old-threads", "pick": "fastest"}}, name="final")
    flow.run_flow([sweep.load_sweep(final, tmp_path / "runs")], progress=False)
    assert fake_sweep == [("final", [{"threads": 1}])]


def test_first_available_dataset_falls_back_to_digits(tmp_path, toy, fake_sweep, monkeypatch):
    monkeypatch.setenv("QMLNB_DATA_DIR", str(tmp_path / "no-data"))
    g = grid(tmp_path, "30", toy, {"dataset": {"first_available": ["fashion-mnist", "digits"]}}, name="size")
    flow.run_flow([sweep.load_sweep(g, tmp_path / "runs")], progress=False)
    assert fake_sweep == [("size", [{"dataset": "digits"}])]
    folder = tmp_path / "data" / "fashion-mnist"
    folder.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / name).write_bytes(b"")
    monkeypatch.setenv("QMLNB_DATA_DIR", str(tmp_path / "data"))
    assert decisions.first_available(["fashion-mnist", "digits"], "x") == "fashion-mnist"
    with pytest.raises(sweep.SweepError, match="applies to 'dataset' only"):
        sweep.load_sweep(grid(tmp_path, "31", toy, {"seed": {"first_available": ["digits"]}}), tmp_path / "runs")


def test_a_fallback_is_recorded_by_the_run_and_its_status(tmp_path, toy, fake_sweep, monkeypatch, capsys):
    from qmlnb.lab import executor, tasks

    monkeypatch.setenv("QMLNB_DATA_DIR", str(tmp_path / "no-data"))
    g = grid(tmp_path, "30", toy, {"dataset": {"first_available": ["fashion-mnist", "digits"]}, "seed": [0, 1]},
             name="size")
    resolved = flow.resolve(sweep.load_sweep(g, tmp_path / "runs"), {}, tmp_path / "runs")
    want = {"asked": "fashion-mnist", "used": "digits"}
    for point in resolved.points:
        fallback = resolved.dataset_fallback(point)
        assert {k: fallback[k] for k in want} == want
        assert "fashion-mnist is not in the data directory (missing train-images-idx3-ubyte.gz" in fallback["reason"]
        assert str(tmp_path) not in fallback["reason"]  # the record does not change with where the folder lies
        assert resolved.identity(point)["dataset_fallback"] == fallback
    # the flow says it on stderr, once per stage, and the complete runs' status records it
    flow.run_flow([sweep.load_sweep(g, tmp_path / "runs")], progress=False)
    err = capsys.readouterr().err
    assert err.count("stage size: runs on digits instead of fashion-mnist: fashion-mnist is not in") == 1
    statuses = [runs.read_status(d) for d in (tmp_path / "runs" / "size").iterdir() if d.is_dir()]
    assert [s["dataset_fallback"]["used"] for s in statuses] == ["digits", "digits"]

    # the executor hands it to the notebook's kernel, whose save_run writes it into metrics.json
    seen = {}

    class Children(executor._Children):
        def start(self, cmd, **kwargs):
            seen.update(kwargs["env"])
            return None  # nothing runs: the point is recorded as interrupted

    point = resolved.points[0]
    run_dir = resolved.run_dir(point)
    with runs.RunLock(run_dir) as lock:
        executor._execute(resolved, point, 1, None, run_dir, lock, Children())
    assert json.loads(seen[runs.DATASET_FALLBACK_ENV]) == resolved.dataset_fallback(point)
    monkeypatch.setenv(runs.DATASET_FALLBACK_ENV, seen[runs.DATASET_FALLBACK_ENV])
    tasks.save_run(tmp_path / "run", {"dataset": "digits"}, {"dataset": "digits"})
    metrics = json.loads((tmp_path / "run" / runs.METRICS_FILE).read_text())
    assert metrics["dataset_fallback"] == resolved.dataset_fallback(point)
    # a dataset that is present is no fallback: nothing recorded
    monkeypatch.delenv(runs.DATASET_FALLBACK_ENV)
    tasks.save_run(tmp_path / "run2", {}, {"dataset": "digits"})
    assert "dataset_fallback" not in json.loads((tmp_path / "run2" / runs.METRICS_FILE).read_text())
    direct = flow.resolve(sweep.load_sweep(grid(tmp_path, "31", toy, {"dataset": {"first_available": ["digits"]}},
                                                name="direct"), tmp_path / "runs"), {}, tmp_path / "runs")
    assert direct.dataset_fallbacks == {} and "dataset_fallback" not in direct.identity(direct.points[0])


# ------------------------------------------------------------------ end to end, through papermill
TIMED = """
from qmlnb.lab import tasks
tasks.save_run(tasks.run_dir("toy"), dict(threads=threads, batch_size=batch_size, seed=seed, dataset=dataset),
               {"stage": "qcnn", "timings": {"train_s": {1: 3.0, 2: 1.0}.get(threads, 5.0) + 0.01 * seed},
                "qcnn": {"balanced_accuracy": 0.5}})
"""


@pytest.mark.slow  # real papermill runs
def test_the_sweep_command_runs_the_flow_through_papermill(tmp_path, capsys):
    nb = new_notebook(cells=[new_code_cell(PARAMS, metadata={"tags": ["parameters"]}), new_code_cell(TIMED)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    notebook = tmp_path / "timed.ipynb"
    nbformat.write(nb, notebook)
    final = grid(tmp_path, "70-final", notebook, {"threads": {"from": "threads", "pick": "fastest"}}, name="final")
    grid(tmp_path, "20-threads", notebook, {"threads": [1, 2]}, name="threads")
    from qmlnb import cli

    argv = ["sweep", str(final), "--runs-dir", str(tmp_path / "runs"), "--cores", "2"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "3 runs completed, 0 already complete" in out
    runs_dir = tmp_path / "runs"
    assert json.loads((runs_dir / "threads" / "decision-threads-fastest.json").read_text())["value"] == 2
    done = [p.parent.name for p in (runs_dir / "final").glob("*/status.json")]
    assert done == [runs.run_name({"threads": 2})]
    flow_record = json.loads((runs_dir / "final" / "flow.json").read_text())
    assert flow_record["order"] == 1 and flow_record["references"][0]["value"] == 2
    # a second sweep reuses every complete run and the same decision
    assert cli.main(argv) == 0
    assert "0 runs completed, 3 already complete" in capsys.readouterr().out
    assert json.loads((runs_dir / "threads" / "decision-threads-fastest.json").read_text())["history"] == []
    assert cli.main([*argv, "--list"]) == 0
    assert f"{runs.run_name({'threads': 2})}  threads=2  done" in capsys.readouterr().out


def test_a_cheap_setting_does_not_win_by_its_own_noise(tmp_path):
    # 50 images: seeds at 0.5 and 0.97 (mean 0.735, std 0.33); 200 images: 0.99 and 1.0 (std 0.007)
    for n_train, values in {50: [0.50, 0.97], 200: [0.99, 1.0]}.items():
        for seed, s in enumerate(values):
            fake_run(tmp_path, "size", {"n_train": n_train, "seed": seed}, score=s)
    d = decisions.decide(rows_for(tmp_path, "size", "n_train", "best_score"), "best_score", "n_train", "size")
    assert d["value"] == 200


def test_points_on_an_absent_dataset_are_skipped_before_a_kernel_starts(tmp_path, toy, monkeypatch):
    monkeypatch.setenv("QMLNB_DATA_DIR", str(tmp_path / "no-data"))
    g = grid(tmp_path, "70", toy, {"dataset": ["digits", "svhn"]}, name="final")
    s = sweep.load_sweep(g, tmp_path / "runs")
    actions = {p["dataset"]: a for _, p, _, a in sweep.plan([s], cores=2, jobs=1)}
    assert actions["digits"] == "run"
    assert "dataset 'svhn' is not in the data directory: missing train_32x32.mat or test_32x32.mat" in actions["svhn"]


def test_list_shows_decided_values_and_stages_that_wait(tmp_path, toy, fake_sweep):
    final = grid(tmp_path, "70-final", toy, {"threads": {"from": "threads", "pick": "fastest"}}, name="final")
    threads = grid(tmp_path, "20-threads", toy, {"threads": [1, 2]}, name="threads")
    sweeps = [sweep.load_sweep(p, tmp_path / "runs") for p in (final, threads)]
    lines = flow.plan_lines(sweeps, cores=2, jobs=1)
    assert [line.split()[-1] for line in lines[:2]] == ["run", "run"]
    assert "final/*  waits for an earlier stage" in lines[2] and "no complete run" in lines[2]
    assert not (tmp_path / "runs" / "threads").exists()  # listing decides and writes nothing
    flow.run_flow(sweeps, progress=False)
    lines = flow.plan_lines([sweep.load_sweep(p, tmp_path / "runs") for p in (final, threads)], cores=2, jobs=1)
    assert lines[-1].endswith(f"{runs.run_name({'threads': 2})}  threads=2  done")
