"""Benchmark JSON only from a clean tree, unless --allow-dirty (then marked)."""
from __future__ import annotations

import json

import pytest

from qmlnb.bench import results


def test_a_dirty_tree_is_refused_unless_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "git_commit", lambda: {"commit": "abc", "dirty": True})
    with pytest.raises(results.DirtyTreeError, match="--allow-dirty"):
        results.check_tree(False)
    started = results.check_tree(True)
    written = results.write_result(tmp_path / "r.json", {"x": 1}, allow_dirty=True, started=started)
    on_disk = json.loads((tmp_path / "r.json").read_text())
    assert on_disk == written and on_disk["provenance"]["dirty"] is True and on_disk["provenance"]["allow_dirty"]


def test_a_clean_tree_writes_and_a_tree_that_changed_during_the_run_does_not(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "git_commit", lambda: {"commit": "abc", "dirty": False})
    started = results.check_tree(False)
    results.write_result(tmp_path / "r.json", {"x": 1}, allow_dirty=False, started=started)
    assert json.loads((tmp_path / "r.json").read_text())["provenance"]["dirty"] is False
    monkeypatch.setattr(results, "git_commit", lambda: {"commit": "def", "dirty": False})
    with pytest.raises(results.DirtyTreeError, match="commit changed"):
        results.write_result(tmp_path / "s.json", {"x": 1}, allow_dirty=False, started=started)
    assert not (tmp_path / "s.json").exists()
    monkeypatch.setattr(results, "git_commit", lambda: {"commit": None, "dirty": None})
    with pytest.raises(results.DirtyTreeError, match="not a git checkout"):
        results.check_tree(False)


def test_bench_qsvm_refuses_a_dirty_tree_before_any_work(tmp_path, monkeypatch):
    from qmlnb.bench import qsvm
    from qmlnb.cli import main

    monkeypatch.setattr(results, "git_commit", lambda: {"commit": "abc", "dirty": True})
    monkeypatch.setattr(qsvm, "run_task", lambda *a, **k: pytest.fail("work started on a dirty tree"))
    with pytest.raises(SystemExit, match="uncommitted"):
        main(["bench", "qsvm", "--datasets", "digits", "--json", str(tmp_path / "q.json")])
