"""MLflow tracking for sweeps: one experiment per sweep, exactly one run per configuration.

Ray's ``MLflowLoggerCallback`` opens a new run whenever Tune restores a trial (measured:
9 runs for 6 trials after one restore, one left RUNNING). Trials therefore log from the
inside with :class:`TrialRun`: it looks the run up by the ``config_hash`` tag within
the sweep's experiment, re-attaches to it when it exists and creates it only when it
does not, and ends it ``FINISHED``.

Every call is queued and sent in order. When the tracking store cannot be reached (a
restarting server, a locked sqlite file) the queue keeps the operations and retries on
the next call; :meth:`TrialRun.close` retries until a deadline and then saves what is
left to ``mlflow_pending.json`` beside the trial's work, which :func:`flush_pending`
replays later (the driver calls it when a sweep starts and ends). No metric is lost.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

from sweep.io import atomic_write_json

log = logging.getLogger(__name__)

DB_FILE = "mlruns.db"
ARTIFACTS_DIR = "mlartifacts"
PENDING_FILE = "mlflow_pending.json"
#: Tags every trial run carries (the issue's contract with the MLflow UI and tests).
RUN_TAGS = ("sweep", "model", "element", "task", "trial_id", "config_hash")

# MLflow's HTTP client retries for minutes by default; the queue below does the waiting,
# so a trial is never blocked long on a tracking server that is down.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

_CLIENTS: dict[str, Any] = {}


def tracking_uri(runs_root: str | Path) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///<runs root>/mlruns.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(runs_root).absolute() / DB_FILE}"


def client(uri: str):
    """A cached :class:`mlflow.tracking.MlflowClient` for ``uri`` (one per process)."""
    if uri not in _CLIENTS:
        from mlflow.tracking import MlflowClient

        _CLIENTS[uri] = MlflowClient(tracking_uri=uri)
    return _CLIENTS[uri]


def ensure_experiment(uri: str, name: str, artifact_root: str | Path) -> str:
    """The id of experiment ``name``, created with artifacts under ``artifact_root`` if new."""
    c = client(uri)
    found = c.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            c.restore_experiment(found.experiment_id)
        return found.experiment_id
    location = Path(artifact_root).absolute() / name
    return c.create_experiment(name, artifact_location=location.as_uri())


def find_runs(uri: str, experiment_id: str, config_hash: str | None = None) -> list:
    """Runs of the experiment, optionally only those tagged with ``config_hash``; oldest first."""
    query = f"tags.config_hash = '{config_hash}'" if config_hash else ""
    runs = client(uri).search_runs([experiment_id], filter_string=query, max_results=50_000,
                                   order_by=["attributes.start_time ASC"])
    return list(runs)


class TrialRun:
    """The MLflow run of one configuration, with a retrying queue in front of it.

    ``tags`` must include ``config_hash``. Operations are applied in order; a failure
    leaves them queued. ``key_metric`` names the metric whose logged history tells a
    re-attached run which steps are already there (those are not logged twice).
    """

    def __init__(self, uri: str, experiment_id: str, tags: Mapping[str, str], run_name: str,
                 key_metric: str = "val_forces_mae", pending_file: Path | None = None):
        self.uri = uri
        self.experiment_id = experiment_id
        self.tags = {k: str(v) for k, v in tags.items()}
        self.run_name = run_name
        self.key_metric = key_metric
        self.pending_file = pending_file
        self.run_id: str | None = None
        self.reattached = False
        self.was_finished = False
        self.logged_upto: int = -1
        #: (metric, step) pairs sent or queued by this object, and those a re-attached run had
        self._logged: set[tuple[str, int]] = set()
        self._history: dict[str, set[int]] = {}
        self._queue: list[dict[str, Any]] = []
        self.failures = 0
        self._streak = 0
        self._next_try = 0.0

    # -- public, all queued ------------------------------------------------------------
    def start(self) -> "TrialRun":
        """Find or create the run (retried later if the store is down)."""
        self._drain(force=True)
        return self

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log hyperparameters (values as text; logging the same value again is harmless)."""
        items = {k: _param_text(v) for k, v in params.items()}
        self._push({"op": "params", "params": items})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the run."""
        self._push({"op": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log numeric metrics at ``step``, each (metric, step) once.

        The final metrics repeat the last report's validation errors, and a trial resumed after
        a kill logs its final metrics again: a value the run already has at ``step`` is skipped.
        """
        values = {k: float(v) for k, v in metrics.items()
                  if _is_number(v) and (k, int(step)) not in self._logged and not self._run_has(k, int(step))}
        self._logged.update((k, int(step)) for k in values)
        if values:
            self._push({"op": "metrics", "metrics": values, "step": int(step),
                        "timestamp": int(time.time() * 1000)})

    def _run_has(self, key: str, step: int) -> bool:
        """Whether a re-attached run already holds ``key`` at ``step`` (one history read per key)."""
        if not self.reattached or self.run_id is None:
            return False
        if key not in self._history:
            try:
                self._history[key] = {m.step for m in client(self.uri).get_metric_history(self.run_id, key)}
            except Exception:  # store down: log it (at worst a value twice at one step)
                return False
        return step in self._history[key]

    def log_step(self, step: int, metrics: Mapping[str, float]) -> None:
        """A per-epoch (or per-frames-added) report; steps a re-attached run already has are skipped."""
        if step <= self.logged_upto:
            return
        self.log_metrics(metrics, step)

    def log_artifacts(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file or folder into the run's artifacts."""
        self._push({"op": "artifacts", "path": str(local_path), "artifact_path": artifact_path})

    def close(self, status: str = "FINISHED", retry_s: float = 60.0) -> bool:
        """End the run with ``status``; retry until ``retry_s`` passes, then save what is left.

        Returns True when everything reached MLflow.
        """
        self._queue.append({"op": "terminate", "status": status})
        self._drain(force=True)
        deadline = time.monotonic() + retry_s
        delay = 0.5
        while self._queue and time.monotonic() < deadline:
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 10.0)
            self._drain(force=True)
        if self._queue:
            self._save_pending()
            return False
        if self.pending_file is not None and self.pending_file.exists():
            self.pending_file.unlink()
        return True

    @property
    def pending(self) -> int:
        """Operations not yet in MLflow."""
        return len(self._queue)

    # -- internals -----------------------------------------------------------------------
    def _push(self, op: dict[str, Any]) -> None:
        self._queue.append(op)
        self._drain()

    def _drain(self, force: bool = False) -> None:
        # after a failure, wait (1 s, 2 s, ... 30 s) before the next try, so that a trial
        # reporting every epoch is not held up by every report while the store is down
        if not force and time.monotonic() < self._next_try:
            return
        try:
            if self.run_id is None:
                self._attach()
            while self._queue:
                self._apply(self._queue[0])
                self._queue.pop(0)
            self._streak = 0
        except Exception as exc:  # unreachable or locked store: keep the queue, try later
            self.failures += 1
            self._streak += 1
            self._next_try = time.monotonic() + min(30.0, 2.0 ** (self._streak - 1))
            if self.failures in (1, 10, 100):
                log.warning("MLflow not reachable (%s); %d operations queued", type(exc).__name__, len(self._queue))

    def _attach(self) -> None:
        c = client(self.uri)
        runs = find_runs(self.uri, self.experiment_id, self.tags["config_hash"])
        if runs:
            run = runs[0]
            self.run_id = run.info.run_id
            self.reattached = True
            self.was_finished = run.info.status == "FINISHED"
            history = c.get_metric_history(self.run_id, self.key_metric)
            self.logged_upto = max((m.step for m in history), default=-1)
            if not self.was_finished:
                c.update_run(self.run_id, status="RUNNING")
            c.set_tag(self.run_id, "trial_id", self.tags.get("trial_id", ""))
        else:
            run = c.create_run(self.experiment_id, tags=self.tags, run_name=self.run_name)
            self.run_id = run.info.run_id

    def _apply(self, op: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        c = client(self.uri)
        kind = op["op"]
        if kind == "params":
            items = [Param(k, v) for k, v in op["params"].items()]
            for i in range(0, len(items), 100):
                c.log_batch(self.run_id, params=items[i:i + 100])
        elif kind == "tags":
            c.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])
        elif kind == "metrics":
            c.log_batch(self.run_id, metrics=[Metric(k, v, op["timestamp"], op["step"])
                                              for k, v in op["metrics"].items()])
        elif kind == "artifacts":
            path = Path(op["path"])
            if path.is_dir():
                c.log_artifacts(self.run_id, str(path), op["artifact_path"])
            elif path.exists():
                c.log_artifact(self.run_id, str(path), op["artifact_path"])
        elif kind == "terminate":
            c.set_terminated(self.run_id, status=op["status"])

    def _save_pending(self) -> None:
        if self.pending_file is None:
            return
        atomic_write_json(self.pending_file, {
            "uri": self.uri, "experiment_id": self.experiment_id, "tags": self.tags,
            "run_name": self.run_name, "key_metric": self.key_metric, "ops": self._queue,
        })
        log.warning("MLflow unreachable: %d operations saved to %s", len(self._queue), self.pending_file)


def flush_pending(work_root: str | Path, retry_s: float = 10.0) -> tuple[int, int]:
    """Replay every ``mlflow_pending.json`` under ``work_root``; returns (flushed, still pending)."""
    flushed = left = 0
    for path in sorted(Path(work_root).glob(f"*/{PENDING_FILE}")):
        saved = json.loads(path.read_text())
        run = TrialRun(saved["uri"], saved["experiment_id"], saved["tags"], saved["run_name"],
                       saved.get("key_metric", "val_forces_mae"), pending_file=path)
        run._queue = list(saved["ops"])
        terminal = run._queue.pop() if run._queue and run._queue[-1]["op"] == "terminate" else None
        if run.close(terminal["status"] if terminal else "FINISHED", retry_s=retry_s):
            flushed += 1
        else:
            left += 1
    return flushed, left


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]
