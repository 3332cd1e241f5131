"""``tm23-sweep run | resume | ui``: sweeps on Ray Tune, tracked in MLflow.

Registered on the main app without a group name (``app.add_typer(sweeps.app)``), so the
commands are top level::

    tm23-sweep run SPACE.yaml --store S [--name NAME] [--address auto]
    tm23-sweep resume NAME
    tm23-sweep ui [--host 127.0.0.1] [--port 5000]

``SPACE`` is a path or the name of a shipped space (``demo``, ``nequip``, ...).
Sweeps live in ``--runs-dir`` (default ``$TM23_RUNS_DIR`` or ``./runs``); MLflow's
store defaults to ``sqlite:///<runs dir>/mlruns.db`` unless ``MLFLOW_TRACKING_URI`` is set.
Exit status: 0 when every trial finished, 1 when some failed (``resume`` retries them),
2 on bad input.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from sweep.integrations.mlflow import UI_HOST, UI_PORT

app = typer.Typer(help="Sweeps: run, resume, and browse them in MLflow.")
console = Console()

RunsDir = Annotated[Optional[Path], typer.Option("--runs-dir", help="Folder of sweeps (default $TM23_RUNS_DIR or ./runs).")]
Address = Annotated[Optional[str], typer.Option("--address", help="Ray cluster to join ('auto' for `ray start`/`ray up`); default: start Ray here.")]
NumCpus = Annotated[Optional[int], typer.Option("--num-cpus", min=1, help="CPUs of the local Ray instance (default: all).")]
Live = Annotated[Optional[bool], typer.Option("--live/--no-live", help="Live table (default: on a terminal).")]


@app.command()
def run(
    space: Annotated[str, typer.Argument(help="Search-space YAML, or the name of a shipped one (demo, nequip, ...).")],
    store: Annotated[str, typer.Option("--store", help="Frame store (path or pyarrow URI).")],
    name: Annotated[Optional[str], typer.Option("--name", help="Sweep name (default: the space's file name).")] = None,
    address: Address = None,
    runs_dir: RunsDir = None,
    num_cpus: NumCpus = None,
    live: Live = None,
    warm_start: Annotated[bool, typer.Option(
        "--warm-start/--no-warm-start",
        help="Seed each metal's search with its finished neighbours' best configurations (tpe, optuna-grid); "
             "chosen when the sweep starts.")] = True,
) -> None:
    """Run a sweep; with the NAME of an existing sweep of the same space, continue it."""
    from sweep.tune.runner import run_sweep

    summary = run_sweep(space, store, name=name, runs_dir=runs_dir, address=address, num_cpus=num_cpus, live=live,
                        loopback_only=True, warm_start=warm_start)
    _report(summary)


@app.command()
def resume(
    name: Annotated[str, typer.Argument(help="Name of the sweep to continue.")],
    store: Annotated[Optional[str], typer.Option("--store", help="Store, if it moved since the sweep began.")] = None,
    address: Address = None,
    runs_dir: RunsDir = None,
    num_cpus: NumCpus = None,
    live: Live = None,
) -> None:
    """Continue a killed or interrupted sweep: finished trials are kept, unfinished ones go on."""
    from sweep.tune.runner import resume_sweep

    summary = resume_sweep(name, runs_dir=runs_dir, store=store, address=address, num_cpus=num_cpus, live=live,
                           loopback_only=True)
    _report(summary)


@app.command()
def ui(
    host: Annotated[str, typer.Option("--host", help="Address to bind; keep 127.0.0.1 unless you mean to share it.")] = UI_HOST,
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = UI_PORT,
    runs_dir: RunsDir = None,
) -> None:
    """Start the MLflow UI on the sweeps' tracking store (Ctrl-C stops it)."""
    from sweep.tune.runner import runs_root

    raise typer.Exit(serve_ui(runs_root(runs_dir), host, port))


def ui_command(runs_root: Path, host: str, port: int) -> list[str]:
    """The ``mlflow ui`` command line for the sweeps under ``runs_root``."""
    from sweep.errors import InputError
    from sweep.integrations.mlflow import tracking_uri

    uri = tracking_uri(runs_root)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        raise InputError(uri.removeprefix("sqlite:///"), "tracking store", "no MLflow database yet (run a sweep first)")
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host,
            "--port", str(port), "--workers", "1"]


def ui_links(runs_root: Path, uri: str, host: str, port: int) -> list[str]:
    """The UI's experiment list, then ``<sweep>: <link>`` for each sweep under ``runs_root`` that the
    store holds (all links in the model-training view)."""
    from sweep.integrations.mlflow import experiment_ids, ui_link
    from sweep.results import list_sweeps

    try:
        found = experiment_ids(uri, list_sweeps(runs_root))
    except Exception:  # a store MLflow cannot read: the UI still starts, and its own log says why
        found = {}
    return [ui_link(uri, host=host, port=port)] + [f"{name}: {ui_link(uri, experiment_id, host=host, port=port)}"
                                                    for name, experiment_id in found.items()]


def serve_ui(runs_root: Path, host: str, port: int) -> int:
    """Run ``mlflow ui`` in its own process group until it exits or Ctrl-C; returns its status."""
    command = ui_command(runs_root, host, port)
    links = ui_links(runs_root, command[5], host, port)
    console.print(f"MLflow UI on {links[0]} (store {command[5]}); Ctrl-C stops it", highlight=False, soft_wrap=True)
    for line in links[1:]:
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    # Ctrl-C or a SIGTERM both end here (a shell may start us with SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    # its own session: on exit we stop it and the huey_consumer children it leaves behind
    proc = subprocess.Popen(command, start_new_session=True)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop_process_group(proc)


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stop_process_group(proc: subprocess.Popen, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, the process group that ``proc`` leads (it was started with its own session)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            try:  # children outliving the leader (huey_consumer) still hold the group
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return


def _report(summary) -> None:
    from sweep.integrations.mlflow import is_server, redact_uri, ui_link

    best = summary.best()
    table = Table(title=f"sweep {summary.name}: best {summary.metric} per model, element and task", title_justify="left")
    for column in ("model", "element", "task", summary.metric, "test_forces_pct", "config", "mlflow run"):
        table.add_column(column)
    for key in sorted(best):
        r = best[key]
        table.add_row(r.model, r.element, r.task, f"{r.metrics[summary.metric]:.4g}",
                      f"{r.metrics.get('test_forces_pct', float('nan')):.3g}", r.config_hash, r.mlflow_run_id or "-")
    console.print(table)
    finished = len(summary.records)
    console.print(f"{finished} configurations in the ledger, {len(summary.trial_status)} trials, "
                  f"{len(summary.errors)} failed; {summary.wall_s:.0f} s; folder {summary.sweep_dir}")
    console.print(f"MLflow: {redact_uri(summary.tracking_uri)} (experiment {summary.name}); "
                  f"{'' if is_server(summary.tracking_uri) else 'after `tm23-sweep ui`, '}"
                  f"{ui_link(summary.tracking_uri, summary.experiment_id)}", highlight=False, soft_wrap=True)
    for trial, path in sorted(summary.errors.items()):
        console.print(f"[red]failed[/red] {trial}: {path}")
    if summary.interrupted:
        console.print("[yellow]stopped by a signal (Ctrl-C or SIGTERM) before the end[/yellow]")
    if summary.errors or summary.unfinished:
        console.print(f"{summary.unfinished} of {summary.total} configurations unfinished; "
                      f"`tm23-sweep resume {summary.name}` continues (and retries failed trials)")
        raise typer.Exit(1)
