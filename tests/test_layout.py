"""The layering of docs/architecture.md holds: the library never imports the lab, and no import cycles.

The contracts live in pyproject.toml ([tool.importlinter]); import-linter reads the
imports statically, so a lazy import inside a function counts too.
"""
from pathlib import Path

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold(monkeypatch):
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0
