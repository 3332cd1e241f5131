"""What every sweep fault shares: a small FLARE sweep, a driver subprocess, progress probes and the audit.

The audit is the fault suite's contract: after a fault and whatever recovery
the system does, count

* ``lost``: configurations of the space without a finished ledger record;
* ``redone``: configurations whose training ran again after it had ended once
  (more than one end, or a start after the first end);
* ``duplicate runs``: MLflow runs beyond one per configuration, plus runs left RUNNING.

Both the fault tests (tests/faults/test_*.py) and ``benchmarks/faults.py`` use it.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sweep.tune.ledger import COUNTER_FILE, training_counts
from tests.sweeps.conftest import REPO, cli_command, cli_env, mlflow_runs

#: FLARE trials of 1 CPU (up to 6 r_cut × Cu, Au × the ζ values), 6 frame blocks each, checkpointed per block.
FLARE_SPACE = """
elements: [Cu, Au]
task: full
search: {{algorithm: grid}}
max_failures: 3
studies:
  - model: flare
    resources: {{cpus: 1}}
    params:
      r_cut: {{grid: {r_cuts}}}
      zeta: {{grid: {zetas}}}
      n_max: 4
      l_max: 2
      sparse_per_frame: 6
      block_size: 4
      optimize_every: 4
      maxiter: 50
"""


#: The steps every configuration of the FLARE fault space reports (and logs to MLflow once each):
#: a block of 4 of its 24 training frames at a time.
FLARE_STEPS = [4, 8, 12, 16, 20, 24]


#: The fault space's r_cut values; a scenario may take the first few.
R_CUTS = (4.0, 4.2, 4.4, 4.6, 4.8, 5.0)


def flare_space(folder: Path, name: str, zetas: tuple[int, ...] = (2,), r_cuts: int = len(R_CUTS)) -> tuple[Path, int]:
    """Write the fault suite's FLARE space as ``folder/name.yaml`` with the first ``r_cuts`` r_cut values.

    Returns (path, number of trials).
    """
    path = Path(folder) / f"{name}.yaml"
    path.write_text(FLARE_SPACE.format(zetas=list(zetas), r_cuts=list(R_CUTS[:r_cuts])))
    return path, 2 * r_cuts * len(zetas)


@dataclass
class FaultTally:
    """One fault kind's line: how many injected and survived, and the audit's counts summed."""

    kind: str
    injected: int = 0
    survived: int = 0
    lost: int = 0
    redone: int = 0
    duplicates: int = 0
    notes: list[str] = field(default_factory=list)

    def add(self, audit: "Audit", survived: bool) -> None:
        """Count one injected fault and its audit."""
        self.injected += 1
        self.survived += int(survived and audit.clean)
        self.lost += audit.lost
        self.redone += audit.redone
        self.duplicates += audit.duplicates

    def line(self) -> str:
        """The line ``benchmarks/faults.py`` prints."""
        return (f"{self.kind}: injected {self.injected}, survived {self.survived}, trials lost {self.lost}, "
                f"trials redone {self.redone}, duplicate runs {self.duplicates}")


@dataclass
class Audit:
    """What a sweep folder says after the sweep ended."""

    total: int
    finished: int
    lost: int
    redone: int
    duplicates: int
    running: int
    starts: int
    resumed_starts: int

    @property
    def clean(self) -> bool:
        """Nothing lost, nothing finished trained again, one closed MLflow run per configuration."""
        return self.lost == 0 and self.redone == 0 and self.duplicates == 0


def audit_sweep(runs: Path, name: str, total: int, tracking_uri: str | None = None, mlflow_table=None) -> Audit:
    """Count lost trials, redone trainings and duplicate MLflow runs of sweep ``name`` under ``runs``.

    MLflow is read from ``tracking_uri`` (default: the runs folder's sqlite store), unless
    ``mlflow_table`` gives ``mlflow.search_runs``'s table already (read where the server is reachable).
    """
    sweep_dir = Path(runs) / name
    ledger = {p.stem: json.loads(p.read_text()) for p in (sweep_dir / "ledger").glob("*.json")}
    finished = sum(1 for r in ledger.values() if r["status"] == "finished")
    redone = starts = resumed = 0
    for counter in (sweep_dir / "work").glob(f"*/{COUNTER_FILE}"):
        counts = training_counts(counter.parent)
        starts += len(counts["starts"])
        resumed += sum(1 for s in counts["starts"] if s.get("resumed_from_checkpoint"))
        ends = counts["ends"]
        if len(ends) > 1 or (ends and any(s["at"] > ends[0]["at"] for s in counts["starts"])):
            redone += 1
    df = mlflow_runs(runs, name, tracking_uri) if mlflow_table is None else mlflow_table
    per_config = df.groupby("tags.config_hash").size() if len(df) else []
    duplicates = int(sum(n - 1 for n in per_config))
    running = int((df["status"] == "RUNNING").sum()) if len(df) else 0
    return Audit(total=total, finished=finished, lost=total - finished, redone=redone,
                 duplicates=duplicates + running, running=running, starts=starts, resumed_starts=resumed)


def progress(sweep_dir: Path) -> dict[str, float]:
    """Training starts and ends, ledger records and the newest checkpoint's time, so far."""
    starts = ends = 0
    for path in Path(sweep_dir).glob(f"work/*/{COUNTER_FILE}"):
        counts = training_counts(path.parent)  # written atomically: whole or absent
        starts += len(counts["starts"])
        ends += len(counts["ends"])
    checkpoints = []
    for path in Path(sweep_dir).glob("work/*/checkpoint/*/progress.json"):
        if path.parent.name.startswith("."):
            continue  # a checkpoint being written (a temporary folder, renamed or removed at any moment)
        try:
            checkpoints.append(path.stat().st_mtime)
        except FileNotFoundError:  # replaced by a newer checkpoint between the listing and the stat
            continue
    return {"start": starts, "end": ends, "ledger": len(list(Path(sweep_dir).glob("ledger/*.json"))),
            "checkpoint": max(checkpoints, default=0.0)}


def current_trainings(sweep_dir: Path) -> list[dict]:
    """Trainings started and not ended: ``{"work", "pid", "trial_id", "frames_added"}`` each."""
    out = []
    for path in Path(sweep_dir).glob(f"work/*/{COUNTER_FILE}"):
        counts = training_counts(path.parent)
        if counts["starts"] and not counts["ends"]:
            last = counts["starts"][-1]
            out.append({"work": path.parent, "pid": last["pid"], "trial_id": last.get("trial_id"),
                        "frames_added": checkpointed_frames(path.parent)})
    return out


def checkpointed_frames(work: Path) -> int:
    """Frames in the FLARE checkpoint of a configuration's work folder (0 without one)."""
    for path in Path(work).glob("checkpoint/*/progress.json"):
        try:
            return int(json.loads(path.read_text())["frames_added"])
        except (OSError, ValueError, KeyError):
            return 0
    return 0


def start_driver(args: tuple[str, ...], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``tm23-sweep ARGS`` with its output in ``log``."""
    out = open(log, "w")
    proc = subprocess.Popen(cli_command(*args), cwd=REPO, env=cli_env(env), stdout=out, stderr=subprocess.STDOUT)
    out.close()
    return proc


def wait_for(proc: subprocess.Popen | None, condition: Callable[[], bool], timeout: float = 300,
             what: str = "progress") -> None:
    """Poll ``condition`` every 20 ms; fail if ``proc`` ends first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the driver ended (exit {proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.02)


def metric_histories(tracking_uri: str, name: str, metric: str = "val_forces_mae") -> dict[str, list[int]]:
    """The logged steps of ``metric`` per configuration hash, as the tracking store has them."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    out = {}
    for run in client.search_runs([experiment.experiment_id], max_results=10_000):
        history = client.get_metric_history(run.info.run_id, metric)
        out[run.data.tags["config_hash"]] = sorted(m.step for m in history)
    return out
