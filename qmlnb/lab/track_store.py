"""What a run folder holds for a tracker, and where it goes: the record read from the folder, the stores'
locations (:mod:`.track_sinks` writes into them).  :mod:`.track` logs runs through them
(``tracker.json``, locks, retries, the command line); see its docstring for the mapping of a run to each tracker.
"""
from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import threading
from pathlib import Path

from .._util import check_option
from . import runs

TRACKERS = ("mlflow", "wandb")
TRACKER_FILE = "tracker.json"
INSTALL_HINT = 'pip install -e ".[track]"'
WANDB_PROJECT = "qmlnb"
LOGGED, ALREADY_LOGGED, FAILED, BUSY = "logged", "already_logged", "failed", "busy"
MAX_ARTIFACT_BYTES = 200 * 2**20  # larger files (e.g. an out-of-core Gram) stay in the run folder only
MAX_TEXT = 5000  # characters of a param or tag value (MLflow's limits are 6000 and 8000)
# which files of a run folder are artifacts, and under which folder
ARTIFACT_FOLDERS = {".csv": "tables", ".parquet": "tables", ".png": "figures", ".svg": "figures",
                    ".pdf": "figures", ".jpg": "figures", ".jpeg": "figures", ".html": "figures",
                    ".ipynb": "notebook"}
RECORD_FILES = (runs.PARAMS_FILE, runs.METRICS_FILE, runs.STATUS_FILE)  # -> artifacts under run/
IMAGE_OUTPUTS = {"image/png": ".png", "image/svg+xml": ".svg", "image/jpeg": ".jpg"}
# one run at a time per process: wandb keeps one global run and service, and a sweep's threads share them
_LOG_LOCK = threading.Lock()


class TrackerUnavailable(ImportError):
    """The tracker's package is not installed (the message names the install command)."""


# ------------------------------------------------------------------ what a run folder holds
@dataclasses.dataclass
class RunRecord:
    """One run folder, read into what every tracker logs (strings and plain numbers only).

    ``metrics``: {dotted key: float} of every number in ``metrics.json`` except the
    environment; ``info``: {dotted key: str} of its text, booleans and lists;
    ``env``: {dotted key: str} of the environment record; ``files``: [(path,
    artifact folder)] of the folder's tables, figures, notebook and records;
    ``figures``: [(file name, bytes)] of the image outputs of the executed notebook.
    """

    run_dir: Path
    grid: str
    name: str
    fingerprint: str
    params: dict
    metrics: dict
    info: dict
    env: dict
    environment: dict
    status: dict
    files: list
    figures: list
    skipped_files: list

    @property
    def key(self) -> str:
        """``<grid>/<run>``: the run's name in every tracker."""
        return f"{self.grid}/{self.name}"

    def timestamp_ms(self) -> int:
        """When the run ended (its status, else its environment record, else now), in ms since the epoch."""
        for text in (self.status.get("time"), self.environment.get("timestamp")):
            with contextlib.suppress(TypeError, ValueError):
                return int(_dt.datetime.fromisoformat(text).timestamp() * 1000)
        return int(_dt.datetime.now(_dt.timezone.utc).timestamp() * 1000)


def flatten(value, prefix: str = "") -> dict:
    """{dotted key: leaf} of nested dicts (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``); lists are leaves."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _text(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 15] + "...(truncated)"


def _number(value) -> float | None:
    """``value`` as a float when it is a real number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def fingerprint(run_dir: str | os.PathLike) -> str:
    """SHA-256 of the run's ``params.json`` and ``metrics.json``: changes when the run is redone."""
    digest = hashlib.sha256()
    for name in (runs.PARAMS_FILE, runs.METRICS_FILE):
        path = Path(run_dir) / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"") + b"\0")
    return digest.hexdigest()


def _notebook_figures(notebook: Path) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image output of an executed notebook: ``<stem>-cell<NN>-<k>.<ext>``."""
    import nbformat

    try:
        nb = nbformat.read(notebook, as_version=4)
    except Exception:  # noqa: BLE001 - an unreadable notebook still goes in as a file; it has no figures
        return []
    out = []
    for index, cell in enumerate(nb.cells):
        k = 0
        for output in cell.get("outputs", []):
            for mime, ext in IMAGE_OUTPUTS.items():
                data = output.get("data", {}).get(mime)
                if data is None:
                    continue
                text = "".join(data) if isinstance(data, list) else data
                blob = text.encode() if mime == "image/svg+xml" else base64.b64decode(text)
                out.append((f"{notebook.stem}-cell{index:02d}-{k}{ext}", blob))
                k += 1
    return out


def read_run(run_dir: str | os.PathLike) -> RunRecord:
    """Read a run folder (``metrics.json`` required, the rest when present) into a :class:`RunRecord`.

    Raises ValueError naming the file when ``metrics.json`` is absent or is not
    a JSON object, or ``params.json`` is not one, or either is a symlink (not
    followed; :func:`qmlnb.lab.runs.read_record`).
    """
    run_dir = Path(run_dir).resolve()
    metrics_path = run_dir / runs.METRICS_FILE
    try:  # never through a symlink: a linked metrics.json would log another file's content as tags
        metrics = runs.read_record(metrics_path)
        params = runs.read_record(run_dir / runs.PARAMS_FILE)
    except ValueError as err:
        raise ValueError(f"run_dir {run_dir}: unreadable ({err})") from err
    if not isinstance(metrics, dict):
        raise ValueError(f"run_dir {run_dir}: {metrics_path.name} is missing or not a JSON object; "
                         "only folders written by the lab (tasks.save_run) can be tracked")
    if params is not None and not isinstance(params, dict):
        raise ValueError(f"run_dir {run_dir}: {runs.PARAMS_FILE} is not a JSON object")
    metrics = dict(metrics)
    environment = metrics.pop("environment", None) or {}
    numbers, info = {}, {}
    for key, value in flatten(metrics).items():
        number = _number(value)
        if number is not None:
            numbers[key] = number
        elif value is not None:
            info[key] = _text(value)
    env = {key: _text(value) for key, value in flatten(environment).items() if value is not None}
    files, figures, skipped = [], [], []
    for path in sorted(p for p in run_dir.iterdir() if p.is_file() and not p.is_symlink()):
        folder = "run" if path.name in RECORD_FILES else ARTIFACT_FOLDERS.get(path.suffix.lower())
        if folder is None or path.name.startswith("."):  # the lock, a notebook still being written, ...
            continue
        if path.stat().st_size > MAX_ARTIFACT_BYTES:
            skipped.append(path.name)
            continue
        files.append((path, folder))
        if path.suffix == ".ipynb":
            figures += _notebook_figures(path)
    return RunRecord(run_dir=run_dir, grid=run_dir.parent.name, name=run_dir.name, fingerprint=fingerprint(run_dir),
                     params=params or {}, metrics=numbers, info=info, env=env, environment=environment,
                     status=runs.read_status(run_dir) or {}, files=files, figures=figures, skipped_files=skipped)


# ------------------------------------------------------------------ where the stores are
def default_store(to: str, run_dir: str | os.PathLike | None = None) -> Path:
    """The store of tracker ``to`` for runs under ``run_dir`` (default: the current folder).

    MLflow: ``<project>/mlruns``; W&B: ``<project>`` (wandb writes ``<project>/wandb/``).
    ``<project>`` is the nearest folder above holding ``pyproject.toml``, else the
    folder holding the runs folder (``run_dir/../..``) -- never a run folder itself.
    """
    check_tracker_name(to)
    start = Path(run_dir or Path.cwd()).resolve()
    root = next((p for p in (start, *start.parents) if (p / "pyproject.toml").is_file()), None)
    if root is None:
        root = start.parents[2] if run_dir is not None and len(start.parents) > 2 else start
    return root / "mlruns" if to == "mlflow" else root


def store_location(to: str, store: str | os.PathLike | None, run_dir: str | os.PathLike | None = None) -> str:
    """``store`` as recorded in ``tracker.json``: an absolute folder (or an MLflow URI); default :func:`default_store`."""
    if store is None:
        return str(default_store(to, run_dir))
    return str(store) if to == "mlflow" and "://" in str(store) else str(Path(store).resolve())


def check_tracker_name(to) -> str:
    return check_option(to, "to", TRACKERS)


def require(to: str):
    """Import and return the tracker's module; :class:`TrackerUnavailable` naming the extra when it is absent."""
    check_tracker_name(to)
    try:
        if to == "mlflow":
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow >= 3.7 refuses file stores without it
            import mlflow
            return mlflow
        import wandb
        return wandb
    except ImportError as err:
        raise TrackerUnavailable(f"the {to} tracker needs the optional packages of qmlnb's 'track' extra: "
                                 f"{INSTALL_HINT} ({err})") from err
