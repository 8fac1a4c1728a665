"""``python -m qmlnb --help`` answers at once: it imports no heavy module (torch, pandas, nbformat, jsonschema);
a command imports only its own module."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pandas", "nbformat", "jsonschema", "sklearn", "pennylane", "matplotlib")
PROBE = """
import sys
from qmlnb.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print("LOADED", sorted(m for m in {heavy!r} if m in sys.modules))
print("QMLNB", sorted(m for m in sys.modules if m.startswith("qmlnb.")))
"""


def loaded(argv):
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("LOADED", "QMLNB")))
    return eval(lines["LOADED"]), eval(lines["QMLNB"]), out.stdout  # noqa: S307 (our own repr of two lists)


@pytest.mark.parametrize("argv", [["--help"], ["bench", "--help"]])
def test_help_imports_no_heavy_module(argv):
    heavy, ours, stdout = loaded(argv)
    assert heavy == [] and ours == ["qmlnb.cli"], (heavy, ours)
    # every command is listed with the first line of its module's docstring
    if argv == ["--help"]:
        assert "The summary report: run folders -> tables, plots" in stdout and "download" in stdout


def test_a_command_imports_its_own_module_only():
    from qmlnb import cli

    parser = cli.build_parser(["track", "--help"])
    assert "track" in parser.format_help()
    _, ours, _ = loaded(["track", "--help"])
    assert "qmlnb.lab.track" in ours and "qmlnb.lab.report" not in ours and "qmlnb.bench.gram" not in ours
