"""``python -m qmlnb``: benchmarks, sweeps and reports from the command line."""
from __future__ import annotations

import argparse
import importlib

# subcommand -> module with add_arguments(parser) and run(args) -> int
BENCHES = {
    "gram": "qmlnb.bench.gram",
    "gpu": "qmlnb.bench.gpu_baseline",
    "qsvm": "qmlnb.bench.qsvm",
    "qcnn": "qmlnb.bench.qcnn",
    "scale": "qmlnb.bench.scale",
    "mps": "qmlnb.bench.mps",
    "feature-maps": "qmlnb.bench.feature_maps",
}
COMMANDS = {
    "sweep": "qmlnb.lab.flow",  # qmlnb.lab.sweep's command, stages in dependency order
    "report": "qmlnb.lab.report",
    "track": "qmlnb.lab.track",
    "download": "qmlnb.data.download",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qmlnb", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="run a benchmark and write its JSON")
    benches = bench.add_subparsers(dest="bench", required=True)
    for name, module in BENCHES.items():
        mod = importlib.import_module(module)
        sub = benches.add_parser(name, help=mod.__doc__.splitlines()[0])
        mod.add_arguments(sub)
        sub.set_defaults(run=mod.run)
    for name, module in COMMANDS.items():
        mod = importlib.import_module(module)
        sub = commands.add_parser(name, help=mod.__doc__.splitlines()[0])
        mod.add_arguments(sub)
        sub.set_defaults(run=mod.run)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)
