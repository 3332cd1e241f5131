"""A sweep's state and results, read from its storage root (and its tracking server): for notebooks and ``status``.

Everything here is read from what the sweep writes where every node reaches it, never
from a driver's memory, so it works while the sweep runs, after it ended or was killed,
and from any machine that mounts the storage root::

    from sweep import open_sweep
    s = open_sweep("demo-grid", runs_dir="demo-output/runs")
    s.trials()                      # one row per configuration (pandas)
    s.best("Cu", family)            # the best finished configuration of a group (family: its name)
    s.history("val_forces_mae")     # per-step curves, from MLflow
    s.status()                      # counts, best so far, compute spent, ETA, driver state

A configuration is *finished* or *stopped* (early, by the scheduler) once the ledger has its
record; *running* while a trial holds its lease; *failed* when its last trial ended with an
error; *interrupted* when it started and nobody works on it now (a killed driver or node);
*pending* when no trial of it has started yet (counted from the space; a search algorithm
draws its configurations as it goes).
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sweep.errors import InputError
from sweep.storage.lease import Lease
from sweep.tune.ledger import LEASE_NAME, WORK_DIR, Ledger, LedgerRecord, training_counts
from sweep.tune.processes import DRIVER_LEASE
from sweep.tune.runner import SPACE_COPY, SWEEP_FILE, SweepInfo, _read_info, runs_root
from sweep.tune.space import LoadedSpace, parse_space

#: Configuration states, in the order tables show them.
STATES = ("finished", "stopped", "running", "failed", "interrupted", "pending")


@dataclass
class GroupStatus:
    """One (model, element, task) group: its configurations by state and the best so far."""

    model: str
    element: str
    task: str
    total: int
    counts: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STATES})
    best_value: float | None = None
    best_config: dict[str, Any] | None = None
    best_hash: str | None = None


@dataclass
class SweepStatus:
    """Where a sweep stands: per-group counts, compute spent, an ETA, and whether a driver runs it."""

    name: str
    folder: Path
    space: str
    created: float
    metric: str
    mode: str
    driver: str  # "running", "finished", "interrupted" or "not started"
    driver_host: str | None
    groups: list[GroupStatus]
    compute_s: float
    eta_s: float | None
    resume_command: str | None

    @property
    def counts(self) -> dict[str, int]:
        """Configurations by state over the whole sweep."""
        return {s: sum(g.counts[s] for g in self.groups) for s in STATES}

    @property
    def total(self) -> int:
        """Configurations the space defines."""
        return sum(g.total for g in self.groups)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready description (``status --json``)."""
        return {"name": self.name, "folder": str(self.folder), "space": self.space, "created": self.created,
                "metric": self.metric, "mode": self.mode, "driver": self.driver, "driver_host": self.driver_host,
                "total": self.total, "counts": self.counts, "compute_s": self.compute_s, "eta_s": self.eta_s,
                "resume_command": self.resume_command,
                "groups": [{"model": g.model, "element": g.element, "task": g.task, "total": g.total,
                            "counts": g.counts, "best": g.best_value, "best_config": g.best_config,
                            "best_config_hash": g.best_hash} for g in self.groups]}


class Sweep:
    """One sweep folder under a storage root (see the module docs)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        info_path = self.folder / SWEEP_FILE
        if not info_path.is_file():
            raise InputError(self.folder, "name", "not a sweep folder (no sweep.json)")
        self.info: SweepInfo = _read_info(info_path)
        self.space: LoadedSpace = parse_space((self.folder / SPACE_COPY).read_text(), str(self.folder / SPACE_COPY))
        self.ledger = Ledger(self.folder)

    @property
    def name(self) -> str:
        """The sweep's name (its MLflow experiment)."""
        return self.info.name

    @property
    def metric(self) -> str:
        """The metric the sweep optimises."""
        return self.space.space.metric

    # -- configurations --------------------------------------------------------------
    def _work_dirs(self) -> list[Path]:
        root = self.folder / WORK_DIR
        return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []

    def _configuration(self, work: Path, records: dict[str, LedgerRecord], errors: set[str]) -> dict[str, Any]:
        digest = work.name
        record = records.get(digest)
        try:
            config = json.loads((work / "config.json").read_text())
        except (OSError, ValueError):
            config = {}
        counts = training_counts(work)
        starts, ends = counts["starts"], counts["ends"]
        holder = Lease(work, LEASE_NAME).current()
        if record is not None:
            state = record.status
        elif holder is not None and not holder.free():
            state = "running"
        elif starts and starts[-1].get("trial_id") in errors:
            state = "failed"
        elif starts or config:
            state = "interrupted"
        else:
            state = "pending"
        source = record.model_dump() if record is not None else config
        node = (record.node or {}).get("hostname") if record is not None else None
        if node is None and starts:
            node = starts[-1].get("host")
        row: dict[str, Any] = {"config_hash": digest, "element": source.get("element"), "model": source.get("model"),
                               "task": source.get("task"), "status": state,
                               "mlflow_run_id": record.mlflow_run_id if record is not None else None,
                               "node": node, "starts": len(starts), "resumed": sum(bool(s.get("resumed_from_checkpoint"))
                                                                                   for s in starts),
                               "started_at": starts[0]["at"] if starts else None,
                               "ended_at": record.finished_at if record is not None else (ends[-1]["at"] if ends else None)}
        row.update({f"params.{k}": v for k, v in (source.get("params") or {}).items()})
        if record is not None:
            row.update(record.metrics)
        elif state == "running" and starts:
            row["running_s"] = time.time() - starts[-1]["at"]
        return row

    def _errored_trials(self) -> set[str]:
        return {p.parent.name for p in self.folder.glob("*/error.txt")}

    def trials(self) -> pd.DataFrame:
        """One row per configuration that a trial has reached: element, model, task, every hyperparameter
        (``params.<name>``), final metrics, status, MLflow run id and the node that trained it."""
        records = {r.config_hash: r for r in self.ledger.records()}
        errors = self._errored_trials()
        rows = [self._configuration(w, records, errors) for w in self._work_dirs()]
        known = {r["config_hash"] for r in rows}
        for digest, record in records.items():  # a record whose work folder went missing still counts
            if digest not in known:
                rows.append({"config_hash": digest, "element": record.element, "model": record.model,
                             "task": record.task, "status": record.status, "mlflow_run_id": record.mlflow_run_id,
                             "node": (record.node or {}).get("hostname"),
                             **{f"params.{k}": v for k, v in record.params.items()}, **record.metrics})
        table = pd.DataFrame(rows)
        if table.empty:
            return pd.DataFrame(columns=["config_hash", "element", "model", "task", "status", "mlflow_run_id", "node"])
        return table.sort_values(["model", "element", "task", "config_hash"], kind="stable").reset_index(drop=True)

    def best(self, element: str, model: str, task: str | None = None) -> LedgerRecord | None:
        """The best finished record of ``model`` on ``element`` (by the sweep's metric); stopped ones only
        when none finished."""
        records = [r for r in self.ledger.records() if r.element == element and r.model == model
                   and (task is None or r.task == task) and self.metric in r.metrics]
        pool = [r for r in records if r.status == "finished"] or records
        if not pool:
            return None
        sign = 1.0 if self.space.space.mode == "min" else -1.0
        return min(pool, key=lambda r: sign * r.metrics[self.metric])

    def history(self, metric: str | None = None, tracking_uri: str | None = None) -> pd.DataFrame:
        """Per-step values of ``metric`` (default: the sweep's) for every run: config_hash, element, model,
        task, step, value. Read from the sweep's tracking store."""
        from mlflow.tracking import MlflowClient

        from sweep.tune.runner import saved_tracking_uri

        metric = metric or self.metric
        uri = tracking_uri or saved_tracking_uri(self.info)
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(self.name)
        rows = []
        if experiment is not None:
            for run in client.search_runs([experiment.experiment_id], max_results=50_000):
                tags = run.data.tags
                for point in client.get_metric_history(run.info.run_id, metric):
                    rows.append({"config_hash": tags.get("config_hash"), "element": tags.get("element"),
                                 "model": tags.get("model"), "task": tags.get("task"),
                                 "run_id": run.info.run_id, "step": point.step, "value": point.value})
        columns = ["config_hash", "element", "model", "task", "run_id", "step", "value"]
        return pd.DataFrame(rows, columns=columns).sort_values(["config_hash", "step"]).reset_index(drop=True)

    # -- where it stands ------------------------------------------------------------
    def status(self) -> SweepStatus:
        """Counts per group and state, best so far, compute spent, an ETA and the driver's state."""
        table = self.trials()
        space = self.space
        sign = 1.0 if space.space.mode == "min" else -1.0
        groups = []
        for group in space.groups:
            status = GroupStatus(group.model, group.element, group.task, total=space.group_size(group.study))
            rows = table[(table["model"] == group.model) & (table["element"] == group.element)
                         & (table["task"] == group.task)] if not table.empty else table
            for state in STATES[:-1]:
                status.counts[state] = int((rows["status"] == state).sum()) if len(rows) else 0
            status.counts["pending"] = max(0, status.total - sum(status.counts[s] for s in STATES[:-1]))
            best = self.best(group.element, group.model, group.task)
            if best is not None:
                status.best_value, status.best_config, status.best_hash = (
                    best.metrics[self.metric], best.params, best.config_hash)
            groups.append(status)
        records = self.ledger.records()
        walls = [r.metrics.get("trial_wall_s") for r in records if r.metrics.get("trial_wall_s")]
        compute = sum(walls) + (float(table["running_s"].sum()) if "running_s" in table else 0.0)
        holder = Lease(self.folder, DRIVER_LEASE).current()
        driver_alive = holder is not None and not holder.free()
        left = sum(g.counts["pending"] + g.counts["running"] + g.counts["interrupted"] + g.counts["failed"]
                   for g in groups)
        if driver_alive:
            driver = "running"
        elif left == 0:
            driver = "finished"
        elif records or any(g.counts["interrupted"] or g.counts["failed"] for g in groups):
            driver = "interrupted"
        else:
            driver = "not started"
        running = sum(g.counts["running"] for g in groups)
        eta = None
        if walls and left and driver == "running":
            eta = statistics.median(walls) * left / max(1, running)
        resume = None if driver in ("running", "finished") else f"tm23-sweep resume {self.name} --runs-dir {self.folder.parent}"
        return SweepStatus(name=self.name, folder=self.folder, space=self.info.space_source, created=self.info.created,
                           metric=self.metric, mode=space.space.mode, driver=driver,
                           driver_host=holder.owner.get("host") if driver_alive else None, groups=groups,
                           compute_s=compute, eta_s=eta, resume_command=resume)


def open_sweep(name_or_path: str | Path, runs_dir: str | Path | None = None) -> Sweep:
    """The sweep ``name_or_path``: a sweep folder, or a sweep name under the storage root."""
    path = Path(name_or_path)
    if (path / SWEEP_FILE).is_file():
        return Sweep(path)
    root = runs_root(runs_dir)
    text = str(name_or_path)
    if "/" in text or text.startswith("."):
        raise InputError(path, "name", "not a sweep folder (no sweep.json)")
    if not (root / text / SWEEP_FILE).is_file():
        known = ", ".join(list_sweeps(root)) or "none"
        raise InputError(root / text, "name", f"no sweep {text!r} in {root} (present: {known})")
    return Sweep(root / text)


def list_sweeps(runs_dir: str | Path | None = None) -> list[str]:
    """The names of the sweeps under the storage root."""
    root = runs_root(runs_dir)
    return sorted(p.parent.name for p in root.glob(f"*/{SWEEP_FILE}")) if root.is_dir() else []


__all__ = ["GroupStatus", "STATES", "Sweep", "SweepStatus", "list_sweeps", "open_sweep"]
