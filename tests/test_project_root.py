"""The project folder: found from the package (a checkout) or from the working directory (an installed copy).

Notebooks opened in JupyterLab run in ``notebooks/``, papermill's in a run folder: the data folder and where an
interactive run writes must not depend on that.
"""
from pathlib import Path

import pytest

from qmlnb import _util
from qmlnb.data import data_dir
from qmlnb.lab import runs, tasks

REPO = Path(__file__).resolve().parents[1]


def fake_project(folder: Path, name: str = "qmlnb") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(f'[project]\nname = "{name}"\nversion = "0"\n')
    (folder / "notebooks").mkdir(exist_ok=True)
    return folder


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """The package as if installed in site-packages (no checkout around it)."""
    monkeypatch.setattr(_util, "PACKAGE_DIR", tmp_path / "venv" / "site-packages" / "qmlnb")
    monkeypatch.delenv("QMLNB_DATA_DIR", raising=False)
    monkeypatch.delenv(runs.RUN_DIR_ENV, raising=False)
    return tmp_path


def test_the_checkout_holding_the_package_whatever_the_working_directory(monkeypatch, tmp_path):
    assert _util.is_project_root(REPO) and _util.PACKAGE_DIR == REPO / "qmlnb"
    for cwd in (REPO, REPO / "notebooks", tmp_path):
        monkeypatch.chdir(cwd)
        assert _util.project_root() == REPO
    # another project's folder around the working directory does not count
    fake_project(tmp_path / "other", name="other")
    assert _util.project_root(tmp_path / "other" / "notebooks") == REPO


def test_an_installed_copy_finds_the_project_above_the_working_directory(installed, monkeypatch):
    project = fake_project(installed / "checkout")
    assert _util.project_root(project / "notebooks") == project
    monkeypatch.chdir(project / "notebooks")
    assert _util.project_root() == project
    # a pyproject.toml of another name is not qmlnb's; nothing found: the working directory itself
    inner = fake_project(project / "notebooks" / "vendored", name="qmlnb-extras")
    assert _util.project_root(inner) == project
    outside = installed / "elsewhere"
    outside.mkdir()
    assert _util.project_root(outside) == outside
    (installed / "broken").mkdir()
    (installed / "broken" / "pyproject.toml").write_bytes(b"\xff\xfe name")  # not UTF-8: not a project
    assert not _util.is_project_root(installed / "broken")


def test_data_dir_and_interactive_runs_live_at_the_project_root_never_in_notebooks(installed, monkeypatch):
    project = fake_project(installed / "checkout")
    monkeypatch.chdir(project / "notebooks")
    assert data_dir() == project / "data"
    folder = tasks.run_dir("explore")
    assert folder == project / "runs" / "interactive" / "explore" and folder.is_dir()
    assert list((project / "notebooks").iterdir()) == []
    # under a sweep the run folder is the sweep's
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(installed / "sweep-run"))
    assert tasks.run_dir("explore") == installed / "sweep-run"
    monkeypatch.setenv("QMLNB_DATA_DIR", "relative/data")
    assert data_dir() == Path("relative/data")
