"""Stop the MLflow tracking server mid-sweep and start it again: trials go on, no metric is lost.

The server is the one a cluster runs (setup/cluster/mlflow_server.sh: 127.0.0.1, sqlite
backend in the runs folder). The sweep logs to it over HTTP. Once trainings have logged
a few blocks, the server is stopped for ``outage_s`` while trials keep training,
reporting and ending (their MLflow operations queue up, then are retried); then it is
started again on the same port. Afterwards every configuration's metric history must be
complete in the store, with one run each and nothing left pending on disk.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.faults.sweeps import Audit, audit_sweep, flare_space, metric_histories, progress, start_driver, wait_for

REPO = Path(__file__).resolve().parents[2]
SERVER = REPO / "setup" / "cluster" / "mlflow_server.sh"


@dataclass
class Outage:
    """Outcome of :func:`run_mlflow_outage`."""

    audit: Audit
    exit_code: int
    log: Path
    histories: dict[str, list[int]]
    during: dict  # progress made while the server was down
    pending_left: int
    down_s: float


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server(action: str, runs: Path, state: Path, port: int) -> subprocess.CompletedProcess:
    """``mlflow_server.sh ACTION`` for the runs folder ``runs`` on 127.0.0.1:``port``."""
    env = {**os.environ, "TM23_MLFLOW_DIR": str(runs / "mlflow-server"), "TM23_STATE_DIR": str(state),
           "TM23_MLFLOW_PORT": str(port)}
    env.pop("TM23_MLFLOW_HOST", None)
    return subprocess.run(["bash", str(SERVER), action], env=env, capture_output=True, text=True, timeout=180)


def run_mlflow_outage(root: Path, store: str, outage_s: float = 20.0, num_cpus: int = 2, r_cuts: int = 6) -> Outage:
    """Run the FLARE fault sweep (``r_cuts`` r_cut values) logging to a server that goes away for ``outage_s``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    space, total = flare_space(root, "m", r_cuts=r_cuts)
    runs, state = root / "runs", root / "state"
    runs.mkdir(exist_ok=True)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    started = server("start", runs, state, port)
    assert started.returncode == 0, started.stdout + started.stderr
    sweep_dir = runs / "m"
    log = root / "driver.log"
    try:
        proc = start_driver(("run", str(space), "--store", store, "--name", "m", "--runs-dir", str(runs),
                             "--num-cpus", str(num_cpus), "--no-live"), log, env={"MLFLOW_TRACKING_URI": uri})
        # down once two trainings have started and one block has been checkpointed (and logged)
        wait_for(proc, lambda: progress(sweep_dir)["start"] >= 2 and progress(sweep_dir)["checkpoint"] > 0,
                 timeout=300, what="trainings under way")
        before = progress(sweep_dir)
        stopped = server("stop", runs, state, port)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        down_at = time.monotonic()
        time.sleep(outage_s)
        after = progress(sweep_dir)
        restarted = server("start", runs, state, port)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        down_s = time.monotonic() - down_at
        exit_code = proc.wait(timeout=900)
        histories = metric_histories(uri, "m")
        audit = audit_sweep(runs, "m", total, tracking_uri=uri)
    finally:
        server("stop", runs, state, port)
    during = {k: after[k] - before[k] for k in ("start", "end", "ledger")}
    pending = len(list(sweep_dir.glob("work/*/mlflow_pending.json")))
    return Outage(audit=audit, exit_code=exit_code, log=log, histories=histories, during=during,
                  pending_left=pending, down_s=down_s)
