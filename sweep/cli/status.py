"""``tm23-sweep ls | status``: which sweeps exist under a storage root, and where one stands.

Both read the storage root (and nothing from a driver's memory), so they answer while a
sweep runs, after it was killed, and from any machine that mounts the root::

    tm23-sweep ls [--runs-dir R] [--json]
    tm23-sweep status NAME [--runs-dir R] [--json]
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

console = Console()
RunsDir = Annotated[Optional[Path], typer.Option("--runs-dir", help="Storage root (default $TM23_RUNS_DIR or ./runs).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _when(timestamp: float | None) -> str:
    return dt.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M") if timestamp else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def ls(runs_dir: RunsDir = None, as_json: Json = False) -> None:
    """List the sweeps under the storage root: space, created, state, configurations done of total."""
    from sweep.results import list_sweeps, open_sweep
    from sweep.tune.runner import runs_root

    rows = []
    for name in list_sweeps(runs_dir):
        status = open_sweep(name, runs_dir).status()
        counts = status.counts
        rows.append({"name": name, "space": Path(status.space).name, "created": status.created, "state": status.driver,
                     "done": counts["finished"] + counts["stopped"], "total": status.total})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title=f"sweeps in {runs_root(runs_dir)}", title_justify="left")
    for column in ("name", "space", "created", "state", "done / total"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["space"], _when(row["created"]), row["state"], f"{row['done']} / {row['total']}")
    console.print(table if rows else f"no sweeps in {runs_root(runs_dir)}")


def status(
    name: Annotated[str, typer.Argument(help="Sweep name (or a sweep folder).")],
    runs_dir: RunsDir = None,
    as_json: Json = False,
) -> None:
    """Where a sweep stands, per element and model: finished, running, pending, failed, stopped; best so far; ETA."""
    from sweep.results import STATES, open_sweep

    sweep = open_sweep(name, runs_dir)
    report = sweep.status()
    if as_json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
        return
    table = Table(title=f"sweep {report.name}: {report.driver}", title_justify="left")
    for column in ("model", "element", "task", *STATES, f"best {report.metric}", "best config"):
        table.add_column(column, justify="right" if column in STATES else "left")
    for g in report.groups:
        best = f"{g.best_value:.4g}" if g.best_value is not None else "-"
        config = " ".join(f"{k}={v}" for k, v in sorted((g.best_config or {}).items()) if v is not None)
        table.add_row(g.model, g.element, g.task, *(str(g.counts[s]) for s in STATES), best, config[:60])
    console.print(table)
    counts = report.counts
    console.print(f"{counts['finished'] + counts['stopped']} of {report.total} configurations done; "
                  f"compute spent {_duration(report.compute_s)}; ETA {_duration(report.eta_s)}"
                  + (f"; driver on {report.driver_host}" if report.driver_host else ""), highlight=False)
    if report.resume_command:
        console.print(f"[yellow]interrupted[/yellow]: continue with `{report.resume_command}`", highlight=False)
    console.print(f"MLflow UI: {mlflow_link(sweep)}", highlight=False, soft_wrap=True)


def mlflow_link(sweep) -> str:
    """The sweep's experiment in the MLflow UI (its tracking server's, else `tm23-sweep ui`'s address);
    the experiment list when the store cannot be read now."""
    from sweep.integrations.mlflow import experiment_ids, ui_link

    uri = sweep.info.tracking_uri  # where it was created to log (status never refuses over $MLFLOW_TRACKING_URI)
    try:
        found = experiment_ids(uri, [sweep.name])
    except Exception:  # a store that is locked or mid-upgrade: the table above still stands
        found = {}
    return ui_link(uri, found.get(sweep.name))
