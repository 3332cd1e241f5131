"""SIGKILL the Ray worker process of running trials; Tune's FailureConfig restarts them, from their checkpoints.

The driver stays up. Each kill picks a training that has checkpointed at least one
block of frames and has not ended, and kills the process that runs it (its pid is in
``work/<hash>/trainings.json``). The restarted trial finds the checkpoint in the
configuration's work folder and goes on from there. Blocks reported twice by a trial
(Tune's ``result.json``) are work the restart redid.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sweep.tune.ledger import training_counts
from tests.faults.sweeps import Audit, audit_sweep, current_trainings, flare_space, start_driver, wait_for


@dataclass
class WorkerKills:
    """Outcome of :func:`run_worker_kills`."""

    audit: Audit
    exit_code: int
    log: Path
    kills: list[dict] = field(default_factory=list)
    #: per killed configuration: its trainings.json and the blocks its trials reported twice
    outcomes: list[dict] = field(default_factory=list)

    @property
    def blocks_redone(self) -> int:
        """Frame blocks that a restarted trial trained and reported again."""
        return sum(o["blocks_reported_twice"] for o in self.outcomes)


def run_worker_kills(root: Path, store: str, kills: int, seed: int, num_cpus: int = 2, r_cuts: int = 6) -> WorkerKills:
    """Run the FLARE fault sweep (``r_cuts`` r_cut values) in ``root``; kill ``kills`` trial workers mid-training."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    space, total = flare_space(root, "w", r_cuts=r_cuts)
    runs = root / "runs"
    sweep_dir = runs / "w"
    log = root / "driver.log"
    rng = random.Random(seed)
    proc = start_driver(("run", str(space), "--store", store, "--name", "w", "--runs-dir", str(runs),
                         "--num-cpus", str(num_cpus), "--no-live"), log)
    done: list[dict] = []
    killed_work: set[Path] = set()
    for _ in range(kills):
        # a training with at least one checkpointed block, not one killed before, not near its end
        def victim() -> dict | None:
            found = [t for t in current_trainings(sweep_dir)
                     if t["work"] not in killed_work and 4 <= t["frames_added"] <= 16]
            return found[0] if found else None

        wait_for(proc, lambda: victim() is not None, timeout=300, what="a checkpointed training")
        time.sleep(rng.uniform(0.0, 0.5))  # somewhere inside its next block
        target = victim()
        if target is None:
            continue
        try:
            os.kill(target["pid"], signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed_work.add(target["work"])
        done.append({**target, "at": time.time()})
    exit_code = proc.wait(timeout=900)
    outcomes = [_outcome(sweep_dir, k) for k in done]
    return WorkerKills(audit=audit_sweep(runs, "w", total), exit_code=exit_code, log=log, kills=done,
                       outcomes=outcomes)


def _outcome(sweep_dir: Path, kill: dict) -> dict:
    counts = training_counts(Path(kill["work"]))
    trial_ids = {s.get("trial_id") for s in counts["starts"]}
    steps: Counter = Counter()
    for trial_id in trial_ids:
        results = Path(sweep_dir) / str(trial_id) / "result.json"
        if results.exists():
            for line in results.read_text().splitlines():
                row = json.loads(line)
                if row.get("step") and not row.get("final"):
                    steps[int(row["step"])] += 1
    return {"work": str(kill["work"]), "frames_at_kill": kill["frames_added"], "starts": counts["starts"],
            "ends": counts["ends"], "blocks_reported_twice": sum(n - 1 for n in steps.values() if n > 1),
            "steps": sorted(steps)}
