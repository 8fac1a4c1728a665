"""The one papermill command line the lab runs notebooks with (a sweep's points, the summary report).

Papermill runs as a child process (``python -m papermill``), not in this
process: each run gets a fresh kernel, can be stopped with its whole process
group, and a crash in it never takes the sweep or the report command down.
"""
from __future__ import annotations

import json
import os
import sys

from .._util import check_positive_int


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
    cmd = [sys.executable, "-m", "papermill", str(notebook), str(output), "--cwd", str(cwd),
           "--kernel", "python3", "--no-progress-bar", "-y", json.dumps(parameters)]
    if timeout is not None:
        cmd += ["--execution-timeout", str(check_positive_int(timeout, "timeout"))]
    return cmd
