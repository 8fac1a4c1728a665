"""The one papermill command line the lab runs notebooks with (a sweep's points, the summary report).

Papermill runs as a child process (``python -m qmlnb.lab.papermill_run``, which
calls :func:`papermill.execute_notebook`), not in this process: each run gets a
fresh kernel, can be stopped with its whole process group, and a crash in it
never takes the sweep or the report command down.

Once the last cell has run, the kernel is killed with its process group
(nbclient's ``shutdown_kernel="immediate"``) instead of asked to exit: a
kernel that has imported torch takes seconds to shut down politely (1.5 to 2.5 s
of a 7 s QCNN notebook run on 2 cores), a fixed cost paid by every run of a
sweep. Nothing is lost: every cell has finished, its files are written and
closed, and the notebook is written by papermill in this process; the
kernel's worker processes (fold-parallel pools, data-parallel groups) are in
its process group and go with it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from .._util import check_positive_int, skip_unused_schema_format


def papermill_command(notebook: str | os.PathLike, output: str | os.PathLike, *, cwd: str | os.PathLike,
                      parameters: dict, timeout: int | None = None) -> list[str]:
    """argv that executes ``notebook`` into ``output`` with ``parameters``, its kernel working in ``cwd``.

    Parameters
    ----------
    notebook, output : paths of the template and of the executed copy to write.
    cwd : the kernel's working directory.
    parameters : JSON-serialisable values injected after the ``parameters`` cell
        (passed as one JSON document with ``-y``, so types survive: ``1`` and ``1.0`` stay apart).
    timeout : seconds allowed per cell (None: papermill's default, no limit).

    Returns the list of str for :class:`subprocess.Popen`; the interpreter is this
    process's ``sys.executable``, so the kernel sees the same environment.
    """
    cmd = [sys.executable, "-m", "qmlnb.lab.papermill_run", str(notebook), str(output), "--cwd", str(cwd),
           "-y", json.dumps(parameters)]
    if timeout is not None:
        cmd += ["--execution-timeout", str(check_positive_int(timeout, "timeout"))]
    return cmd


def main(argv: list[str] | None = None) -> int:
    """Execute one notebook as :func:`papermill_command` says; a failing cell raises (exit status 1)."""
    parser = argparse.ArgumentParser(prog="python -m qmlnb.lab.papermill_run",
                                     description="execute a notebook with papermill, parameters as one JSON document")
    parser.add_argument("notebook")
    parser.add_argument("output")
    parser.add_argument("--cwd", required=True, help="the kernel's working directory")
    parser.add_argument("-y", dest="parameters", default="{}", help="the parameters, as a JSON object")
    parser.add_argument("--execution-timeout", type=int, default=None, help="seconds allowed per cell")
    args = parser.parse_args(argv)
    try:
        parameters = json.loads(args.parameters)
    except json.JSONDecodeError as err:  # a usage error, said in one line (argparse exits with status 2)
        parser.error(f"-y must be a JSON object, got {args.parameters!r} ({err})")
    if not isinstance(parameters, dict):
        parser.error(f"-y must be a JSON object, got {args.parameters!r}")

    skip_unused_schema_format()  # 2 to 5 s of every run's start
    import papermill

    papermill.execute_notebook(args.notebook, args.output, parameters=parameters, cwd=args.cwd,
                               kernel_name="python3", progress_bar=False, execution_timeout=args.execution_timeout,
                               shutdown_kernel="immediate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
