"""Stop a sweep with Ctrl-C (SIGINT) and with a batch scheduler's SIGTERM, mid-training, then resume it.

The trials are FLARE on 2 CPUs, so each runs ``mpiexec`` in a session of its own, which a
stopped Ray worker does not take down by itself: the stop must leave no ``mpiexec`` (or
MPI rank) behind.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.faults.sweeps import Audit, audit_sweep, progress, start_driver, wait_for

SPACE = """
elements: [Cu, Au]
task: full
search: {algorithm: grid}
max_failures: 2
studies:
  - model: flare
    resources: {cpus: 2}
    params:
      r_cut: {grid: [4.0, 4.5]}
      n_max: 4
      l_max: 2
      sparse_per_frame: 6
      block_size: 4
      optimize_every: 4
      maxiter: 50
"""


def _mpi_processes(root: psutil.Process) -> list[psutil.Process]:
    try:
        family = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [p for p in family if _named(p, ("mpiexec", "hydra_pmi_proxy", "flare_worker"))]


def _named(proc: psutil.Process, names: tuple[str, ...]) -> bool:
    try:
        text = " ".join(proc.cmdline())
    except psutil.Error:
        return False
    return any(name in text for name in names)


def _strays(before: set[int]) -> list[str]:
    """MPI processes of this machine that were not there before the sweep (orphans reparent to 1)."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid not in before and _named(proc, ("mpiexec", "hydra_pmi_proxy", "sweep.trainers.flare_worker")):
            try:
                found.append(" ".join(proc.cmdline())[:160])
            except psutil.Error:
                pass
    return found


@dataclass
class SignalStops:
    """What the stops and the final resume left: per signal its exit status, seconds to stop and strays."""

    exits: dict[str, int] = field(default_factory=dict)
    stop_s: dict[str, float] = field(default_factory=dict)
    strays: dict[str, list[str]] = field(default_factory=dict)
    hinted: dict[str, bool] = field(default_factory=dict)
    final_exit: int | None = None
    audit: Audit | None = None
    logs: list[Path] = field(default_factory=list)

    def clean(self, sig: str) -> bool:
        """Stopped by ``sig``: exit 1 with the resume hint, within two minutes, nothing left running."""
        return (self.exits.get(sig) == 1 and self.hinted.get(sig, False) and self.stop_s.get(sig, 1e9) < 120
                and not self.strays.get(sig) and self.final_exit == 0 and self.audit is not None
                and self.audit.clean)


def stop_and_resume(root: Path, store: str) -> SignalStops:
    """SIGINT, then (after a resume) SIGTERM, each once an MPI training has checkpointed; then resume to the end."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "space.yaml").write_text(SPACE)
    runs, name, total = root / "runs", "sig", 4
    before = {p.pid for p in psutil.process_iter()}
    args = ("run", str(root / "space.yaml"), "--store", store, "--runs-dir", str(runs), "--name", name,
            "--num-cpus", "2", "--no-live")
    again = ("resume", name, "--runs-dir", str(runs), "--num-cpus", "2", "--no-live")
    result = SignalStops()
    for k, sig in enumerate((signal.SIGINT, signal.SIGTERM)):
        log = root / f"driver-{k}.log"
        result.logs.append(log)
        driver = start_driver(args if k == 0 else again, log)
        parent = psutil.Process(driver.pid)
        seen = progress(runs / name)["checkpoint"]
        wait_for(driver, lambda: bool(_mpi_processes(parent)) and progress(runs / name)["checkpoint"] > seen,
                 timeout=300, what="a checkpointed MPI training")
        stopped_at = time.monotonic()
        driver.send_signal(sig)
        driver.wait(timeout=120)
        result.stop_s[sig.name] = time.monotonic() - stopped_at
        result.exits[sig.name] = driver.returncode
        result.hinted[sig.name] = f"tm23-sweep resume {name}" in log.read_text()
        time.sleep(1.0)
        result.strays[sig.name] = _strays(before)
    log = root / "driver-final.log"
    result.logs.append(log)
    final = start_driver(again, log)
    result.final_exit = final.wait(timeout=600)
    result.audit = audit_sweep(runs, name, total)
    return result
