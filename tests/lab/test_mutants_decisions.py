"""qmlnb.lab.decisions and decision_records: the cases a mutmut run over both modules showed no other test pins.

Error messages that must name the grid file and key, the data folder a caller passes, which fields make two
decisions "the same" (and so leave the record as it is), and the boundaries of the two rules.  Run folders are
fabricated with the decision tests' own helper.
"""
from __future__ import annotations

import datetime as dt
import json

import pytest
import test_decisions as td  # fabricated run folders

from qmlnb._util import Each, Interval, IsInstance
from qmlnb.lab import decision_records, decisions, runs
from qmlnb.lab.decisions import DecisionError


# ------------------------------------------------------------------ first_available choices
def test_a_dataset_choice_names_its_file_and_key_in_every_refusal():
    with pytest.raises(DecisionError, match=r"^g\.yaml: dataset: \{first_available: \[\.\.\.\]\} takes no other "
                                            r"keys, got \['first_available', 'x'\]$"):
        decisions.check_choice("dataset", {"first_available": ["digits"], "x": 1}, "g.yaml")
    names_must_be = f"g.yaml: dataset: first_available (dataset names) must be {Each(IsInstance(str)).describe()}"
    for names in (["digits", 3], None):  # None is no list of names here (no "or None")
        with pytest.raises(DecisionError) as err:
            decisions.check_choice("dataset", {"first_available": names}, "g.yaml")
        assert str(err.value) == f"{names_must_be}, got {names!r}"
    with pytest.raises(DecisionError, match=r"^g\.yaml: dataset: unknown datasets \['mnist'\]; "
                                            r"known: digits, fashion-mnist, cifar10, svhn$"):
        decisions.check_choice("dataset", {"first_available": ["digits", "mnist"]}, "g.yaml")
    assert decisions.check_choice("dataset", {"first_available": ["svhn", "digits"]}, "g.yaml") == ["svhn", "digits"]
    with pytest.raises(DecisionError, match=r"^g\.yaml: seed: 'first_available' applies to 'dataset' only$"):
        decisions.check_choice("seed", {"first_available": ["digits"]}, "g.yaml")


def test_no_available_dataset_names_where_and_which(tmp_path, monkeypatch):
    monkeypatch.setenv("QMLNB_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(DecisionError, match=r"^g\.yaml: dataset: none of \['svhn', 'cifar10'\] is in the data "
                                            r"directory$"):
        decisions.first_available(["svhn", "cifar10"], "g.yaml: dataset")


def test_dataset_available_looks_in_the_folder_it_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("QMLNB_DATA_DIR", str(tmp_path / "configured"))
    given = tmp_path / "given"
    (given / "svhn").mkdir(parents=True)
    (given / "svhn" / "test_32x32.mat").write_bytes(b"")
    assert decisions.dataset_available("svhn", given)
    assert not decisions.dataset_available("svhn")  # the configured folder has nothing


def test_an_unknown_or_missing_dataset_is_not_the_sweeps_concern(tmp_path, monkeypatch):
    monkeypatch.setenv("QMLNB_DATA_DIR", str(tmp_path / "empty"))
    # the grid's own checks refuse an unknown name; here it is neither usable nor unusable
    assert decisions.dataset_unusable({"dataset": "mnist"}) is None
    assert decisions.dataset_unusable({"dataset": 3}) is None
    assert decisions.dataset_unusable({}) is None
    assert decisions.dataset_unusable({"dataset": "digits"}) is None
    assert "dataset 'svhn' is not in the data directory" in decisions.dataset_unusable({"dataset": "svhn"})


# ------------------------------------------------------------------ records
def _decided(tmp_path, stage="threads", times=None):
    for threads, t in (times or {1: 4.0, 2: 2.0}).items():
        td.fake_run(tmp_path, stage, {"threads": threads}, train_s=t)
    return decisions.decide(td.rows_for(tmp_path, stage, "threads", "fastest"), "fastest", "threads", stage)


@pytest.mark.parametrize("field", ["value", "runs", "per_value"])
def test_a_decision_that_differs_in_one_field_is_recorded_again(tmp_path, field):
    first = _decided(tmp_path)
    path = decision_records.record(tmp_path, first)
    changed = {"value": 1, "runs": [*first["runs"], "elsewhere"],
               "per_value": [{**first["per_value"][0], "median": 5.0}, *first["per_value"][1:]]}
    decision_records.record(tmp_path, {**first, field: changed[field]})
    saved = json.loads(path.read_text())
    assert saved[field] == changed[field]
    assert len(saved["history"]) == 1 and saved["history"][0][field] == first[field]


def test_missing_files_of_one_group_are_listed_with_commas(tmp_path, monkeypatch):
    monkeypatch.setenv("QMLNB_DATA_DIR", str(tmp_path / "empty"))
    reason = decisions.dataset_unusable({"dataset": "cifar10"})
    assert "missing data_batch_1, data_batch_2, data_batch_3, data_batch_4, data_batch_5 or test_batch" in reason


# ------------------------------------------------------------------ references
def test_a_malformed_reference_names_its_file_and_key():
    with pytest.raises(DecisionError, match=r"^g\.yaml: threads: unknown reference keys \['x'\]; "
                                            r"allowed: \['at_least', 'from', 'param', 'pick'\]$"):
        decisions.parse_reference("threads", {"from": "threads", "pick": "fastest", "x": 1}, "g.yaml")
    for stage in (None, "../up", 3):  # not text, or text that is no plain stage name
        with pytest.raises(DecisionError) as err:
            decisions.parse_reference("threads", {"from": stage, "pick": "fastest"}, "g.yaml")
        assert str(err.value) == f"g.yaml: threads: 'from' must name a stage (a grid's name), got {stage!r}"
    with pytest.raises(DecisionError, match=r"^g\.yaml: threads: unknown rule pick='slowest'; "
                                            r"known rules: fastest, best_score$"):
        decisions.parse_reference("threads", {"from": "threads", "pick": "slowest"}, "g.yaml")


def test_a_reference_reads_its_own_key_unless_param_names_another():
    own = decisions.parse_reference("threads", {"from": "t", "pick": "fastest"}, "g.yaml")
    other = decisions.parse_reference("threads", {"from": "t", "pick": "fastest", "param": "workers"}, "g.yaml")
    assert (own.param, other.param) == ("threads", "workers")
    for param in ("", 3):  # empty, or not text
        with pytest.raises(DecisionError) as err:
            decisions.parse_reference("threads", {"from": "t", "pick": "fastest", "param": param}, "g.yaml")
        assert str(err.value) == f"g.yaml: threads: 'param' must be a parameter name, got {param!r}"
    with pytest.raises(DecisionError) as err:
        decisions.parse_reference("threads", {"from": "t", "pick": "fastest", "at_least": "two"}, "g.yaml")
    assert str(err.value) == f"g.yaml: threads: 'at_least' must be {Interval(float).describe()} or None, got 'two'"
    assert other.decision_key == ("t", "workers", "fastest") and other.where == "g.yaml: threads"


def _floor(at_least):
    return decisions.parse_reference("x", {"from": "t", "pick": "fastest", "at_least": at_least}, "g.yaml")


def test_the_floor_keeps_the_decided_type_where_it_can():
    # an integer floor written as 2.0 still gives an integer (a thread count stays an int)
    raised = decisions.apply_floor(1, _floor(2.0))
    assert raised == 2 and type(raised) is int
    # a fractional floor is never truncated to fit an integer value
    assert decisions.apply_floor(1, _floor(2.5)) == 2.5
    # a value already at the floor is left as it is (its own type)
    kept = decisions.apply_floor(2.0, _floor(2))
    assert kept == 2.0 and type(kept) is float
    assert decisions.apply_floor(0.5, _floor(None)) == 0.5


def test_a_changed_decision_keeps_each_earlier_one_once_oldest_first(tmp_path, capsys):
    first = _decided(tmp_path)
    path = decision_records.record(tmp_path, first)
    first_time = json.loads(path.read_text())["time"]
    written = dt.datetime.fromisoformat(first_time)  # UTC, to the second
    assert written.utcoffset() == dt.timedelta(0) and written.microsecond == 0
    assert abs((dt.datetime.now(dt.timezone.utc) - written).total_seconds()) < 600
    decision_records.record(tmp_path, {**first, "value": 1})
    assert f"threads was 2 ({first_time}), now 1;" in capsys.readouterr().err
    decision_records.record(tmp_path, {**first, "value": 4})
    saved = json.loads(path.read_text())
    assert [h["value"] for h in saved["history"]] == [2, 1]
    assert all("history" not in h for h in saved["history"])  # flat: each earlier record once


@pytest.mark.parametrize("text, kept", [(b"\xff{not json", "\ufffd{not json"), (b"x" * 3000, "x" * 2000)])
def test_an_unreadable_record_is_kept_aside_in_history(tmp_path, capsys, text, kept):
    path = decision_records.decision_path(tmp_path, "threads", "threads", "fastest")
    path.parent.mkdir(parents=True)
    path.write_bytes(text)
    decision_records.record(tmp_path, _decided(tmp_path))
    saved = json.loads(path.read_text())
    assert saved["value"] == 2 and saved["history"] == [{"unreadable": kept}]
    assert capsys.readouterr().err == ""  # no earlier value to report


def test_a_record_that_is_not_an_object_is_replaced(tmp_path):
    path = decision_records.decision_path(tmp_path, "threads", "threads", "fastest")
    path.parent.mkdir(parents=True)
    path.write_text("[1, 2]")
    decision_records.record(tmp_path, _decided(tmp_path))
    saved = json.loads(path.read_text())
    assert saved["value"] == 2 and saved["history"] == []


# ------------------------------------------------------------------ ordering
def test_a_cycle_is_named_from_where_it_starts(tmp_path):
    stages = {"a": [td.ref("x", "b", "a.yaml")], "b": [td.ref("y", "c", "b.yaml")], "c": [td.ref("z", "b", "c.yaml")]}
    with pytest.raises(DecisionError) as err:
        decisions.stage_order(stages)
    # a only leads into the cycle b -> c -> b: it is not part of it
    assert str(err.value) == ("the stages' references form a cycle: "
                              "b (b.yaml: y from c) -> c (c.yaml: z from b)")


# ------------------------------------------------------------------ grid values and run folders
NOTEBOOK = {"threads": 0, "seed": 0, "dataset": "digits"}


@pytest.mark.parametrize("point, message", [
    ({"dataset": {"first_available": ["digits"], "x": 1}}, "g.yaml: dataset: {first_available: [...]} takes no "
                                                          "other keys, got ['first_available', 'x']"),
    ({"nope": {"from": "t", "pick": "fastest"}}, "g.yaml: nope: 'nope' is not a parameter of the notebook"),
    ({"seed": {"a": 1}}, "g.yaml: seed: a mapping value must be a reference {from: <stage>, pick: <rule>} or "
                         "{first_available: [...]}, got {'a': 1}"),
])
def test_a_grid_value_that_is_no_reference_is_named(point, message):
    with pytest.raises(DecisionError) as err:
        decisions.check_points([point], "g.yaml", NOTEBOOK)
    assert str(err.value) == message


def test_a_run_whose_metrics_nest_no_object_is_left_out(tmp_path):
    good = td.fake_run(tmp_path, "t", {"threads": 1}, train_s=2.0)
    bad = td.fake_run(tmp_path, "t", {"threads": 2}, train_s=1.0)
    for timings in (5, "train_s"):  # no mapping where the metric's path goes on
        (bad / "metrics.json").write_text(json.dumps({"timings": timings}))
        rows = decisions.collect([good, bad], "threads", "timings.train_s")
        assert [r["value"] for r in rows] == [1]


def _run(runs_dir, name, params, point, metrics):
    """A complete run folder whose params.json, status point and metrics.json are given apart."""
    folder = runs_dir / "t" / name
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps(params))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    runs.write_status(folder, runs.COMPLETE, point=point)
    return folder


def test_collect_completes_the_point_from_params_and_skips_runs_it_cannot_use(tmp_path):
    timed = {"timings": {"train_s": 1.5}}
    folders = [
        _run(tmp_path, "a-no-param", {"seed": 0}, {"seed": 0}, timed),  # no threads anywhere
        _run(tmp_path, "b-nan", {"threads": 8}, {"threads": 8}, {"timings": {"train_s": float("nan")}}),
        _run(tmp_path, "c-text", {"threads": 8}, {"threads": 8}, {"timings": {"train_s": "fast"}}),
        _run(tmp_path, "d-params", {"threads": 2, "seed": 3}, {"seed": 3}, timed),  # threads from params.json
        _run(tmp_path, "e-point", {"threads": 1, "seed": 4}, {"threads": 4}, timed),  # the point wins
    ]
    rows = decisions.collect(folders, "threads", "timings.train_s")
    assert [(r["run"], r["value"], r["seed"], r["metric"]) for r in rows] == [
        (str(folders[3]), 2, 3, 1.5), (str(folders[4]), 4, 4, 1.5)]
    assert rows[0]["setting"] == rows[1]["setting"] == "{}"


def test_collect_names_a_run_whose_records_are_no_objects(tmp_path):
    folder = _run(tmp_path, "a", [1], {"threads": 1}, {"timings": {"train_s": 1.0}})
    with pytest.raises(DecisionError) as err:
        decisions.collect([folder], "threads", "timings.train_s")
    assert str(err.value) == (f"complete run {folder}: its params.json, metrics.json and status.json point "
                              "must be JSON objects")


def test_decide_messages_and_a_single_runs_spread(tmp_path):
    with pytest.raises(DecisionError) as err:
        decisions.decide([], "fastest", "threads")
    assert str(err.value) == "stage '?' has no complete run with 'threads' and 'timings.train_s'"
    with pytest.raises(DecisionError) as err:
        decisions.decide([], "slowest", "threads")
    assert str(err.value) == "unknown rule 'slowest'; known rules: fastest, best_score"
    # one run per value: its std is 0, so a cheaper value below the best is not "within one std"
    for batch, score in {8: 0.5, 16: 0.9}.items():
        td.fake_run(tmp_path, "bs", {"batch_size": batch, "dataset": "digits"}, score=score)
    d = decisions.decide(td.rows_for(tmp_path, "bs", "batch_size", "best_score"), "best_score", "batch_size", "bs")
    assert d["value"] == 16 and [v["std"] for v in d["per_value"]] == [0.0, 0.0]
    assert [v["runs"] for v in d["per_value"]] == [[runs.run_name({"batch_size": b, "dataset": "digits"})]
                                                   for b in (8, 16)]  # each value's own run folders, by name
    # runs that differ in one more parameter name only that one (the dataset they share is not listed)
    td.fake_run(tmp_path, "bs", {"batch_size": 32, "dataset": "digits", "n_train": 50}, score=0.7)
    with pytest.raises(DecisionError, match=r"differ in \['n_train'\] besides 'batch_size'"):
        decisions.decide(td.rows_for(tmp_path, "bs", "batch_size", "best_score"), "best_score", "batch_size", "bs")


@pytest.mark.parametrize("kind", ["link", "folder"])
def test_a_record_path_that_is_no_plain_file_is_refused_in_full(tmp_path, kind):
    path = decision_records.decision_path(tmp_path, "threads", "threads", "fastest")
    path.parent.mkdir(parents=True)
    if kind == "link":
        path.symlink_to(tmp_path / "elsewhere.json")
    else:
        path.mkdir()
    with pytest.raises(DecisionError) as err:
        decision_records.check_writable(path, tmp_path)
    what = "a symbolic link" if kind == "link" else "not a regular file"
    assert str(err.value) == (f"refusing to write {path}: it is {what} (remove it; the flow writes only plain files "
                              "inside the runs folder)")


def _decide_scores(tmp_path, scores: dict) -> dict:
    for batch, values in scores.items():
        for seed, score in enumerate(values):
            td.fake_run(tmp_path, "bs", {"batch_size": batch, "seed": seed}, score=score)
    return decisions.decide(td.rows_for(tmp_path, "bs", "batch_size", "best_score"), "best_score", "batch_size", "bs")


def test_best_score_boundaries(tmp_path):
    # exactly one std (0.5, exact in binary) below the best: within noise, the cheaper value wins
    d = _decide_scores(tmp_path / "a", {8: [0.0], 16: [0.0, 0.5, 1.0]})
    assert d["value"] == 8 and "within one std of the best batch_size=16" in d["reason"]
    # equal means: the cheaper value is the best itself
    d = _decide_scores(tmp_path / "b", {8: [0.9], 16: [0.9]})
    assert d["value"] == 8 and d["reason"].startswith("batch_size=8 has the best mean")


def test_the_fastest_reason_says_why_a_cheaper_value_won(tmp_path):
    for threads, times in {1: [5.0, 6.2, 7.0, 8.0], 2: [4.0, 5.9, 6.1, 9.0]}.items():
        for seed, t in enumerate(times):
            td.fake_run(tmp_path, "threads", {"threads": threads, "seed": seed}, train_s=t)
    d = decisions.decide(td.rows_for(tmp_path, "threads", "threads", "fastest"), "fastest", "threads", "threads")
    assert d["reason"] == ("threads=1 (median timings.train_s 6.6 s (IQR 5.9-7.25, n=4)) is within noise of the "
                           "fastest threads=2 (median 6 s, IQR 5.43-6.82, n=4: the IQRs overlap) and cheaper")


# ------------------------------------------------------------------ reading records back
def _record_at(tmp_path, **change):
    record = {"stage": "threads", "param": "threads", "rule": "fastest", "metric": "timings.train_s", "value": 2,
              "reason": "r", "runs": ["a"],
              "per_value": [{"value": 2, "n": 1, "median": 1.0, "q1": 1.0, "q3": 1.0, "mean": 1.0, "std": 0.0}]}
    record.update(change)
    return {k: v for k, v in record.items() if v is not _DROP}, tmp_path / "threads" / "decision-threads-fastest.json"


_DROP = object()


@pytest.mark.parametrize("change, message", [
    ({"param": _DROP}, "'param' must be a parameter name, got nothing"),
    ({"param": "two words"}, "'param' must be a parameter name, got a str"),
    ({"stage": "other"}, "'stage' must be the name of its folder, got a str"),
    ({"rule": "slowest"}, "'rule' must be one of fastest, best_score, got a str"),
    ({"value": "2"}, "'value' must be a finite number, got a str"),
    ({"reason": 3}, "'reason' must be text, got an int"),
    ({"per_value": {}}, "'per_value' must be a list of objects, got a dict"),
    ({"runs": "a"}, "'runs' must be a list of run folders, got a str"),
    ({"metric": "qcnn.balanced_accuracy"}, "'metric' must be 'timings.train_s', the metric of its rule, got a str"),
    ({"per_value": [{"value": 2}]}, "per_value[0]: 'n' must be a positive count, got nothing"),
])
def test_check_decision_names_the_file_and_the_field(tmp_path, change, message):
    record, path = _record_at(tmp_path, **change)
    with pytest.raises(ValueError) as err:
        decision_records.check_decision(record, path)
    assert str(err.value) == f"{path}: {message}"


def test_check_decision_takes_a_record_without_runs_and_refuses_a_list(tmp_path):
    record, path = _record_at(tmp_path, runs=None)
    assert decision_records.check_decision(record, path) is record
    with pytest.raises(ValueError) as err:
        decision_records.check_decision([record], path)
    assert str(err.value) == f"{path}: expected a JSON object, got list"


def test_a_record_reached_through_a_linked_stage_folder_is_not_read(tmp_path):
    record, _ = _record_at(tmp_path)
    outside = tmp_path / "outside" / "threads"
    outside.mkdir(parents=True)
    (outside / "decision-threads-fastest.json").write_text(json.dumps(record))
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    (runs_dir / "threads").symlink_to(outside)
    records, unreadable = decision_records.load_decisions(runs_dir)
    assert records == [] and "not inside the runs folder" in unreadable[0][1]


def test_a_decision_states_its_rule_in_words(tmp_path):
    d = _decided(tmp_path)
    assert d["rule_text"] == decisions.RULES["fastest"].what and "median" in d["rule_text"]
