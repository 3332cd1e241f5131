"""The function every Tune trial runs: one configuration, trained once, logged once.

:func:`run_trial` resolves the trial's hyperparameters, hashes them with the model,
element, task and seed, and then, holding the configuration's lock:

1. if the ledger has the hash, reports the recorded metrics to Tune and returns;
2. otherwise attaches to (or creates) the configuration's one MLflow run;
3. unless ``work/<hash>/metrics.json`` shows a finished training, counts a training
   start and runs :func:`sweep.train.run_training` in ``work/<hash>`` (the trainer
   resumes from its own checkpoint there), reporting every epoch or frame block to Tune
   and MLflow;
4. logs final metrics and artifacts, ends the MLflow run ``FINISHED``, writes the ledger
   record and reports the final metrics.

A trial stopped early by the scheduler (Tune raises ``SystemExit`` from ``tune.report``)
is recorded as ``stopped`` with its last metrics by the driver (:class:`StoppedTrials`), so a
restored sweep does not run it on; a trial ended because the whole sweep stops (SIGINT,
SIGTERM) is not, and a resume continues it from its checkpoint.
Frames come from Ray's object store (:mod:`sweep.tune.data`), never from files. Heavy
imports happen inside, so a worker that Tune reuses imports the trainers once.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from sweep.tune.ledger import (
    Ledger,
    LedgerRecord,
    config_hash,
    config_lease,
    node_facts,
    record_training_end,
    record_training_start,
    training_counts,
)
from sweep.tune.resources import TrialResources
from sweep.tune.search import WARM_FROM
from sweep.tune.space import LoadedSpace

#: Keys every report to Tune carries besides the metrics: from the ledger (1) or trained (0),
#: the configuration's hash, and (last report only) that the trial ended by itself.
LEDGER_HIT = "ledger_hit"
#: Driver side: set while a sweep stops on SIGINT or SIGTERM; the trials that ends are not "stopped early".
DRIVER_INTERRUPTED = threading.Event()
CONFIG_HASH = "config_hash"
FINAL = "final"
#: Seconds of training so far, on every report; a finished trial's last value is its whole training.
TRAIN_SECONDS = "train_seconds"


@dataclass
class SweepContext:
    """What every trial of a sweep needs to know; shipped to workers by ``tune.with_parameters``."""

    name: str
    sweep_dir: str
    tracking_uri: str
    experiment_id: str
    loaded: LoadedSpace
    resources: dict[int, TrialResources]
    mlflow_retry_s: float = 60.0
    extra_tags: dict[str, str] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        """Split and training seed of every trial."""
        return self.loaded.space.seed

    @property
    def metric(self) -> str:
        """The metric Tune optimises."""
        return self.loaded.space.metric


def resolve_trial(sweep: SweepContext, spec: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The trainer's validated params (defaults filled in) and the configuration hash."""
    from sweep.trainers.base import get_trainer

    params = sweep.loaded.resolve_params(spec["study"], spec.get("params") or {})
    hyper = get_trainer(spec["model"]).parse_params(params, source=sweep.loaded.source).model_dump(mode="json")
    digest = config_hash(spec["model"], spec["element"], spec["task"], sweep.seed, hyper)
    return hyper, digest


def run_trial(config: dict[str, Any], sweep: SweepContext, tables: dict[str, Any]) -> None:
    """Tune's entry point for one trial (wrapped with ``tune.with_parameters``)."""
    from ray import tune

    started = time.perf_counter()
    spec = config["spec"]
    check_sweep_visible(sweep)
    hyper, digest = resolve_trial(sweep, spec)  # imports the trainer: once per worker
    ledger = Ledger(sweep.sweep_dir)
    work = ledger.work_dir(digest)
    trial_id = tune.get_context().get_trial_id()
    with config_lease(work, owner={"trial_id": trial_id, "sweep": sweep.name}) as lease:
        done = ledger.get(digest)
        if done is not None:
            tune.report({**done.metrics, LEDGER_HIT: 1.0, CONFIG_HASH: digest, FINAL: 1.0})
            return
        _train_and_record(sweep, spec, hyper, digest, work, ledger, trial_id, tables, started, lease)


def check_sweep_visible(sweep: SweepContext) -> None:
    """Fail the trial at once, naming this node, when the sweep folder is not there (a node-local path).

    The driver checks every node before the sweep starts; this covers nodes that joined later.
    """
    import socket

    from sweep.errors import InputError

    if not (Path(sweep.sweep_dir) / "sweep.json").is_file():
        raise InputError(sweep.sweep_dir, "runs-dir", f"node {socket.gethostname()} does not see the sweep folder; "
                                                      "the storage root must be on a filesystem every node mounts")


def _train_and_record(sweep: SweepContext, spec: dict, hyper: dict, digest: str, work: Path, ledger: Ledger,
                      trial_id: str, tables: dict, started: float, lease) -> None:
    import ray
    from ray import tune

    from sweep.integrations.mlflow import PENDING_FILE, TrialRun
    from sweep.io import atomic_write_json
    from sweep.trainers.base import TrainContext
    from sweep.tune.data import build_split
    from sweep.tune.resources import share_gpu_memory, trial_device

    timings = {"resolve_s": time.perf_counter() - started}
    mark = time.perf_counter()
    model, element, task = spec["model"], spec["element"], spec["task"]
    request = sweep.resources[spec["study"]]
    split = build_split(ray.get(tables[element]), task, sweep.seed)
    counts = split.counts()
    facts = node_facts()

    tags = {"sweep": sweep.name, "model": model, "element": element, "task": task, "trial_id": trial_id,
            "config_hash": digest, **sweep.extra_tags}
    if spec.get(WARM_FROM):  # a neighbouring metal's best, tried first
        tags[WARM_FROM] = spec[WARM_FROM]
    run = TrialRun(sweep.tracking_uri, sweep.experiment_id, tags, run_name=f"{model}-{element}-{task}-{digest[:8]}",
                   key_metric=sweep.metric, pending_file=work / PENDING_FILE).start()
    run.log_params({**hyper, "seed": sweep.seed, "n_train": counts["train"], "n_val": counts["val"],
                    "n_test": counts["test"], "num_cpus": request.num_cpus, "gpus": request.gpus})
    config_file = atomic_write_json(work / "config.json", {
        "sweep": sweep.name, "model": model, "element": element, "task": task, "seed": sweep.seed,
        "config_hash": digest, "params": hyper, "searched": spec.get("params") or {}, "counts": counts,
        "resources": request.as_dict(), "space": sweep.loaded.source,
    })

    # a training resumed from a checkpoint at its very end reports nothing new: its last step is
    # then the last one its (re-attached) MLflow run already has
    last: dict[str, Any] = {"step": max(run.logged_upto, 0), "metrics": {}}
    training: dict[str, float] = {}  # "started": set just before the training, which alone calls reporter

    def reporter(step: int, metrics) -> None:
        lease.check()  # a trial whose lease was taken over (its node was cut off) stops here
        # the training seconds so far ride on every report, so that a trial the scheduler stops
        # keeps its real compute in its ledger record rather than none
        values = {k: float(v) for k, v in metrics.items()}
        values[TRAIN_SECONDS] = time.perf_counter() - training["started"]
        last["step"], last["metrics"] = int(step), values
        run.log_step(int(step), values)
        tune.report({**values, "step": int(step), LEDGER_HIT: 0.0, CONFIG_HASH: digest})

    # request.gpus is 0 for a CPU-only family: resources.trial_resources asks the family registry
    device = trial_device(request.gpus)
    facts["device"] = device
    facts["gpu_memory_share"] = share_gpu_memory(request.gpus, device)
    context = TrainContext(device=device, num_cpus=request.num_cpus, seed=sweep.seed,
                           reported_up_to=max(run.logged_upto, 0))
    export = sweep.loaded.space.studies[spec["study"]].export
    timings["setup_s"] = time.perf_counter() - mark
    mark = training["started"] = time.perf_counter()
    try:
        result = _training(model, hyper, split, work, reporter, context, trial_id, export, last)
    except SystemExit:
        # Tune ended this trial (tune.report raised): its scheduler stopped it early, or the whole
        # sweep is stopping (Ctrl-C, SIGTERM). Only the driver knows which, so the driver records a
        # stopped trial and ends its MLflow run (StoppedTrials), or, for a sweep that stops, the
        # end-of-sweep reconciliation does; here what is queued is sent and the run is left open.
        run.close(None, retry_s=min(10.0, sweep.mlflow_retry_s))
        raise
    except BaseException:
        run.close("FAILED", retry_s=min(10.0, sweep.mlflow_retry_s))
        raise

    metrics, info = result
    timings["run_training_s"] = time.perf_counter() - mark
    mark = time.perf_counter()
    metrics = {**metrics, "trial_wall_s": time.perf_counter() - started}
    run.log_params(_info_params(info, hyper))
    run.log_metrics(metrics, step=last["step"])
    # the native export when there is one, else the saved model
    if export:
        run.log_artifacts(work / "export", "export")
    else:
        run.log_artifacts(work / "model", "model")
    for name in ("metrics.json", "predictions.npz"):
        run.log_artifacts(work / name, None)
    run.log_artifacts(config_file, None)
    run.close("FINISHED", retry_s=sweep.mlflow_retry_s)
    timings["logging_s"] = time.perf_counter() - mark
    record = _record("finished", sweep, spec, hyper, digest, metrics, info, trial_id, run, work, facts)
    record.timings = timings
    lease.check()
    ledger.put(record)
    tune.report({**metrics, LEDGER_HIT: 0.0, CONFIG_HASH: digest, FINAL: 1.0})


def _training(model: str, hyper: dict, split, work: Path, reporter, context, trial_id: str, export: bool,
              last: dict):
    """Train (or pick up a training finished before a kill); returns (metrics, info).

    ``last["step"]`` ends as the training's last report, also when it was trained before a kill.
    """
    from sweep.train import run_training

    finished = work / "metrics.json"
    if finished.exists():  # trained, scored and saved before the driver was killed
        saved = json.loads(finished.read_text())
        ends = training_counts(work)["ends"]
        if ends and ends[-1].get("last_step") is not None:
            last["step"] = int(ends[-1]["last_step"])
        return saved["metrics"], saved.get("info", {})
    checkpoint = work / "checkpoint"
    resumed = checkpoint.is_dir() and any(checkpoint.iterdir())
    record_training_start(work, resumed=resumed, trial_id=trial_id)
    result = run_training(model, hyper, split, work, reporter=reporter, context=context, export=export)
    record_training_end(work, trial_id=trial_id, last_step=last["step"])
    return result.metrics, result.info


def _info_params(info: dict, hyper: dict) -> dict[str, Any]:
    """The model's scalar facts (descriptor dimension, weight count, ...) as extra params."""
    out = {}
    for key, value in info.items():
        if isinstance(value, (int, float, str, bool)):
            out[key if key not in hyper else f"info_{key}"] = value
    return out


def _record(status: str, sweep: SweepContext, spec: dict, hyper: dict, digest: str, metrics: dict, info: dict,
            trial_id: str, run, work: Path, facts: dict) -> LedgerRecord:
    return LedgerRecord(
        config_hash=digest, status=status, model=spec["model"], element=spec["element"], task=spec["task"],
        seed=sweep.seed, params=hyper, metrics={k: float(v) for k, v in metrics.items()},
        info=json.loads(json.dumps(info, default=str)),  # plain JSON, whatever types the trainer used
        trial_id=trial_id, mlflow_run_id=run.run_id, work_dir=str(work), node=facts, finished_at=time.time())


class StoppedTrials(Callback):
    """Driver side: record trials that the scheduler stopped early in the ledger and MLflow.

    A stopped trial's thread learns of the stop at its next report and may be ended
    before it has written anything (when its actor is not reused); the driver knows.
    """

    def __init__(self, sweep_dir: str, tracking_uri: str, experiment_id: str):
        self.sweep_dir = sweep_dir
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        """A trial that completed without its final report was stopped: record it once."""
        result = trial.last_result or {}
        digest = result.get(CONFIG_HASH)
        if not digest or result.get(FINAL) or DRIVER_INTERRUPTED.is_set():
            return
        ledger = Ledger(self.sweep_dir)
        if ledger.get(digest) is not None:
            return
        record_stopped(ledger, digest, result, trial.trial_id, self.tracking_uri, self.experiment_id)


class FlushPending(Callback):
    """Driver side: replay MLflow operations that trials saved while the tracking store was down.

    A trial retries its MLflow calls for ``mlflow_retry_s`` when it ends, then saves what is
    left beside its work (``mlflow_pending.json``) and lets its slot go. This callback
    replays those files every ``every_s`` seconds, so that a server back after a long outage
    gets the metrics during the sweep rather than only when the sweep ends.
    """

    def __init__(self, sweep_dir: str, every_s: float = 30.0):
        self.sweep_dir = sweep_dir
        self.every_s = every_s
        self._last = time.monotonic()

    def on_step(self, iteration: int, trials: list, **info) -> None:
        """Every ``every_s`` seconds, one quick try at each saved file."""
        from sweep.integrations.mlflow import PENDING_FILE, flush_pending

        if time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        work = Path(self.sweep_dir) / "work"
        if any(work.glob(f"*/{PENDING_FILE}")):
            flush_pending(work, retry_s=0.0)


def record_stopped(ledger: Ledger, digest: str, result: dict, trial_id: str, tracking_uri: str,
                   experiment_id: str) -> LedgerRecord:
    """Write the ledger record of a stopped trial from its last result, and close its MLflow run."""
    from sweep.integrations.mlflow import client, find_runs

    work = ledger.work_dir(digest)
    config = json.loads((work / "config.json").read_text())
    metrics = {k: float(v) for k, v in result.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k.startswith(("val_", "train_"))}
    run_id = None
    try:
        runs = find_runs(tracking_uri, experiment_id, digest)
        if runs:
            run_id = runs[0].info.run_id
            client(tracking_uri).set_tag(run_id, "stopped_early", "true")
            client(tracking_uri).set_terminated(run_id, status="FINISHED")
    except Exception:  # the store is down: the end-of-sweep reconciliation closes it
        pass
    record = LedgerRecord(config_hash=digest, status="stopped", model=config["model"], element=config["element"],
                          task=config["task"], seed=config["seed"], params=config["params"], metrics=metrics,
                          trial_id=trial_id, mlflow_run_id=run_id, work_dir=str(work), finished_at=time.time())
    ledger.put(record)
    return record
