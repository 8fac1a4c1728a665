"""qmlnb.lab.flow: the cases a mutmut run over the module showed no other test pins.

What the flow hands to each stage's sweep, what it says and writes per stage (``flow.json``), where it looks for
a referenced stage and its runs, what ``--list`` prints (and that it writes nothing), the error messages that
must name the grid file and key, and the checks of a ``flow.json`` the report reads.  Runs are fabricated with
the decision tests' helpers; no notebook runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re

import pytest
import test_decisions as td  # fabricated run folders and the flow's grids

from qmlnb.lab import decisions, flow, runs, sweep
from qmlnb.lab.decisions import DecisionError

toy = td.toy  # the fixture: the flow tests' notebook (threads, batch_size, seed, dataset)
SUMMARY_KEYS = ("complete", "already_complete", "skipped", "failed", "busy")


@pytest.fixture
def stages(monkeypatch):
    """run_sweeps writing complete run folders (train time from td.TIMES), recording each call's sweeps and
    options, and returning a summary with every field the sweep command prints."""
    calls = []

    def run_sweeps(sweeps, **options):
        calls.append({"names": [s.name for s in sweeps], "points": [p for s in sweeps for p in s.points],
                      "runs_dirs": {str(s.runs_dir) for s in sweeps}, "options": options})
        for s in sweeps:
            for p in s.points:
                td.fake_run(s.runs_dir, s.name, p, train_s=td.TIMES.get(p.get("threads"), 9.0), score=0.5,
                            identity=s.identity(p))
        n = sum(len(s.points) for s in sweeps)
        return {**dict.fromkeys(SUMMARY_KEYS, 0), "complete": n, "skips": [], "busy_runs": [], "failures": []}

    monkeypatch.setattr(sweep, "run_sweeps", run_sweeps)
    return calls


def _args(grids, tmp_path, **change):
    args = {"grids": [str(g) for g in grids], "runs_dir": str(tmp_path / "runs"), "jobs": 1, "cores": None,
            "dask": None, "list": False, "data_dir": None, "tracker": None, "tracker_store": None}
    return argparse.Namespace(**{**args, **change})


def _final_and_threads(tmp_path, toy, final=None, threads=(1, 2)):
    """(the final grid referring to the threads stage, the threads grid), both in tmp_path/params."""
    final = td.grid(tmp_path, "70-final", toy, final or {"threads": {"from": "threads", "pick": "fastest"}},
                    name="final")
    return final, td.grid(tmp_path, "20-threads", toy, {"threads": list(threads)}, name="threads")


def _load(*grids, runs_dir):
    return [sweep.load_sweep(g, runs_dir) for g in grids]


# ------------------------------------------------------------------ what each stage's sweep gets
OPTIONS = {"jobs": 3, "cores": 5, "progress": False, "client": "tcp://scheduler:8786", "tracker": "t",
           "data_dir": "d"}


def test_grids_without_references_go_to_one_sweep_with_every_option(tmp_path, toy, stages):
    grids = [td.grid(tmp_path, "a", toy, {"threads": [1]}, name="a"), td.grid(tmp_path, "b", toy, {"seed": [0, 1]},
                                                                              name="b")]
    summary = flow.run_flow(_load(*grids, runs_dir=tmp_path / "runs"), **OPTIONS)
    assert [c["names"] for c in stages] == [["a", "b"]]
    assert stages[0]["options"] == OPTIONS
    assert summary["complete"] == 3


def test_each_stage_gets_every_option(tmp_path, toy, stages):
    flow.run_flow(_load(*_final_and_threads(tmp_path, toy), runs_dir=tmp_path / "runs"), **OPTIONS)
    assert [c["names"] for c in stages] == [["threads"], ["final"]]
    assert [c["options"] for c in stages] == [OPTIONS, OPTIONS]


def test_by_default_one_job_with_progress_said_per_stage_on_stderr(tmp_path, toy, stages, capsys):
    final, threads = _final_and_threads(tmp_path, toy, {"threads": {"from": "threads", "pick": "fastest"},
                                                        "seed": [0, 1]})
    flow.run_flow(_load(final, threads, runs_dir=tmp_path / "runs"))
    assert [c["options"] for c in stages] == [{"jobs": 1, "cores": None, "progress": True, "client": None}] * 2
    out, err = capsys.readouterr()
    assert "stage threads: 2 point(s)\n" in err and "stage final: 2 point(s)\n" in err
    assert "point(s)" not in out
    flow.run_flow(_load(final, threads, runs_dir=tmp_path / "runs"), progress=False)
    assert "point(s)" not in capsys.readouterr().err


def test_each_different_fallback_of_a_stage_is_said_once(tmp_path, toy, stages, monkeypatch, capsys):
    monkeypatch.setenv("QMLNB_DATA_DIR", str(tmp_path / "no-data"))
    grids = [td.grid(tmp_path, f"3{i}", toy, {"dataset": {"first_available": [first, "digits"]}, "seed": [i, 10 + i]},
                     name="size") for i, first in enumerate(("fashion-mnist", "cifar10"))]
    flow.run_flow(_load(*grids, runs_dir=tmp_path / "runs"), progress=False)
    err = capsys.readouterr().err
    for first in ("fashion-mnist", "cifar10"):
        assert err.count(f"stage size: runs on digits instead of {first}: {first} is not in") == 1


# ------------------------------------------------------------------ flow.json
def test_flow_json_records_the_stage_its_place_grids_references_and_a_utc_time(tmp_path, toy, stages):
    final, threads = _final_and_threads(
        tmp_path, toy, {"threads": {"from": "threads", "pick": "fastest", "at_least": 2}, "seed": [0, 1]},
        threads=(1, 2, 4))
    flow.run_flow(_load(final, threads, runs_dir=tmp_path / "runs"), progress=False)
    records = {r["stage"]: r for r in flow.load_flow(tmp_path / "runs")[0]}
    assert set(records["final"]) == {"stage", "order", "grid_files", "references", "time"}
    assert (records["threads"]["order"], records["final"]["order"]) == (0, 1)
    assert (records["threads"]["grid_files"], records["final"]["grid_files"]) == ([str(threads)], [str(final)])
    assert records["threads"]["references"] == []
    # one entry for the reference both seeds use; 2 decided (td.TIMES), at_least 2 leaves it
    assert records["final"]["references"] == [{"key": "threads", "from": "threads", "pick": "fastest",
                                               "param": "threads", "at_least": 2, "decided": 2, "value": 2}]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", records["final"]["time"])


# ------------------------------------------------------------------ where a referenced stage and its runs are found
def test_a_sibling_grid_is_found_past_unreadable_yaml_and_runs_in_the_same_folder(tmp_path, toy, stages, monkeypatch):
    final, _ = _final_and_threads(tmp_path, toy)
    (tmp_path / "params" / "10-broken.yaml").write_text("grid: [unclosed\n")  # sorts before the threads grid
    monkeypatch.chdir(tmp_path / "params")  # a relative runs/ folder would land here
    flow.run_flow(_load(final, runs_dir=tmp_path / "runs"), progress=False)
    assert [c["names"] for c in stages] == [["threads"], ["final"]]
    assert [c["runs_dirs"] for c in stages] == [{str(tmp_path / "runs")}] * 2
    assert not (tmp_path / "params" / "runs").exists()


def test_a_grid_referring_to_a_given_stage_and_a_sibling_stage_finds_both(tmp_path, toy, stages):
    refs = {"threads": {"from": "threads", "pick": "fastest"},
            "batch_size": {"from": "batch", "pick": "fastest", "param": "threads"}}
    final = td.grid(tmp_path, "70-final", toy, refs, name="final")
    threads = td.grid(tmp_path, "20-threads", toy, {"threads": [1, 2]}, name="threads")
    td.grid(tmp_path, "25-batch", toy, {"threads": [1, 4]}, name="batch")  # found beside final
    flow.run_flow(_load(final, threads, runs_dir=tmp_path / "runs"), progress=False)
    assert sorted(c["names"][0] for c in stages[:2]) == ["batch", "threads"]
    assert stages[2]["points"] == [{"threads": 2, "batch_size": 4}]


def test_a_stage_with_only_failed_runs_on_disk_is_refused_before_any_work(tmp_path, toy, stages):
    td.fake_run(tmp_path / "runs", "old", {"threads": 1}, train_s=1.0, status=runs.FAILED)
    first = td.grid(tmp_path, "10-first", toy, {"threads": [1]}, name="first")
    final = td.grid(tmp_path, "70-final", toy, {"threads": {"from": "old", "pick": "fastest"}}, name="final")
    with pytest.raises(DecisionError, match=r"references stage 'old', which is not among the grids \(first, final\)"):
        flow.run_flow(_load(first, final, runs_dir=tmp_path / "runs"), progress=False)
    assert stages == []


def test_only_the_current_points_of_a_referenced_stage_decide(tmp_path, toy, monkeypatch):
    # threads=4 is skipped (more threads than cores): its complete run of an older notebook must not count
    td.fake_run(tmp_path / "runs", "threads", {"threads": 4}, train_s=0.1)
    calls = []

    def run_sweeps(sweeps, **options):
        for s in sweeps:
            calls.append(s.name)
            for p in s.points:
                if p["threads"] != 4:
                    td.fake_run(s.runs_dir, s.name, p, train_s=td.TIMES[p["threads"]], identity=s.identity(p))
        return {"complete": 1}

    monkeypatch.setattr(sweep, "run_sweeps", run_sweeps)
    final, threads = _final_and_threads(tmp_path, toy, threads=(1, 2, 4))
    flow.run_flow(_load(final, threads, runs_dir=tmp_path / "runs"), progress=False)
    assert calls == ["threads", "final"]
    saved = json.loads((tmp_path / "runs" / "threads" / "decision-threads-fastest.json").read_text())
    assert saved["value"] == 2 and len(saved["runs"]) == 2


# ------------------------------------------------------------------ decide_reference and resolve
def test_decide_reference_records_by_default_and_not_when_told(tmp_path):
    for threads, t in {1: 3.0, 2: 1.0}.items():
        td.fake_run(tmp_path, "old", {"threads": threads}, train_s=t)
    ref = decisions.parse_reference("threads", {"from": "old", "pick": "fastest"}, "g.yaml")
    path = tmp_path / "old" / "decision-threads-fastest.json"
    assert flow.decide_reference(ref, {}, tmp_path, write=False)["value"] == 2 and not path.exists()
    assert flow.decide_reference(ref, {}, tmp_path)["value"] == 2
    assert json.loads(path.read_text())["value"] == 2


def test_no_run_to_decide_from_says_where_it_looked(tmp_path, toy):
    ref = decisions.parse_reference("threads", {"from": "old", "pick": "fastest"}, "g.yaml")
    with pytest.raises(DecisionError, match=r"^g\.yaml: threads: the runs folder of stage 'old' has no complete run "
                                            r"to decide 'threads' by 'fastest'$"):
        flow.decide_reference(ref, {}, tmp_path)
    threads = sweep.load_sweep(td.grid(tmp_path, "20-threads", toy, {"threads": [1]}, name="old"), tmp_path / "runs")
    with pytest.raises(DecisionError, match=r"^g\.yaml: threads: this sweep's points of stage 'old' has no complete "
                                            r"run to decide 'threads' by 'fastest'$"):
        flow.decide_reference(ref, {"old": [threads]}, tmp_path / "runs")


def test_a_decision_the_runs_cannot_make_names_the_grid_and_key(tmp_path, toy, stages):
    for threads, t in {1: 3.0, 2: 1.0}.items():  # two settings (batch_size) that the rule must not pool
        td.fake_run(tmp_path / "runs", "old", {"threads": threads, "batch_size": 8 * threads}, train_s=t)
    final = td.grid(tmp_path, "70-final", toy, {"threads": {"from": "old", "pick": "fastest"}}, name="final")
    with pytest.raises(DecisionError, match=rf"^{re.escape(str(final))}: threads: stage 'old': its complete runs "
                                            r"differ in \['batch_size'\]"):
        flow.run_flow(_load(final, runs_dir=tmp_path / "runs"), progress=False)


def test_a_decided_value_of_the_wrong_type_names_the_grid_key_and_default(tmp_path, toy, stages):
    for threads, t in {1.5: 3.0, 2.5: 1.0}.items():  # runs on disk: no grid checked their values
        td.fake_run(tmp_path / "runs", "old", {"threads": threads}, train_s=t)
    final = td.grid(tmp_path, "70-final", toy, {"threads": {"from": "old", "pick": "fastest"}}, name="final")
    with pytest.raises(sweep.SweepError) as err:
        flow.run_flow(_load(final, runs_dir=tmp_path / "runs"), progress=False)
    assert str(err.value) == (f"{final}: threads: the decided value 2.5 does not have the type of the notebook's "
                              "default 0")
    assert stages == []


def test_a_decided_point_equal_to_a_listed_one_is_refused_naming_the_grid(tmp_path, toy, stages):
    final, threads = _final_and_threads(tmp_path, toy, [{"threads": {"from": "threads", "pick": "fastest"}},
                                                        {"threads": [2]}])
    with pytest.raises(sweep.SweepError, match=rf"^{re.escape(str(final))}: the point \{{'threads': 2\}} appears "
                                               "twice in the grid"):
        flow.run_flow(_load(final, threads, runs_dir=tmp_path / "runs"), progress=False)
    assert [c["names"] for c in stages] == [["threads"]]


def test_resolve_names_the_grid_when_no_dataset_of_a_choice_is_there(tmp_path, toy, monkeypatch):
    monkeypatch.setenv("QMLNB_DATA_DIR", str(tmp_path / "no-data"))
    g = td.grid(tmp_path, "30", toy, {"dataset": {"first_available": ["svhn", "cifar10"]}}, name="size")
    loaded = sweep.load_sweep(g, tmp_path / "runs")
    with pytest.raises(DecisionError, match=rf"^{re.escape(str(g))}: dataset: none of \['svhn', 'cifar10'\]"):
        flow.resolve(loaded, {}, tmp_path / "runs")
    # resolve checks the choices it is given as the grid's loader does, naming the same file
    bad = dataclasses.replace(loaded, points=[{"dataset": {"first_available": ["digits"], "x": 1}}])
    with pytest.raises(DecisionError, match=rf"^{re.escape(str(g))}: dataset: \{{first_available: \[\.\.\.\]\}} "
                                            "takes no other keys"):
        flow.resolve(bad, {}, tmp_path / "runs")


# ------------------------------------------------------------------ --list
def _lines_of(sweeps, cores=2, jobs=1):
    return [line.replace(str(sweeps[0].runs_dir), "R") for line in flow.plan_lines(sweeps, cores=cores, jobs=jobs)]


def _name(**point):
    return runs.run_name(point)


def test_list_without_references_says_run_done_or_skip_per_point(tmp_path, toy):
    g = td.grid(tmp_path, "20-threads", toy, {"threads": [1, 2, 4]}, name="threads")
    [threads] = _load(g, runs_dir=tmp_path / "runs")
    td.fake_run(tmp_path / "runs", "threads", {"threads": 2}, train_s=1.0, identity=threads.identity({"threads": 2}))
    assert _lines_of([threads]) == [f"R/threads/{_name(threads=1)}  threads=1  run",
                                    f"R/threads/{_name(threads=2)}  threads=2  done",
                                    f"R/threads/{_name(threads=4)}  threads=4  skip (threads=4 exceeds the 2 cores "
                                    "of this machine)"]
    # a point without threads gets the cores shared among the jobs
    [seeds] = _load(td.grid(tmp_path, "s", toy, {"seed": [0]}, name="s"), runs_dir=tmp_path / "runs")
    assert _lines_of([seeds], cores=6, jobs=2) == [f"R/s/{_name(seed=0)}  threads=3  run"]


def test_list_goes_on_past_a_stage_that_waits_and_keeps_every_stages_lines(tmp_path, toy, stages):
    final, threads = _final_and_threads(tmp_path, toy)
    extra = td.grid(tmp_path, "80-extra", toy, {"seed": [0]}, name="extra")
    sweeps = _load(final, threads, extra, runs_dir=tmp_path / "runs")
    lines = _lines_of(sweeps)
    assert lines[:2] == [f"R/threads/{_name(threads=t)}  threads={t}  run" for t in (1, 2)]
    assert lines[2].startswith("R/final/*  waits for an earlier stage (")
    assert lines[3:] == [f"R/extra/{_name(seed=0)}  threads=2  run"]
    flow.run_flow(sweeps, progress=False)
    assert _lines_of(_load(final, threads, extra, runs_dir=tmp_path / "runs"), cores=1) == [
        f"R/threads/{_name(threads=1)}  threads=1  done", f"R/threads/{_name(threads=2)}  threads=2  done",
        f"R/final/{_name(threads=2)}  threads=2  done", f"R/extra/{_name(seed=0)}  threads=1  done"]


def test_list_decides_from_runs_on_disk_writes_nothing_and_shows_skips(tmp_path, toy):
    for threads, t in {1: 3.0, 2: 1.0}.items():
        td.fake_run(tmp_path / "runs", "old", {"threads": threads}, train_s=t)
    final = td.grid(tmp_path, "70-final", toy, {"threads": {"from": "old", "pick": "fastest"}}, name="final")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "runs").rglob("*"))
    assert _lines_of(_load(final, runs_dir=tmp_path / "runs"), cores=1) == [
        f"R/final/{_name(threads=2)}  threads=2  skip (threads=2 exceeds the 1 core of this machine)"]
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "runs").rglob("*")) == before  # no decision record


# ------------------------------------------------------------------ the sweep command
def test_the_sweep_command_runs_and_lists_stage_by_stage(tmp_path, toy, stages, monkeypatch, capsys):
    monkeypatch.delenv("QMLNB_DATA_DIR", raising=False)
    parser = argparse.ArgumentParser()
    flow.add_arguments(parser)  # the sweep command's arguments
    args = parser.parse_args([str(tmp_path / "g.yaml"), "--list", "--jobs", "2", "--tracker-store", "s"])
    assert (args.grids, args.list, args.jobs, args.runs_dir, args.tracker_store) == (
        [str(tmp_path / "g.yaml")], True, 2, "runs", "s")
    final, _ = _final_and_threads(tmp_path, toy)
    assert flow.run(_args([final], tmp_path, list=True)) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'runs' / 'threads' / _name(threads=1)}  threads=1  run" in out
    assert "final/*  waits for an earlier stage" in out
    assert flow.run(_args([final], tmp_path)) == 0
    assert [c["names"] for c in stages] == [["threads"], ["final"]]
    assert stages[1]["points"] == [{"threads": 2}]
    assert "sweep: 3 runs completed" in capsys.readouterr().out


# ------------------------------------------------------------------ flow.json as the report reads it
def _flow_record(stage, **change):
    ref = {"key": "threads", "from": "threads", "pick": "fastest", "param": "threads", "at_least": None,
           "decided": 2, "value": 2}
    return {"stage": stage, "order": 1, "grid_files": ["g.yaml"], "time": "t", "references": [ref], **change}


def _why_unreadable(tmp_path, record) -> str:
    path = tmp_path / "runs" / "final" / flow.FLOW_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    records, unreadable = flow.load_flow(tmp_path / "runs")
    if records:
        return ""
    [(where, why)] = unreadable
    assert where == path and why.startswith(f"{path}: ")
    return why[len(f"{path}: "):]


REFERENCES_MUST_BE = ("'references' must be a list of {key, from, pick, param, value, decided, at_least} with plain "
                      "names and numbers, got a list")


@pytest.mark.parametrize(("change", "why"), [
    ({}, ""),
    ({"order": 9_999}, ""),
    ({"order": 10_000}, "'order' must be a stage count, got an int"),
    ({"order": -1}, "'order' must be a stage count, got an int"),
    ({"ref": {"decided": "2"}}, REFERENCES_MUST_BE),
    ({"ref": {"at_least": "1"}}, REFERENCES_MUST_BE),
    ({"ref": {"decided": None, "at_least": 1.5}}, ""),
])
def test_check_flow_record_names_the_file_and_the_field(tmp_path, change, why):
    change = dict(change)
    ref = change.pop("ref", None)
    record = _flow_record("final", **change)
    if ref:
        record["references"] = [{**record["references"][0], **ref}]
    assert _why_unreadable(tmp_path, record) == why


def test_a_flow_record_that_is_no_object_is_named(tmp_path):
    assert _why_unreadable(tmp_path, [1, 2]) == "expected a JSON object, got list"


def test_a_flow_record_reached_through_a_linked_stage_folder_is_not_read(tmp_path):
    outside = tmp_path / "outside" / "final"
    outside.mkdir(parents=True)
    (outside / flow.FLOW_FILE).write_text(json.dumps(_flow_record("final")))
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "final").symlink_to(outside)
    records, unreadable = flow.load_flow(tmp_path / "runs")
    assert records == [] and [p.parent.name for p, _ in unreadable] == ["final"]
    assert "not inside the runs folder" in unreadable[0][1]
