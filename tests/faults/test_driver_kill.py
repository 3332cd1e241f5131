"""SIGKILL the sweep driver three times at seeded random moments, resume each time: nothing lost or redone."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time

import pytest

from sweep.tune.processes import DRIVER_FILE, instance_processes, process_start_ticks
from tests.sweeps.conftest import REPO, cli_command, cli_env, mlflow_runs, write_space

SPACE = """
elements: [Cu, Au]
task: full
search: {algorithm: grid}
studies:
  - model: flare
    resources: {cpus: 1}
    params:
      r_cut: {grid: [4.0, 4.2, 4.4, 4.6, 4.8, 5.0]}
      n_max: 4
      l_max: 2
      sparse_per_frame: 6
      block_size: 4
      optimize_every: 4
      maxiter: 50
"""
KILLS = 3
TRIALS = 12
SEED = 20240316


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_driver_sigkill_three_times_then_resume(tmp_path, sweep_store):
    space = write_space(tmp_path, SPACE, "k.yaml")
    runs = tmp_path / "runs"
    common = ("--runs-dir", str(runs), "--num-cpus", "2", "--no-live")
    rng = random.Random(SEED)
    raylets = {}
    logs = []
    killed_during = []
    for attempt in range(KILLS + 1):
        before = _progress(runs / "k")
        args = ("run", str(space), "--store", sweep_store, "--name", "k") if attempt == 0 else ("resume", "k")
        log = tmp_path / f"driver{attempt}.log"
        logs.append(log)
        with open(log, "w") as out:
            proc = subprocess.Popen(cli_command(*args, *common), cwd=REPO, env=cli_env(), stdout=out,
                                    stderr=subprocess.STDOUT)
            if attempt < KILLS:
                # a seeded moment while this driver trains: after a training starts in it
                # (mid-trial, checkpointing) or after a trial finishes (logging, ledger)
                event = ("start", "ledger", "start")[attempt]
                _wait_for(proc, lambda: _progress(runs / "k")[event] > before[event])
                time.sleep(rng.uniform(0.0, 1.0))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed_during.append(_progress(runs / "k"))
            else:
                assert proc.wait(timeout=600) == 0, log.read_text()[-4000:]
        driver = runs / "k" / DRIVER_FILE
        if driver.exists():
            for r in json.loads(driver.read_text()).get("raylets", []):
                raylets[r["pid"]] = r["start"]

    # the kills came while work was under way, not before or after it
    assert all(0 < p["ledger"] < TRIALS for p in killed_during[1:]), killed_during
    sweep_dir = runs / "k"
    trials = {p.name for p in sweep_dir.iterdir() if p.is_dir() and (p / "params.json").exists()}
    ledger = {p.stem: json.loads(p.read_text()) for p in (sweep_dir / "ledger").glob("*.json")}
    # every trial finished, each configuration once
    assert len(ledger) == TRIALS and all(r["status"] == "finished" for r in ledger.values())
    final = logs[-1].read_text()
    assert f"{TRIALS} configurations in the ledger" in " ".join(final.split())
    # no trial trained twice: every configuration's training ran to its end at most once,
    # and no training started again after one had ended
    for digest in ledger:
        counts = json.loads((sweep_dir / "work" / digest / "trainings.json").read_text())
        assert len(counts["ends"]) <= 1, (digest, counts)
        assert counts["starts"], digest
        if counts["ends"]:
            assert all(s["at"] <= counts["ends"][0]["at"] for s in counts["starts"]), (digest, counts)
        assert (sweep_dir / "work" / digest / "metrics.json").exists()
    # one MLflow run per configuration, none left RUNNING
    df = mlflow_runs(runs, "k")
    assert len(df) == len(ledger) == TRIALS
    assert set(df["status"]) == {"FINISHED"}
    assert set(df["tags.config_hash"]) == set(ledger)
    assert set(df["tags.trial_id"]) <= trials
    # nothing left of the killed drivers' Ray instances
    time.sleep(1.0)
    for pid, start in raylets.items():
        alive = process_start_ticks(pid)
        if alive is None or alive == start:
            assert instance_processes(pid) == [], f"leftovers of raylet {pid}"


def _progress(sweep_dir, cached=None) -> dict[str, int]:
    """Training starts and ledger records so far (or ``cached`` when given)."""
    if cached is not None:
        return cached
    starts = 0
    for path in sweep_dir.glob("work/*/trainings.json"):
        try:
            starts += len(json.loads(path.read_text())["starts"])
        except (ValueError, KeyError):
            pass
    return {"start": starts, "ledger": len(list(sweep_dir.glob("ledger/*.json")))}


def _wait_for(proc: subprocess.Popen, condition, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the driver ended before the kill"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)
