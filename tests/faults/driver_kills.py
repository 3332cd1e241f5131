"""SIGKILL a sweep's driver at seeded moments of its life, resume after each kill, audit the end.

The moments cycle through the phases of a sweep:

* ``scheduling``: Ray is up and Tune is placing trials;
* ``mid-trial``: a training has started and runs;
* ``checkpoint``: a trial has just written its checkpoint;
* ``mlflow logging``: a training has ended and its trial logs metrics and artifacts;
* ``after trial end``: a configuration has just entered the ledger.

Each kill waits for its phase's event, then a seeded random delay (short for the
narrow phases), then SIGKILLs the driver and starts ``tm23-sweep resume``.
"""

from __future__ import annotations

import json
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.sweeps import Audit, audit_sweep, flare_space, progress, start_driver, wait_for

#: (phase, what to wait for, delay range in s after it)
MOMENTS = (
    ("scheduling", "driver", (0.0, 1.5)),
    ("mid-trial", "start", (0.2, 1.5)),
    ("checkpoint", "checkpoint", (0.0, 0.05)),
    ("mlflow logging", "end", (0.0, 0.05)),
    ("after trial end", "ledger", (0.0, 0.3)),
)


@dataclass
class KillLoop:
    """Outcome of :func:`run_driver_kills`."""

    audit: Audit
    kills: list[dict] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    raylets: dict[int, int] = field(default_factory=dict)
    final_exit: int | None = None

    @property
    def injected(self) -> int:
        """Kills that actually hit a running driver."""
        return len(self.kills)


def run_driver_kills(root: Path, store: str, kills: int, seed: int, zetas: tuple[int, ...] = (2,),
                     num_cpus: int = 2) -> KillLoop:
    """Run the FLARE fault sweep in ``root``, killing its driver ``kills`` times; resume to the end."""
    from sweep.tune.processes import DRIVER_FILE

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    space, total = flare_space(root, "k", zetas)
    runs = root / "runs"
    sweep_dir = runs / "k"
    common = ("--runs-dir", str(runs), "--num-cpus", str(num_cpus), "--no-live")
    rng = random.Random(seed)
    loop = KillLoop(audit=None)  # type: ignore[arg-type]
    attempt = 0
    while True:
        before = progress(sweep_dir)
        started_at = time.time()
        args = ("run", str(space), "--store", store, "--name", "k") if attempt == 0 else ("resume", "k")
        log = root / f"driver{attempt}.log"
        loop.logs.append(log)
        proc = start_driver((*args, *common), log)
        if loop.injected < kills:
            phase, event, (low, high) = MOMENTS[loop.injected % len(MOMENTS)]
            if event == "driver":
                happened = lambda: _newer(sweep_dir / DRIVER_FILE, started_at)  # noqa: E731
            else:
                happened = lambda: progress(sweep_dir)[event] > before[event]  # noqa: E731
            try:
                wait_for(proc, happened, timeout=300, what=phase)
            except AssertionError:
                if proc.poll() == 0:  # the sweep finished before this moment came: no more kills
                    loop.final_exit = 0
                    break
                raise
            time.sleep(rng.uniform(low, high))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                loop.kills.append({"phase": phase, "attempt": attempt, **progress(sweep_dir)})
            elif proc.returncode == 0:
                loop.final_exit = 0
                break
        else:
            loop.final_exit = proc.wait(timeout=900)
            _note_raylets(sweep_dir / DRIVER_FILE, loop.raylets)
            break
        _note_raylets(sweep_dir / DRIVER_FILE, loop.raylets)
        attempt += 1
    loop.audit = audit_sweep(runs, "k", total)
    return loop


def _newer(path: Path, since: float) -> bool:
    try:
        return path.stat().st_mtime >= since
    except FileNotFoundError:
        return False


def _note_raylets(driver_file: Path, raylets: dict[int, int]) -> None:
    if driver_file.exists():
        for r in json.loads(driver_file.read_text()).get("raylets", []):
            raylets[r["pid"]] = r["start"]
