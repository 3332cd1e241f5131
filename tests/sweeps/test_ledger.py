"""Ledger records, redo counters, the configuration lease, the driver lease and leftover clean-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from sweep.errors import InputError
from sweep.tune.ledger import (
    Ledger,
    LedgerRecord,
    config_lease,
    record_training_end,
    record_training_start,
    training_counts,
    training_starts,
)
from sweep.tune.processes import DRIVER_FILE, DriverLock, kill_leftovers, process_start_ticks


def _record(digest: str, value: float) -> LedgerRecord:
    return LedgerRecord(config_hash=digest, status="finished", model="flare", element="Cu", task="full", seed=0,
                        params={"r_cut": 4.0}, metrics={"val_forces_mae": value}, work_dir="w", finished_at=time.time())


def test_ledger_round_trip_and_listing(tmp_path):
    ledger = Ledger(tmp_path)
    assert ledger.get("abc") is None and ledger.records() == []
    ledger.put(_record("abc", 1.5))
    ledger.put(_record("def", 2.5))
    assert ledger.get("abc").metrics == {"val_forces_mae": 1.5}
    assert [r.config_hash for r in ledger.records()] == ["abc", "def"]
    assert not [p for p in (tmp_path / "ledger").iterdir() if p.name.startswith(".")]  # no temp files left
    assert ledger.work_dir("abc") == tmp_path / "work" / "abc"


def test_a_record_is_committed_once_and_never_replaced(tmp_path):
    ledger = Ledger(tmp_path)
    assert ledger.put(_record("abc", 1.5)) is True
    assert ledger.put(_record("abc", 9.9)) is False  # a twin (or the driver's stopped record) comes second
    assert ledger.get("abc").metrics == {"val_forces_mae": 1.5}
    assert [p.name for p in (tmp_path / "ledger").iterdir()] == ["abc.json"]


def test_training_counter_appends(tmp_path):
    assert training_starts(tmp_path) == []
    assert record_training_start(tmp_path, resumed=False, trial_id="t1") == 1
    assert record_training_start(tmp_path, resumed=True, trial_id="t2") == 2
    assert record_training_end(tmp_path, trial_id="t2", last_step=24) == 1
    counts = training_counts(tmp_path)
    assert [s["resumed_from_checkpoint"] for s in counts["starts"]] == [False, True]
    assert [(e["trial_id"], e["last_step"]) for e in counts["ends"]] == [("t2", 24)]


def test_a_training_finished_before_a_kill_keeps_its_last_step(tmp_path):
    # the driver died after metrics.json and the end were written, before the ledger record: the
    # resumed trial takes the saved metrics and logs them at the training's last step, not at 0
    from sweep.tune.trainable import _training

    (tmp_path / "metrics.json").write_text(json.dumps({"metrics": {"val_forces_mae": 1.5}, "info": {"n": 3}}))
    record_training_start(tmp_path, resumed=False, trial_id="t1")
    record_training_end(tmp_path, trial_id="t1", last_step=24)
    last = {"step": 0, "metrics": {}}
    metrics, info = _training("flare", {}, None, tmp_path, None, None, "t2", False, last)
    assert (metrics, info, last["step"]) == ({"val_forces_mae": 1.5}, {"n": 3}, 24)
    assert len(training_counts(tmp_path)["starts"]) == 1  # nothing trained again


def test_config_lease_serialises_two_holders(tmp_path):
    order = []

    def hold(tag):
        with config_lease(tmp_path / "w", owner={"tag": tag}):
            order.append(f"{tag}-in")
            time.sleep(0.2)
            order.append(f"{tag}-out")

    threads = [threading.Thread(target=hold, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # each holder leaves before the other enters
    assert order[0][0] == order[1][0] and order[2][0] == order[3][0]


def test_second_driver_is_refused(tmp_path):
    with DriverLock(tmp_path):
        code = ("import sys; from sweep.tune.processes import DriverLock\n"
                f"try:\n DriverLock(r'{tmp_path}').acquire()\nexcept Exception as e:\n print(e); sys.exit(3)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert out.returncode == 3 and "being run by another driver" in out.stdout
    DriverLock(tmp_path).acquire().release()  # free again once released


def test_leftovers_of_a_dead_instance_are_killed_and_nothing_else(tmp_path):
    # a stand-in "raylet" and two processes of its instance (as Ray marks them), one unrelated
    raylet = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    env = {**os.environ, "RAY_RAYLET_PID": str(raylet.pid)}
    members = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env) for _ in range(2)]
    other_env = {**os.environ, "RAY_RAYLET_PID": "1"}
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=other_env)
    try:
        (tmp_path / DRIVER_FILE).write_text(json.dumps({
            "pid": 999999, "raylets": [{"pid": raylet.pid, "start": process_start_ticks(raylet.pid)}]}))
        killed = kill_leftovers(tmp_path, grace_s=1.0)
        assert sorted(killed) == sorted([raylet.pid] + [m.pid for m in members])
        for p in [raylet, *members]:
            assert p.wait(timeout=10) is not None
        assert other.poll() is None
        # a raylet pid now used by another process (another start time) is left alone
        (tmp_path / DRIVER_FILE).write_text(json.dumps({"raylets": [{"pid": other.pid, "start": 1}]}))
        assert kill_leftovers(tmp_path) == [] and other.poll() is None
    finally:
        for p in [raylet, *members, other]:
            p.kill()
            p.wait()


def test_input_error_is_raised_for_unknown_sweep(tmp_path):
    from sweep.tune.runner import resume_sweep

    with pytest.raises(InputError, match="no sweep 'nope'"):
        resume_sweep("nope", runs_dir=tmp_path)
