"""Run, and resume, a sweep: a search space on a frame store, as one Ray Tune experiment.

A sweep lives in ``<runs root>/<name>/``: Tune's experiment folder (``storage_path``
is the runs root, ``name`` the sweep's name) plus this project's files::

    sweep.json     the space's digest, the store, when it was created
    space.yaml     the space as it was when the sweep was created (``resume`` reads it)
    ledger/ work/  see :mod:`sweep.tune.ledger`
    driver.json    the last driver, for clean-up after a kill (:mod:`sweep.tune.processes`)

The MLflow tracking store defaults to ``sqlite:///<runs root>/mlruns.db`` (set
``MLFLOW_TRACKING_URI`` to use a server); each sweep is one experiment of that name.
Re-running :func:`run_sweep` with the same name, or :func:`resume_sweep`, continues
the sweep through ``Tuner.restore``; the ledger makes sure that no finished
configuration trains again and the MLflow run of each configuration is reused.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from sweep.errors import InputError
from sweep.io import atomic_write_json, atomic_write_text
from sweep.tune.ledger import Ledger, LedgerRecord, WORK_DIR
from sweep.tune.space import LoadedSpace, load_space, parse_space, resolve_space_path

RUNS_ENV = "TM23_RUNS_DIR"
SWEEP_FILE = "sweep.json"
SPACE_COPY = "space.yaml"
ARTIFACTS_DIR = "mlartifacts"

log = logging.getLogger(__name__)


def runs_root(runs_dir: str | Path | None = None) -> Path:
    """The storage root: ``runs_dir``, else ``$TM23_RUNS_DIR``, else ``./runs`` (absolute).

    On a cluster it must be a folder that every node mounts at the same path (checked when a
    sweep starts). Object-store URIs are refused: sweep state needs create-if-absent commits,
    which this project implements for POSIX filesystems only.
    """
    chosen = str(runs_dir or os.environ.get(RUNS_ENV) or "runs")
    if chosen.startswith("file://"):
        chosen = chosen[len("file://"):]
    elif "://" in chosen:
        raise InputError(chosen, "runs-dir", "object stores are not supported for sweep state yet; mount a shared "
                                             "filesystem (NFS, Lustre, EFS, Filestore) on every node and give its path")
    return Path(chosen).expanduser().absolute()


class SweepInfo(BaseModel):
    """``sweep.json``: what a sweep folder belongs to."""

    name: str
    space_source: str
    space_digest: str
    store: str
    created: float
    tracking_uri: str
    #: whether each metal's search starts from its finished neighbours' bests (chosen when the sweep starts)
    warm_start: bool = True


@dataclass
class SweepSummary:
    """What a finished (or interrupted) driver run leaves: ledger records and trial outcomes."""

    name: str
    sweep_dir: Path
    total: int
    records: list[LedgerRecord]
    trial_status: dict[str, str]
    errors: dict[str, str]
    tracking_uri: str
    experiment_id: str
    wall_s: float
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Trials of the space without a ledger record (not run yet, interrupted or failed).
    unfinished: int = 0
    metric: str = "val_forces_mae"
    mode: str = "min"
    #: Stopped by SIGINT or SIGTERM before the end.
    interrupted: bool = False

    @property
    def complete(self) -> bool:
        """Every configuration of the space is in the ledger and no trial failed."""
        return not self.errors and self.unfinished == 0

    def best(self) -> dict[str, LedgerRecord]:
        """The best ledger record of each group (model/element/task)."""
        sign = 1.0 if self.mode == "min" else -1.0
        out: dict[str, LedgerRecord] = {}
        for r in self.records:
            key = f"{r.model}/{r.element}/{r.task}"
            value = r.metrics.get(self.metric)
            if value is None:
                continue
            if key not in out or sign * value < sign * out[key].metrics[self.metric]:
                out[key] = r
        return out


def run_sweep(space: str | Path, store: str, name: str | None = None, runs_dir: str | Path | None = None,
              address: str | None = None, num_cpus: int | None = None, live: bool | None = None,
              mlflow_retry_s: float = 60.0, loopback_only: bool = False, warm_start: bool = True) -> SweepSummary:
    """Start the sweep of ``space`` on ``store`` as ``name`` (default: the space's file stem), or continue it.

    ``warm_start=False`` turns off the warm starts of :mod:`sweep.tune.warm_start` for a new sweep,
    whatever its space says; a continued sweep keeps the choice it started with.

    ``loopback_only`` (the command line's default): a local Ray instance of a sweep that needs
    no network starts in a network namespace of its own with loopback only (:mod:`sweep.tune.network`);
    this moves the calling thread there for good, so library callers opt in.
    """
    from sweep.tune.processes import DriverLock

    path = resolve_space_path(space)
    loaded = load_space(path)
    check_store(loaded, _norm_store(store))
    root = runs_root(runs_dir)
    name = _check_name(name or path.stem, path)
    sweep_dir = root / name
    info_path = sweep_dir / SWEEP_FILE
    existing = info_path.exists() and _started(sweep_dir)
    _preflight(root, sweep_dir, saved_tracking_uri(_read_info(info_path)) if existing else _tracking(root))
    created = not sweep_dir.exists()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    lock = DriverLock(sweep_dir).acquire()  # before the sweep's own files are written
    try:
        try:
            info = _define(sweep_dir, path, loaded, store, root, warm_start)
            return _execute(loaded, _norm_store(store), root, name, address, num_cpus, live, mlflow_retry_s,
                            info.tracking_uri, loopback_only, info.warm_start)
        finally:
            lock.release()
    except InputError:
        if created and not _started(sweep_dir):  # refused before any trial ran: leave nothing behind
            shutil.rmtree(sweep_dir, ignore_errors=True)
        raise


def _define(sweep_dir: Path, path: Path, loaded: LoadedSpace, store: str, root: Path, warm_start: bool) -> SweepInfo:
    """Write a new sweep's ``sweep.json`` and ``space.yaml``, or check an existing one; returns what it holds."""
    info_path = sweep_dir / SWEEP_FILE
    name = sweep_dir.name
    if info_path.exists() and _started(sweep_dir):
        info = _read_info(info_path)
        if info.space_digest != loaded.digest:
            raise InputError(path, "name", f"sweep {name!r} in {root} was started from another space "
                                           f"({info.space_source}); resume it with `tm23-sweep resume {name}` "
                                           "or choose another --name")
        if _norm_store(info.store) != _norm_store(store):
            raise InputError(store, "store", f"sweep {name!r} was started on store {info.store}")
        if info.warm_start and not warm_start:
            log.warning("sweep %s started with warm starts; a continued sweep keeps them", name)
        return info.model_copy(update={"tracking_uri": saved_tracking_uri(info)})
    # new, or created but never started (say, refused for its resources): (re)define it
    uri = _tracking(root)
    atomic_write_text(sweep_dir / SPACE_COPY, loaded.text)
    info = SweepInfo(name=name, space_source=str(path.absolute()), space_digest=loaded.digest,
                     store=_norm_store(store), created=time.time(), tracking_uri=uri, warm_start=warm_start)
    atomic_write_json(info_path, info.model_dump())
    return info


def _read_info(info_path: Path) -> SweepInfo:
    from pydantic import ValidationError

    try:
        return SweepInfo.model_validate_json(info_path.read_text())
    except (ValidationError, ValueError) as exc:
        raise InputError(info_path, "sweep.json", f"unreadable ({str(exc).splitlines()[0]})") from None


def saved_tracking_uri(info: SweepInfo) -> str:
    """The tracking URI a sweep logs to, as saved when it was created.

    ``$MLFLOW_TRACKING_URI``, when set, must name the same store: continuing a sweep into
    another store would split its runs (and duplicate them).
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env and env.rstrip("/") != info.tracking_uri.rstrip("/"):
        raise InputError("MLFLOW_TRACKING_URI", "tracking URI", f"{env} differs from {info.tracking_uri}, where sweep "
                                                                f"{info.name!r} logs; unset it to continue the sweep")
    return info.tracking_uri


def _preflight(root: Path, sweep_dir: Path, uri: str) -> None:
    """What can refuse a sweep before it takes its driver lease: the disk, its state files, the tracking server."""
    from sweep.integrations.mlflow import check_reachable
    from sweep.tune.ledger import check_sweep_state

    check_free_space(root)
    check_sweep_state(sweep_dir)
    check_reachable(uri)


def _started(sweep_dir: Path) -> bool:
    """Whether Tune or a trial has written anything in the sweep folder yet."""
    return any(sweep_dir.glob("experiment_state-*.json")) or (sweep_dir / "ledger").is_dir() \
        or (sweep_dir / WORK_DIR).is_dir()


def resume_sweep(name: str, runs_dir: str | Path | None = None, store: str | None = None,
                 address: str | None = None, num_cpus: int | None = None, live: bool | None = None,
                 mlflow_retry_s: float = 60.0, loopback_only: bool = False) -> SweepSummary:
    """Continue sweep ``name`` from its folder: its own copy of the space, its store, its tracking URI.

    ``loopback_only`` as for :func:`run_sweep`.
    """
    from sweep.tune.processes import DriverLock

    root = runs_root(runs_dir)
    name = _check_name(name, Path("resume"))  # a name, never a path: nothing outside the root is unpickled
    sweep_dir = root / name
    info_path = sweep_dir / SWEEP_FILE
    if not info_path.exists():
        known = sorted(p.parent.name for p in root.glob(f"*/{SWEEP_FILE}")) if root.is_dir() else []
        raise InputError(sweep_dir, "name", f"no sweep {name!r} in {root}"
                                            + (f" (present: {', '.join(known)})" if known else ""))
    info = _read_info(info_path)
    uri = saved_tracking_uri(info)
    loaded = parse_space((sweep_dir / SPACE_COPY).read_text(), str(sweep_dir / SPACE_COPY))
    check_store(loaded, _norm_store(store or info.store))
    _preflight(root, sweep_dir, uri)
    with DriverLock(sweep_dir):
        return _execute(loaded, _norm_store(store or info.store), root, name, address, num_cpus, live,
                        mlflow_retry_s, uri, loopback_only, info.warm_start)


def check_store(loaded: LoadedSpace, store_uri: str):
    """Open the store and check that it has every element and trajectory the space's tasks read (before Ray starts)."""
    from sweep.data.store import FrameStore

    from sweep.data.splits import required_temperatures

    store = FrameStore.open(store_uri)
    missing = [e for e in loaded.elements() if e not in store.elements()]
    if missing:
        raise InputError(store_uri, "element", f"{', '.join(missing)} not in the store "
                                               f"(present: {', '.join(store.elements()) or 'none'})")
    for group in loaded.groups:
        lacking = [t for t in required_temperatures(group.task) if t not in store.temperatures(group.element)]
        if lacking:
            raise InputError(store_uri, "temperature", f"{group.element} has no {', '.join(lacking)} frames, which "
                                                       f"task {group.task} of {Path(loaded.source).name} needs")
    return store


def _check_name(name: str, source: Path) -> str:
    """``name`` if it names a folder directly under the storage root, else a one-line error."""
    if (not name or "/" in name or "\\" in name or "\0" in name or name.startswith(".")
            or name in (WORK_DIR, ARTIFACTS_DIR)):
        raise InputError(source, "name", f"unusable sweep name {name!r} (a plain name: no '/', no leading '.')")
    return name


def _norm_store(store: str | Path) -> str:
    text = str(store)
    return text if "://" in text else str(Path(text).absolute())


def _tracking(root: Path) -> str:
    from sweep.integrations.mlflow import tracking_uri

    return tracking_uri(root)


def _execute(loaded: LoadedSpace, store_uri: str, root: Path, name: str, address: str | None,
             num_cpus: int | None, live: bool | None, mlflow_retry_s: float, uri: str,
             loopback_only: bool = False, warm_start: bool = True) -> SweepSummary:
    """Run the sweep under the driver lease (the caller holds it): Ray up, checks, Tune, Ray down."""
    from sweep.tune.processes import kill_leftovers, record_driver

    sweep_dir = root / name
    if address is not None and num_cpus is not None:
        raise InputError("--num-cpus", "num_cpus", "only for a local Ray instance; a cluster has its own CPUs")
    killed = kill_leftovers(sweep_dir)
    if killed:
        log.warning("killed %d processes left by the previous driver of %s", len(killed), name)
    started = time.time()
    import ray

    started_ray = False
    if not ray.is_initialized():
        _quiet_ray()
        if address is None:
            if loopback_only:
                _keep_ray_on_loopback(uri, store_uri)
            # "local": a fresh instance of our own, even when `ray start` left one running here
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, _node_ip_address="127.0.0.1")
        else:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR,
                     runtime_env=_cluster_runtime_env())
        started_ray = address is None
    try:
        if started_ray:
            record_driver(sweep_dir, started_ray=True)
        else:
            check_cluster(root, uri)
        return _fit(loaded, store_uri, root, name, live, mlflow_retry_s, started, uri, warm_start)
    finally:
        if started_ray or address is not None:
            ray.shutdown()
        if started_ray:  # what trials started outside Ray's reach (mpiexec in its own session) ends with it
            stray = kill_leftovers(sweep_dir)
            if stray:
                log.warning("stopped %d processes the sweep's trials left behind", len(stray))


def _keep_ray_on_loopback(uri: str, store_uri: str) -> bool:
    """Start the local Ray instance where only loopback exists, when the sweep needs no network."""
    from sweep.integrations.mlflow import is_server
    from sweep.tune.network import isolate_loopback

    if is_server(uri) or ("://" in store_uri and not store_uri.startswith("file://")):
        log.warning("Ray's gRPC servers listen on every interface (Ray 2.60), with token auth on; this sweep "
                    "reaches %s over the network, so it cannot run in a loopback-only namespace", uri)
        return False
    if not isolate_loopback():
        log.warning("Ray's gRPC servers listen on every interface (Ray 2.60), with token auth on; a "
                    "loopback-only network namespace needs root")
        return False
    return True


#: A sweep refuses to start on a storage root with less free space than this.
MIN_FREE_BYTES = 64 * 2**20


def check_free_space(root: Path) -> None:
    """Refuse a storage root too full to hold a sweep's checkpoints and records (one line, before anything runs)."""
    existing = next(p for p in (root, *root.parents) if p.exists())  # the root may not exist yet
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise InputError(root, "runs-dir", f"only {free / 2**20:.1f} MiB free; a sweep needs at least "
                                           f"{MIN_FREE_BYTES // 2**20} MiB for its checkpoints and records")


#: Environment the driver passes on to every trial of a cluster (credentials stay out of files).
FORWARDED_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def _cluster_runtime_env() -> dict | None:
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    return {"env_vars": env} if env else None


def check_cluster(root: Path, uri: str) -> None:
    """Before any trial of a sweep on a cluster: one tracking store for all nodes, one storage root all see."""
    import ray

    from sweep.integrations.mlflow import is_server
    from sweep.storage.visibility import check_cluster_sees

    machines = {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
    if len(machines) > 1 and not is_server(uri):
        raise InputError("MLFLOW_TRACKING_URI", "tracking URI",
                         f"{uri} is a file on one machine, but this cluster's nodes are on {len(machines)} "
                         "machines that all log; set MLFLOW_TRACKING_URI to the cluster's MLflow server "
                         "(http://<head address>:5000)")
    check_cluster_sees(root, uri)


def _quiet_ray() -> None:
    # Tune's console output would fight the live table: the old output path with
    # RunConfig(verbose=0) prints nothing (the new one still prints a header); Tune's
    # result files stay complete. Restore warns about every trial without results yet.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    logging.getLogger("ray.tune").setLevel(logging.ERROR)


def _fit(loaded: LoadedSpace, store_uri: str, root: Path, name: str, live: bool | None,
         mlflow_retry_s: float, started: float, uri: str, warm_start: bool) -> SweepSummary:
    import ray
    from ray import tune

    from sweep.integrations.mlflow import ensure_experiment, flush_pending
    from sweep.tune.data import ElementTable
    from sweep.tune.progress import SweepProgress
    from sweep.tune.resources import check_feasible, cluster_nodes
    from sweep.tune.failures import fit_resuming_lost
    from sweep.tune.search import build_search
    from sweep.tune.warm_start import warm_starts_for
    from sweep.tune.trainable import DRIVER_INTERRUPTED, FlushPending, StoppedTrials, SweepContext, run_trial

    sweep_dir = root / name
    requests = check_feasible(loaded, cluster_nodes())
    store = check_store(loaded, store_uri)
    # Each element's frames enter the object store once; every trial of it gets the reference.
    tables = {element: ray.put(ElementTable.read(store, element)) for element in loaded.elements()}

    experiment_id = ensure_experiment(uri, name, root / ARTIFACTS_DIR)
    flush_pending(sweep_dir / WORK_DIR)
    context = SweepContext(name=name, sweep_dir=str(sweep_dir), tracking_uri=uri, experiment_id=experiment_id,
                           loaded=loaded, resources=requests, mlflow_retry_s=mlflow_retry_s)
    factories = {i: r.factory() for i, r in requests.items()}
    trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=context, tables=tables),
                                    resources=lambda config: factories[config["spec"]["study"]])

    warm = warm_starts_for(loaded, root, name) if warm_start else None
    search_alg, param_space, scheduler, num_samples = build_search(loaded, warm)
    callbacks = [StoppedTrials(str(sweep_dir), uri, experiment_id), FlushPending(str(sweep_dir))]
    views = [SweepProgress(loaded, name, live=live)]

    def make_tuner():
        tuner, view = _tuner(trainable, loaded, root, name, live, views[-1], callbacks,
                             search_alg, param_space, scheduler, num_samples)
        views.append(view)
        return tuner

    with stop_on_signals():
        results = fit_resuming_lost(make_tuner, rounds=loaded.space.max_failures,
                                    interrupted=DRIVER_INTERRUPTED.is_set)
    progress = views[-1]
    interrupted = DRIVER_INTERRUPTED.is_set()
    flush_pending(sweep_dir / WORK_DIR)
    status, errors = _trial_outcomes(results)
    ledger = Ledger(sweep_dir)
    # a trial is done when its configuration is in the ledger (twins share one record)
    done = sum(1 for r in results if (r.metrics or {}).get("config_hash") and ledger.get(r.metrics["config_hash"]))
    unfinished = max(0, loaded.total_trials() - done)
    close_orphan_runs(uri, experiment_id, ledger, running_hashes=set())
    return SweepSummary(name=name, sweep_dir=sweep_dir, total=loaded.total_trials(), records=ledger.records(),
                        trial_status=status, errors=errors, tracking_uri=uri, experiment_id=experiment_id,
                        wall_s=time.time() - started, timings=dict(progress.timings), unfinished=unfinished,
                        metric=loaded.space.metric, mode=loaded.space.mode, interrupted=interrupted)


def _tuner(trainable, loaded: LoadedSpace, root: Path, name: str, live: bool | None, progress, callbacks: list,
           search_alg, param_space: dict, scheduler, num_samples: int):
    """A new Tuner for the sweep, or the one its folder holds; and the progress view it reports to."""
    from ray import tune

    from sweep.tune.progress import SweepProgress

    sweep_dir = root / name
    # A driver killed between writing tuner.pkl and Tune's first snapshot leaves nothing to
    # restore (Tune would log a traceback and start over anyway): start over cleanly.
    if tune.Tuner.can_restore(str(sweep_dir)) and any(sweep_dir.glob("experiment_state-*.json")):
        # tuner.pkl keeps no param space: give it again, or trials not yet generated lose it
        tuner = tune.Tuner.restore(str(sweep_dir), trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=param_space or None)
        restored = SweepProgress.current(name)  # unpickled from tuner.pkl; this run's choice of view
        if restored is not None and restored is not progress:
            restored.force_live = live
            restored._init_view()
            progress = restored
        return tuner, progress
    space = loaded.space
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=space.metric, mode=space.mode, search_alg=search_alg, scheduler=scheduler,
            num_samples=num_samples, max_concurrent_trials=space.search.max_concurrent_trials,
            reuse_actors=True, trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=str(root), verbose=0, callbacks=[progress, *callbacks],
            failure_config=tune.FailureConfig(max_failures=space.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )
    return tuner, progress


@contextlib.contextmanager
def stop_on_signals():
    """Ctrl-C (SIGINT) and a batch scheduler's SIGTERM stop the sweep cleanly.

    Both mark the driver interrupted (:data:`sweep.tune.trainable.DRIVER_INTERRUPTED`, so that
    trials ended by the stop are not taken for trials a scheduler stopped early) and hand Tune
    its own graceful stop (SIGUSR1): Tune saves its experiment state, ends the running trials
    and returns. The ledger and the trainers' checkpoints keep everything finished or
    checkpointed, so ``resume`` then loses and redoes nothing. Only the main thread may set
    signal handlers; elsewhere Tune's own SIGINT handling stays.
    """
    from sweep.tune.trainable import DRIVER_INTERRUPTED

    DRIVER_INTERRUPTED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous_env = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # ours below, for SIGINT and SIGTERM alike

    def handler(signum, frame) -> None:
        if DRIVER_INTERRUPTED.is_set():  # a second signal: stop at once
            raise KeyboardInterrupt
        DRIVER_INTERRUPTED.set()
        log.warning("%s: stopping the sweep; `tm23-sweep resume` continues it", signal.Signals(signum).name)
        signal.raise_signal(signal.SIGUSR1)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if previous_env is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = previous_env


def _trial_outcomes(results) -> tuple[dict[str, str], dict[str, str]]:
    status, errors = {}, {}
    for result in results:
        trial_id = Path(result.path).name
        status[trial_id] = "ERROR" if result.error else "TERMINATED"
        if result.error:
            errors[trial_id] = str(Path(result.path) / "error.txt")
    return status, errors


def close_orphan_runs(uri: str, experiment_id: str, ledger: Ledger, running_hashes: set[str]) -> int:
    """End MLflow runs left RUNNING by killed trials that will not come back; returns how many.

    A run whose configuration is in the ledger is closed ``FINISHED``; any other one
    (say, a TPE suggestion lost with the driver) ``KILLED``. Runs of ``running_hashes`` stay.
    """
    from sweep.integrations.mlflow import client, find_runs

    closed = 0
    try:
        runs = find_runs(uri, experiment_id)
    except Exception as exc:  # tracking store down: nothing to reconcile now
        log.warning("could not list MLflow runs (%s)", exc)
        return 0
    for run in runs:
        digest = run.data.tags.get("config_hash")
        if run.info.status != "RUNNING" or digest in running_hashes:
            continue
        done = ledger.get(digest) if digest else None
        client(uri).set_terminated(run.info.run_id, status="FINISHED" if done else "KILLED")
        closed += 1
    return closed


def sweep_names(runs_dir: str | Path | None = None) -> list[str]:
    """Sweeps present under the runs root."""
    root = runs_root(runs_dir)
    return sorted(p.parent.name for p in root.glob(f"*/{SWEEP_FILE}")) if root.is_dir() else []


__all__ = ["SweepSummary", "check_cluster", "close_orphan_runs", "resume_sweep", "run_sweep", "runs_root",
           "saved_tracking_uri", "sweep_names"]
