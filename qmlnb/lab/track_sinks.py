"""The trackers' sinks: one run record (:class:`.track_store.RunRecord`) into MLflow's local file store or into an
offline Weights & Biases run; :func:`open_sink` opens the one a tracker name asks for.  :mod:`.track` decides
what to log and records it; see its docstring for the mapping of a run folder to each tracker.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path

from . import runs
from .track_store import WANDB_PROJECT, RunRecord, _number, _text, check_tracker_name, flatten, require


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
