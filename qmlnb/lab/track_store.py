"""What a run folder holds for a tracker, and where it goes: the record read from the folder, the stores'
locations, and the MLflow and Weights & Biases sinks (both offline).  :mod:`.track` logs runs through them
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
import re
import shutil
import struct
import tempfile
import threading
from pathlib import Path
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
    if to not in TRACKERS:
        raise ValueError(f"to must be one of {', '.join(TRACKERS)}, got {to!r}")
    return to


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


# ------------------------------------------------------------------ MLflow
class MlflowSink:
    """Logs run records into an MLflow tracking store (a local file store by default)."""

    def __init__(self, store: str | os.PathLike):
        mlflow = require("mlflow")
        self.store = str(store) if "://" in str(store) else Path(store).resolve().as_uri()
        self.client = mlflow.tracking.MlflowClient(tracking_uri=self.store)
        self.entities = mlflow.entities

    def _experiment(self, grid: str) -> str:
        exp = self.client.get_experiment_by_name(grid)
        if exp is not None and exp.lifecycle_stage == "deleted":
            self.client.restore_experiment(exp.experiment_id)
        return exp.experiment_id if exp is not None else self.client.create_experiment(grid)

    def _matches(self, rec: RunRecord) -> list:
        exp = self.client.get_experiment_by_name(rec.grid)
        if exp is None:
            return []
        # the fingerprint is hex, safe in a filter string; the run key (any folder name) is compared here
        query = f"tags.`qmlnb.fingerprint` = '{rec.fingerprint}'"
        found = self.client.search_runs([exp.experiment_id], filter_string=query, max_results=1000)
        return [run for run in found if run.data.tags.get("qmlnb.run_key") == rec.key]

    def find(self, rec: RunRecord) -> str | None:
        """The id of a finished run of ``rec`` in the store; unfinished ones (a crash mid-logging) are deleted."""
        found = None
        for run in self._matches(rec):
            if run.info.status == "FINISHED" and found is None:
                found = run.info.run_id
            elif run.info.status != "FINISHED":
                self.client.delete_run(run.info.run_id)
        return found

    def log(self, rec: RunRecord) -> str:
        E, end = self.entities, rec.timestamp_ms()
        seconds = _number(rec.status.get("seconds"))
        start = end - int(seconds * 1000) if seconds is not None else end
        tags = {"qmlnb.run_key": rec.key, "qmlnb.fingerprint": rec.fingerprint, "qmlnb.run_dir": str(rec.run_dir),
                "qmlnb.status": str(rec.status.get("status", "")),
                **{f"env.{k}": v for k, v in rec.env.items()}, **{f"info.{k}": v for k, v in rec.info.items()}}
        if rec.env.get("git.commit"):
            tags["mlflow.source.git.commit"] = rec.env["git.commit"]
        if rec.status.get("notebook_path"):
            tags["mlflow.source.name"] = str(rec.status["notebook_path"])
        run = self.client.create_run(self._experiment(rec.grid), start_time=start, run_name=rec.name,
                                     tags={_mlflow_key(k): _text(v) for k, v in tags.items()})
        run_id = run.info.run_id
        try:
            params = [E.Param(_mlflow_key(k), _text(v)) for k, v in flatten(rec.params).items()]
            metrics = [E.Metric(_mlflow_key(k), v, end, 0) for k, v in rec.metrics.items()]
            for i in range(0, max(len(params), len(metrics)), 100):  # MLflow takes at most 100 params a batch
                self.client.log_batch(run_id, metrics=metrics[i:i + 100], params=params[i:i + 100])
            for path, folder in rec.files:
                self.client.log_artifact(run_id, str(path), folder)
            if rec.figures:
                with tempfile.TemporaryDirectory() as tmp:
                    for name, blob in rec.figures:
                        (Path(tmp) / name).write_bytes(blob)
                    self.client.log_artifacts(run_id, tmp, "figures")
        except BaseException:
            with contextlib.suppress(Exception):  # the first error is the one to report; find() deletes this run
                self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id, status="FINISHED", end_time=max(end, start))
        return run_id

    def close(self) -> None:
        pass


def _mlflow_key(key: str) -> str:
    """A param, metric or tag name MLflow accepts (letters, digits, ``_-. /``; at most 250 characters)."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)[:250]


# ------------------------------------------------------------------ Weights & Biases (offline)
WANDB_DIR_ENV = {"WANDB_DATA_DIR": ".data", "WANDB_CACHE_DIR": ".cache", "WANDB_CONFIG_DIR": ".config"}


def wandb_run_id(rec: RunRecord) -> str:
    """The W&B run id of ``rec``: the same run folder and content always get the same id (no duplicates on sync)."""
    return hashlib.sha256(f"{rec.key}\0{rec.fingerprint}".encode()).hexdigest()[:24]


def read_wandb_records(path: str | os.PathLike) -> list:
    """The protobuf records (``wandb_internal_pb2.Record``) of an offline run file ``run-<id>.wandb``.

    The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version),
    then 32 KiB blocks of chunks, each with a 7-byte header (CRC32, length, type:
    1 full, 2 first, 3 middle, 4 last).  Used to find runs already logged and to
    read a run back in tests; a truncated tail (a crash mid-write) is ignored.
    """
    from wandb.proto import wandb_internal_pb2

    data, block, out, pending = Path(path).read_bytes(), 32768, [], b""
    if data[:4] != b":W&B":
        raise ValueError(f"path {path} is not a W&B run file (no ':W&B' header)")
    pos = 7
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # too little room for a chunk header: the writer padded to the next block
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0 or pos + 7 + length > len(data):
            break
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


class WandbSink:
    """Logs run records as offline W&B runs under ``<store>/wandb/`` (``wandb sync`` uploads them later)."""

    def __init__(self, store: str | os.PathLike, project: str = WANDB_PROJECT):
        self.wandb = require("wandb")
        self.store = Path(store).resolve()
        self.root = self.store / "wandb"
        self.project = project

    def _offline_dirs(self, run_id: str) -> list[Path]:
        return sorted(self.root.glob(f"offline-run-*-{run_id}")) if self.root.is_dir() else []

    def find(self, rec: RunRecord) -> str | None:
        """The run id when a finished offline run of ``rec`` exists; unfinished ones (a crash) are removed."""
        run_id, found = wandb_run_id(rec), None
        for folder in self._offline_dirs(run_id):
            finished = False
            with contextlib.suppress(OSError, ValueError):
                records = read_wandb_records(folder / f"run-{run_id}.wandb")
                finished = any(r.WhichOneof("record_type") == "exit" for r in records)
            if finished:
                found = run_id
            else:
                shutil.rmtree(runs.inside(folder, self.root))
        return found

    @contextlib.contextmanager
    def _environment(self):
        """wandb's staging, cache and config folders under ``<store>/wandb/`` (unless set), while logging.

        Only these: offline and silent are the run's settings, so a papermill kernel a sweep starts
        meanwhile (it copies this process's environment) is not made offline.
        """
        wanted = {var: str(self.root / sub) for var, sub in WANDB_DIR_ENV.items() if var not in os.environ}
        before = {var: os.environ.get(var) for var in wanted}
        os.environ.update(wanted)
        try:
            yield
        finally:
            for var, value in before.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value

    def log(self, rec: RunRecord) -> str:
        wandb, run_id = self.wandb, wandb_run_id(rec)
        self.root.mkdir(parents=True, exist_ok=True)
        wanted = {"silent": True, "console": "off", "disable_git": True, "save_code": False,
                  "x_disable_stats": True, "x_disable_machine_info": True}  # no system monitor: nothing to sample
        fields = getattr(wandb.Settings, "model_fields", None) or wanted
        settings = wandb.Settings(**{k: v for k, v in wanted.items() if k in fields})
        tags = [f"commit:{rec.env['git.commit'][:12]}"] if rec.env.get("git.commit") else []
        tags += [f"host:{rec.env['machine.hostname']}"[:64]] if rec.env.get("machine.hostname") else []
        config = {**rec.params, "qmlnb": {"run_key": rec.key, "fingerprint": rec.fingerprint,
                                          "run_dir": str(rec.run_dir), "status": rec.status.get("status"),
                                          "time": rec.status.get("time"), "environment": rec.environment}}
        with self._environment():
            # reinit="create_new": a run of the notebook's own (wandb.run) is left alone, never logged into
            run = wandb.init(project=self.project, group=rec.grid, name=rec.name, id=run_id, dir=str(self.store),
                             mode="offline", config=config, tags=tags, job_type="qmlnb-run", settings=settings,
                             reinit="create_new")
            try:
                run.summary.update({**rec.info, **rec.metrics})
                artifact = wandb.Artifact(_wandb_artifact_name(rec, run_id), type="qmlnb-run",
                                          metadata={"run_key": rec.key, "fingerprint": rec.fingerprint})
                for path, folder in rec.files:
                    artifact.add_file(str(path), name=f"{folder}/{path.name}")
                for name, blob in rec.figures:
                    with artifact.new_file(f"figures/{name}", mode="wb") as handle:
                        handle.write(blob)
                run.log_artifact(artifact)
            except BaseException:
                run.finish(exit_code=1)
                raise
            run.finish()
        return run_id

    def close(self) -> None:
        """Stop wandb's service process, so none outlives the logging (unless the caller has a run of its own)."""
        if getattr(self.wandb, "run", None) is None:
            with contextlib.suppress(Exception):
                self.wandb.teardown()


def _wandb_artifact_name(rec: RunRecord, run_id: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{rec.grid}-{rec.name}")
    return name if len(name) <= 120 else f"{name[:95]}-{run_id}"


def open_sink(to: str, store: str | os.PathLike):
    """The sink of tracker ``to`` writing into ``store`` (see :func:`default_store`)."""
    return MlflowSink(store) if check_tracker_name(to) == "mlflow" else WandbSink(store)
