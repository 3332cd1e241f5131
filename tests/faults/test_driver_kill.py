"""SIGKILL the sweep driver once in each phase of a sweep's life, resume each time: nothing lost or redone."""

from __future__ import annotations

import json
import time

import pytest

from sweep.tune.processes import instance_processes, process_start_ticks
from tests.faults.driver_kills import MOMENTS, run_driver_kills
from tests.faults.sweeps import FLARE_STEPS, metric_histories

SEED = 20240316


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_driver_sigkill_in_every_phase_then_resume(tmp_path, sweep_store):
    loop = run_driver_kills(tmp_path, sweep_store, kills=len(MOMENTS), seed=SEED)
    runs, total = tmp_path / "runs", loop.audit.total

    assert loop.final_exit == 0, loop.logs[-1].read_text()[-4000:]
    # every phase was hit while work was under way
    assert [k["phase"] for k in loop.kills] == [m[0] for m in MOMENTS]
    assert all(k["ledger"] < total for k in loop.kills), loop.kills
    assert any(k["ledger"] > 0 for k in loop.kills) and any(k["start"] > k["end"] for k in loop.kills)
    # the audit: nothing lost, nothing finished trained again, one closed MLflow run each
    audit = loop.audit
    assert (audit.lost, audit.redone, audit.duplicates, audit.running) == (0, 0, 0, 0), audit
    assert audit.finished == total
    assert f"{total} configurations in the ledger" in " ".join(loop.logs[-1].read_text().split())
    # a training interrupted with a checkpoint went on from it
    assert audit.resumed_starts >= 1, audit
    # every configuration's validation curve is in MLflow once: blocks at 4, 8, ..., 24 frames, each
    # point once, also where a kill came between the final metrics and the ledger record
    histories = metric_histories(f"sqlite:///{runs / 'mlruns.db'}", "k")
    assert len(histories) == total
    assert all(steps == FLARE_STEPS for steps in histories.values()), histories
    ledger = [json.loads(p.read_text()) for p in (runs / "k" / "ledger").glob("*.json")]
    assert {r["config_hash"] for r in ledger} == set(histories)
    # nothing left of the killed drivers' Ray instances
    time.sleep(1.0)
    for pid, start in loop.raylets.items():
        alive = process_start_ticks(pid)
        if alive is None or alive == start:
            assert instance_processes(pid) == [], f"leftovers of raylet {pid}"
