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
#: The experiment tag the MLflow 3 UI reads for an experiment's kind. Without it the UI guesses
#: from the runs and traces and asks the user to confirm its guess.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: The UI's query parameter for its sidebar view; without it the browser's last choice holds,
#: and a new browser opens in the GenAI view (traces, sessions), not in model training (runs).
WORKFLOW_PARAM = "workflowType"
WORKFLOW = "machine_learning"
#: Where ``tm23-sweep ui`` serves a local (sqlite) store unless told otherwise.
UI_HOST = "127.0.0.1"
UI_PORT = 5000

# MLflow's HTTP client retries for minutes by default; the queue below does the waiting,
# so a trial is never blocked long on a tracking server that is down.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

_CLIENTS: dict[str, Any] = {}


def tracking_uri(runs_root: str | Path) -> str:
    """``$MLFLOW_TRACKING_URI``, else ``sqlite:///<runs root>/mlruns.db`` (the single-machine default)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return check_tracking_uri(env, "MLFLOW_TRACKING_URI")
    return f"sqlite:///{Path(runs_root).absolute() / DB_FILE}"


def is_server(uri: str) -> bool:
    """Whether ``uri`` names a tracking server (every node can reach it) rather than a local store."""
    return uri.startswith(("http://", "https://"))


def redact_uri(uri: str) -> str:
    """``uri`` without any user or password it carries (for files and pages that others may read)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if not (parts.username or parts.password):
        return uri
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_reachable(uri: str, timeout_s: float = 10.0) -> None:
    """A tracking server must answer ``/health`` before a sweep starts (one-line error otherwise)."""
    import urllib.error
    import urllib.request

    from sweep.errors import InputError

    if not is_server(uri):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return  # it answers; whether our credentials work shows at the first call
        reason = f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise InputError("MLFLOW_TRACKING_URI", "tracking URI", f"{redact_uri(uri)} does not answer ({reason}); start "
                                                            "the server or unset it to use the local sqlite store")


def check_tracking_uri(uri: str, source: str = "tracking URI") -> str:
    """``uri``, unless it carries credentials (they would be written with the sweep): then a one-line error."""
    from urllib.parse import urlsplit

    from sweep.errors import InputError

    if is_server(uri) and (urlsplit(uri).password or urlsplit(uri).username):
        raise InputError(source, "tracking URI", "credentials in the URI would be saved with the sweep; "
                                                 "put them in ~/.mlflow/credentials (mode 600) or in "
                                                 "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD instead")
    return uri


def client(uri: str):
    """A cached :class:`mlflow.tracking.MlflowClient` for ``uri`` (one per process)."""
    if uri not in _CLIENTS:
        from mlflow.tracking import MlflowClient

        _CLIENTS[uri] = MlflowClient(tracking_uri=uri)
    return _CLIENTS[uri]


def ensure_experiment(uri: str, name: str, artifact_root: str | Path) -> str:
    """The id of experiment ``name``, created if new.

    With a local store (sqlite) the artifacts go under ``artifact_root``; with a tracking
    server they go where the server puts them (``mlflow-artifacts:/``, proxied by the server
    with ``--serve-artifacts``), so that runs logged on any node keep their artifacts on the
    server, never on the logging node's disk.

    Every sweep experiment carries ``mlflow.experimentKind = custom_model_development``, so
    the UI opens it as model training without asking; an existing experiment without that
    tag (or with only the UI's own guess, ``*_inferred``) gets it, another kind is left alone.
    """
    c = client(uri)
    found = c.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            c.restore_experiment(found.experiment_id)
        kind = found.tags.get(EXPERIMENT_KIND_TAG, "")
        if not kind or kind.endswith("_inferred"):
            c.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return found.experiment_id
    tags = {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    if is_server(uri):
        return c.create_experiment(name, tags=tags)
    location = Path(artifact_root).absolute() / name
    return c.create_experiment(name, artifact_location=location.as_uri(), tags=tags)


def ui_link(uri: str, experiment_id: str | None = None, run_id: str | None = None,
            host: str = UI_HOST, port: int = UI_PORT) -> str:
    """The MLflow UI address of the store ``uri`` (its experiment list, an experiment, or a run), in the
    model-training view (``?workflowType=machine_learning``).

    A tracking server serves its own UI (the link is the server's address, without credentials);
    a local store is served by ``tm23-sweep ui`` on ``host:port`` (a wildcard bind is reached
    on 127.0.0.1). The UI routes after ``#``, so the query goes after the route.
    """
    from urllib.parse import urlencode

    if is_server(uri):
        base = redact_uri(uri).rstrip("/")
    else:
        shown = UI_HOST if host in ("0.0.0.0", "::", "") else host
        base = f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"
    route = "/#/experiments"
    if experiment_id is not None:
        route += f"/{experiment_id}"
        if run_id is not None:
            route += f"/runs/{run_id}"
    return f"{base}{route}?{urlencode({WORKFLOW_PARAM: WORKFLOW})}"


def experiment_ids(uri: str, names: list[str] | tuple[str, ...], timeout_s: float = 2.0) -> dict[str, str]:
    """The ids of those experiments ``names`` that the store ``uri`` holds, for links.

    Never creates a store (MLflow would make an empty database at a missing sqlite path) and
    gives up on a server that does not answer ``/health`` within ``timeout_s``: a link
    without an experiment beats a status line that waits for a down server.
    """
    import urllib.error
    import urllib.request

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return {}
    if is_server(uri):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
                pass
        except urllib.error.HTTPError:
            pass  # it answers (perhaps asking for credentials the client has)
        except (OSError, ValueError):
            return {}
    found = {}
    for name in names:
        experiment = client(uri).get_experiment_by_name(name)
        if experiment is not None:
            found[name] = experiment.experiment_id
    return found


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
        #: The run stays open once its queue is sent (a trial Tune ended; the driver decides its end).
        self.leave_open = False

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

    def close(self, status: str | None = "FINISHED", retry_s: float = 60.0) -> bool:
        """End the run with ``status`` (None: send what is queued and leave the run open); retry until
        ``retry_s`` passes, then save what is left.

        Returns True when everything reached MLflow.
        """
        self.leave_open = status is None
        if status is not None:
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
        atomic_write_json(self.pending_file, {  # the owner's only: it names the server and the run
            "uri": self.uri, "experiment_id": self.experiment_id, "tags": self.tags,
            "run_name": self.run_name, "key_metric": self.key_metric, "ops": self._queue,
            "leave_open": self.leave_open,
        }, mode=0o600)
        log.warning("MLflow unreachable: %d operations saved to %s", len(self._queue), self.pending_file)


def read_pending(path: Path) -> dict[str, Any]:
    """A saved ``mlflow_pending.json``; a damaged one is a one-line :class:`InputError` naming it."""
    from sweep.errors import InputError

    try:
        saved = json.loads(Path(path).read_text())
        if not isinstance(saved, dict) or not isinstance(saved["ops"], list) or "config_hash" not in saved["tags"]:
            raise ValueError("missing ops or tags")
        for key in ("uri", "experiment_id", "run_name"):
            saved[key]  # noqa: B018 (presence check)
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(path, PENDING_FILE, f"unreadable ({exc}); the MLflow operations it held are lost: move "
                                             "it away to go on") from None
    return saved


def flush_pending(work_root: str | Path, retry_s: float = 10.0) -> tuple[int, int]:
    """Replay every ``mlflow_pending.json`` under ``work_root``; returns (flushed, still pending)."""
    flushed = left = 0
    for path in sorted(Path(work_root).glob(f"*/{PENDING_FILE}")):
        saved = read_pending(path)
        run = TrialRun(saved["uri"], saved["experiment_id"], saved["tags"], saved["run_name"],
                       saved.get("key_metric", "val_forces_mae"), pending_file=path)
        run._queue = list(saved["ops"])
        terminal = run._queue.pop() if run._queue and run._queue[-1]["op"] == "terminate" else None
        status = terminal["status"] if terminal else (None if saved.get("leave_open") else "FINISHED")
        if run.close(status, retry_s=retry_s):
            flushed += 1
        else:
            left += 1
    return flushed, left


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:6000]
