"""A sweep's trials, loaded from MLflow into one tidy table (one row per finished run).

The sweep logs one MLflow run per trial into an experiment named after the sweep, with
tags ``element``, ``model``, ``task``, ``trial_id``, ``config_hash`` and ``sweep``, every
hyperparameter as a param and the final scores as metrics (meV units). The table keeps:

- ``run_id``, ``run_name``, ``status``, ``start_time``, ``end_time``, ``artifact_uri``, ``experiment``;
- the tags ``element``, ``model``, ``task``, ``trial_id``, ``config_hash``, and ``n_frames``
  (the N of a ``learning-curve:N`` task, else missing);
- every metric under its own key (``test_forces_mae``, ``val_forces_mae``, ...);
- every param as ``params.<name>``, its string parsed back to int, float, bool or None.

Only FINISHED runs are kept, and of several runs for one trial (Ray Tune's restore logs a
restored trial again) the one that ended last.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from sweep.errors import InputError

#: Runs root when neither --runs-dir nor --tracking-uri is given.
DEFAULT_RUNS_DIR = Path("runs")
PARAM_PREFIX = "params."
TAG_COLUMNS: tuple[str, ...] = ("element", "model", "task", "trial_id", "config_hash", "sweep")
RUN_COLUMNS: tuple[str, ...] = ("run_id", "run_name", "status", "start_time", "end_time", "artifact_uri", "experiment")


def tracking_uri_for(runs_dir: str | Path | None = None, tracking_uri: str | None = None,
                     names: Sequence[str] = ()) -> str:
    """Where the sweeps ``names`` log: ``tracking_uri`` if given, else the URI saved with them.

    Sweeps found under the runs root answer with the tracking URI saved in their ``sweep.json``
    (all of them must agree); otherwise it is what a new sweep would use: $MLFLOW_TRACKING_URI,
    else sqlite in ``runs_dir``.
    """
    if tracking_uri:
        return tracking_uri
    from sweep.integrations.mlflow import tracking_uri as sweeps_tracking_uri
    from sweep.tune.runner import SWEEP_FILE, _read_info, runs_root, saved_tracking_uri

    root = runs_root(runs_dir if runs_dir is not None else DEFAULT_RUNS_DIR)
    saved = {}
    for name in names:
        info_path = root / name / SWEEP_FILE
        if info_path.is_file():
            saved[name] = saved_tracking_uri(_read_info(info_path))
    if len(set(saved.values())) > 1:
        raise InputError(root, "tracking URI", "the sweeps log to different stores: "
                                               + ", ".join(f"{k} to {v}" for k, v in sorted(saved.items())))
    if saved:
        return next(iter(saved.values()))
    return sweeps_tracking_uri(root)


def parse_param(text: Any) -> Any:
    """An MLflow param string back as int, float, bool or None; anything else stays a string."""
    if not isinstance(text, str):
        return text
    if text in ("True", "False"):
        return text == "True"
    if text == "None":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def task_frames(task: str) -> int | None:
    """N of a ``learning-curve:N`` task (validated by :func:`sweep.data.splits.parse_task`), else None."""
    from sweep.data.splits import parse_task

    try:
        parsed = parse_task(task)
    except InputError:
        return None
    return parsed.n


#: Params a sweep logs beside the hyperparameters: what it knows of a model it cannot import.
BOOKKEEPING_PARAMS = frozenset({"seed", "n_train", "n_val", "n_test", "num_cpus", "gpus"})


@functools.cache
def hyperparameter_names(model: str) -> frozenset[str] | None:
    """The names of ``model``'s hyperparameters (its trainer's ``Params`` fields); None if unknown.

    A sweep also logs counts, resources and the model's info (``n_d``, ``num_weights``,
    ``log_likelihood`` ...) as params; only hyperparameters tell configurations apart.
    """
    from sweep.errors import InputError
    from sweep.trainers.family import families

    try:
        family = families().get(model)
        if family is not None:
            params_model = family.load_params()  # light: no torch
        else:
            from sweep.trainers.base import get_trainer

            params_model = get_trainer(model).Params
    except (ImportError, AttributeError, KeyError, ValueError, InputError):
        return None
    return frozenset(params_model.model_fields)


def is_hyperparameter(model: str, name: str) -> bool:
    """Whether param ``name`` of a ``model`` run is a hyperparameter (not a count, resource or model fact)."""
    names = hyperparameter_names(model)
    return name in names if names is not None else name not in BOOKKEEPING_PARAMS


def hyperparameters(row: pd.Series) -> dict[str, Any]:
    """The hyperparameters of one table row (see :func:`is_hyperparameter`)."""
    return {k: v for k, v in run_params(row).items() if is_hyperparameter(row["model"], k)}


def param_columns(table: pd.DataFrame) -> list[str]:
    """The ``params.<name>`` columns of a runs table."""
    return [c for c in table.columns if c.startswith(PARAM_PREFIX)]


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The metric columns of a runs table (everything not a run field, tag or param)."""
    fixed = set(RUN_COLUMNS) | set(TAG_COLUMNS) | {"n_frames"}
    return [c for c in table.columns if c not in fixed and not c.startswith(PARAM_PREFIX)]


def run_params(row: pd.Series) -> dict[str, Any]:
    """The hyperparameters of one table row, without the ``params.`` prefix and without missing ones."""
    out = {}
    for key, value in row.items():
        if str(key).startswith(PARAM_PREFIX) and not _missing(value):
            out[str(key)[len(PARAM_PREFIX):]] = value
    return out


def _missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


@dataclass
class SweepRuns:
    """The finished runs of one or more sweep experiments, and the store they came from."""

    names: list[str]
    tracking_uri: str
    table: pd.DataFrame

    @property
    def public_uri(self) -> str:
        """The tracking URI without credentials: what exports, reports and messages show."""
        from sweep.integrations.mlflow import redact_uri

        return redact_uri(self.tracking_uri)

    @property
    def source(self) -> str:
        """How error messages name these runs."""
        return f"MLflow experiment {', '.join(self.names)} ({self.public_uri})"

    def download(self, run_id: str, artifact_path: str, dst: str | Path | None = None) -> Path:
        """Download one artifact file or folder of a run; return its local path."""
        import mlflow.artifacts

        dst = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="tm23-artifacts-"))
        dst.mkdir(parents=True, exist_ok=True)
        try:
            with _quiet_downloads():
                local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path,
                                                            dst_path=str(dst), tracking_uri=self.tracking_uri)
        except Exception as exc:  # mlflow raises its own and OSError variants for a missing artifact
            raise InputError(f"run {run_id}", f"artifacts/{artifact_path}", f"cannot download: {exc}") from None
        return Path(local)

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        """Paths of the artifacts directly under ``path`` of a run."""
        from mlflow.tracking import MlflowClient

        return [f.path for f in MlflowClient(tracking_uri=self.tracking_uri).list_artifacts(run_id, path)]


@contextlib.contextmanager
def _quiet_downloads():
    # one tqdm bar per small artifact would bury our own rich progress
    key, old = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ[key] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _check_store(uri: str) -> None:
    # MLflow would silently create an empty database at a mistyped sqlite path
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
        if not path.exists():
            raise InputError(uri, "tracking URI", "no MLflow database there; pass --runs-dir or --tracking-uri")


def load_runs(names: str | Sequence[str], runs_dir: str | Path | None = None,
              tracking_uri: str | None = None) -> SweepRuns:
    """Load the finished runs of the experiments ``names`` as a :class:`SweepRuns` table."""
    from mlflow.tracking import MlflowClient

    names = [names] if isinstance(names, str) else list(names)
    uri = tracking_uri_for(runs_dir, tracking_uri, names)
    _check_store(uri)
    client = MlflowClient(tracking_uri=uri)
    rows: list[dict[str, Any]] = []
    for name in names:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            known = sorted(e.name for e in client.search_experiments())
            raise InputError(uri, "experiment", f"no sweep named {name!r}; known: {', '.join(known) or 'none'}")
        rows += [_row(run, name) for run in _all_runs(client, experiment.experiment_id)]
    table = tidy(rows)
    if table.empty:
        raise InputError(uri, "experiment", f"sweep {', '.join(names)} has no finished runs")
    return SweepRuns(names=names, tracking_uri=uri, table=table)


def _all_runs(client, experiment_id: str) -> Iterable:
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def _row(run, experiment: str) -> dict[str, Any]:
    info, data = run.info, run.data
    row: dict[str, Any] = {
        "run_id": info.run_id, "run_name": info.run_name, "status": info.status,
        "start_time": info.start_time, "end_time": info.end_time, "artifact_uri": info.artifact_uri,
        "experiment": experiment,
    }
    for tag in TAG_COLUMNS:
        row[tag] = data.tags.get(tag)
    row["stopped_early"] = data.tags.get("stopped_early") == "true"
    row.update(data.metrics)
    row.update({PARAM_PREFIX + k: parse_param(v) for k, v in data.params.items()})
    return row


#: What a model tag may look like: it names folders and files of exports and reports.
_MODEL_TAG = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


def check_tags(row: dict[str, Any]) -> None:
    """Refuse a run whose ``element``, ``model`` or ``task`` tag is not one this project writes.

    Tags name folders and files of exports and reports, and anyone who can log a run can set
    them: a tag such as ``../../root/.ssh`` must never become a path.
    """
    from sweep.data.splits import parse_task
    from sweep.elements import ELEMENTS

    where = f"run {row.get('run_id')}"
    element, model, task = row.get("element"), row.get("model"), row.get("task")
    if element is not None and element not in ELEMENTS:
        raise InputError(where, "tags.element", f"{str(element)[:60]!r} is not a TM23 metal")
    if model is not None and not _MODEL_TAG.match(str(model)):
        raise InputError(where, "tags.model", f"{str(model)[:60]!r} is not a model family name")
    if task is not None:
        try:
            parse_task(str(task))
        except InputError:
            raise InputError(where, "tags.task", f"{str(task)[:60]!r} is not a task") from None


def tidy(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows of run fields into the tidy table: FINISHED runs only, one per trial, sorted (tags checked)."""
    for row in rows:
        if row.get("status", "FINISHED") == "FINISHED":
            check_tags(row)
    table = pd.DataFrame(rows)
    for column in param_columns(table):  # keep ints ints where other runs lack the param (no float NaN)
        table[column] = pd.Series([row.get(column) for row in rows], index=table.index, dtype=object)
    for column in RUN_COLUMNS + TAG_COLUMNS:
        if column not in table.columns:
            table[column] = pd.Series(dtype=object)
    if table.empty:
        table["n_frames"] = pd.Series(dtype="Int64")
        return table
    table = table[table["status"] == "FINISHED"].copy()
    table = table[table["element"].notna() & table["model"].notna() & table["task"].notna()]
    # one run per trial: a restored trial is logged again, keep the run that ended last
    key = table["config_hash"].fillna(table["trial_id"]).fillna(table["run_id"])
    table = (table.assign(_key=key).sort_values(["end_time", "start_time"], kind="stable")
             .drop_duplicates(["experiment", "element", "model", "task", "_key"], keep="last")
             .drop(columns="_key"))
    table["n_frames"] = pd.array([task_frames(t) for t in table["task"]], dtype="Int64")
    table = table.sort_values(["element", "model", "task", "trial_id"], kind="stable", na_position="last")
    return table.reset_index(drop=True)
