"""Helpers for sweep tests: space files and the CLI in a subprocess (the store fixture is in tests/conftest.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def write_space(folder: Path, text: str, name: str = "space.yaml") -> Path:
    """Write a search-space YAML into ``folder``."""
    path = Path(folder) / name
    path.write_text(text)
    return path


# The `tm23-sweep` entry point, with the sweep commands added when the CLI does not
# register them (yet); once it does, this is exactly `python -m sweep.cli ARGS`.
_LAUNCH = (
    "import sys\n"
    "import sweep.cli as cli\n"
    "from sweep.cli import sweeps\n"
    "names = {c.name or c.callback.__name__ for c in cli.app.registered_commands}\n"
    "if 'run' not in names and all(g.typer_instance is not sweeps.app for g in cli.app.registered_groups):\n"
    "    cli.app.add_typer(sweeps.app)\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


def cli_env(env: dict | None = None) -> dict:
    """The environment for a CLI subprocess: no tracking URI or runs folder from outside."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "TM23_RUNS_DIR")}
    full_env.update(env or {})
    return full_env


def cli_command(*args: str) -> list[str]:
    """The argv of ``tm23-sweep ARGS``."""
    return [sys.executable, "-c", _LAUNCH, *args]


def cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``tm23-sweep ARGS`` from the repository root; returns the completed process."""
    return subprocess.run(cli_command(*args), cwd=REPO, env=cli_env(env), capture_output=True, text=True,
                          timeout=timeout)


def mlflow_runs(runs_dir: Path, experiment: str, tracking_uri: str | None = None):
    """``mlflow.search_runs`` of one sweep's experiment (default store: the runs folder's sqlite file)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri or f"sqlite:///{Path(runs_dir).absolute() / 'mlruns.db'}")
    try:
        return mlflow.search_runs(experiment_names=[experiment])
    finally:
        mlflow.set_tracking_uri(None)  # it also sets $MLFLOW_TRACKING_URI, which later tests would inherit
