"""``python -m qmlnb``: benchmarks, sweeps and reports from the command line."""
from __future__ import annotations

import argparse
import ast
import importlib
from pathlib import Path

# subcommand -> module with add_arguments(parser) and run(args) -> int
BENCHES = {
    "gram": "qmlnb.bench.gram",
    "gpu": "qmlnb.bench.gpu_baseline",
    "qsvm": "qmlnb.bench.qsvm",
    "qcnn": "qmlnb.bench.qcnn",
    "scale": "qmlnb.bench.scale",
    "mps": "qmlnb.bench.mps",
    "shots": "qmlnb.bench.shots",
    "feature-maps": "qmlnb.bench.feature_maps",
    "dropin": "qmlnb.bench.dropin",
    "kernel-training": "qmlnb.bench.kernel_training",
    "projected": "qmlnb.bench.projected",
    "positive-control": "qmlnb.bench.positive_control",
    "sparse": "qmlnb.bench.sparse",
    "kernels-at-scale": "qmlnb.bench.kernels_at_scale",
}
COMMANDS = {
    "sweep": "qmlnb.lab.flow",  # qmlnb.lab.sweep's command, stages in dependency order
    "report": "qmlnb.lab.report",
    "track": "qmlnb.lab.track",
    "download": "qmlnb.data.download",
}
PACKAGE = Path(__file__).resolve().parent


def summary(module: str) -> str:
    """The first line of a module's docstring, read from its source without importing it: the modules pull in
    torch, pandas, nbformat and jsonschema, seconds of imports that ``--help`` does not need."""
    path = PACKAGE.joinpath(*module.split(".")[1:])
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    doc = ast.get_docstring(ast.parse(source.read_text(encoding="utf-8"))) or ""
    return doc.splitlines()[0] if doc else ""


def _chosen(argv: list[str]) -> tuple[str | None, str | None]:
    """The command (and bench) named on the command line, so that only its module is imported."""
    words = [a for a in argv if not a.startswith("-")]
    command = words[0] if words else None
    bench = words[1] if command == "bench" and len(words) > 1 else None
    return command, bench


def _add(subparsers, name: str, module: str, load: bool) -> None:
    sub = subparsers.add_parser(name, help=summary(module))
    if load:  # only the command that runs imports its module and declares its arguments
        mod = importlib.import_module(module)
        mod.add_arguments(sub)
        sub.set_defaults(run=mod.run)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the named command's module is imported (None: every module)."""
    command, bench_name = _chosen(argv) if argv is not None else (None, None)
    everything = argv is None
    parser = argparse.ArgumentParser(prog="qmlnb", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="run a benchmark and write its JSON")
    benches = bench.add_subparsers(dest="bench", required=True)
    for name, module in BENCHES.items():
        _add(benches, name, module, everything or (command == "bench" and bench_name == name))
    for name, module in COMMANDS.items():
        _add(commands, name, module, everything or command == name)
    return parser


def main(argv=None) -> int:
    import sys

    # what _util.skip_unused_schema_format does (importing _util would cost --help NumPy): the sweep and report
    # commands read notebooks, and jsonschema's unused "iri" parser took 2 to 5 s of each command's start
    sys.modules.setdefault("rfc3987_syntax", None)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    return int(args.run(args) or 0)
