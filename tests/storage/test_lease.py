"""Leases and create-if-absent commits: one winner among processes, takeover only of dead or expired claims."""

from __future__ import annotations

import json
import multiprocessing
import os
import time

import pytest

from sweep.storage import Lease, LeaseLost, PosixStorage
from sweep.storage.lease import STALE_GRACE_S, this_process


def _race_create(folder: str, tag: int, start: float, out) -> None:
    while time.time() < start:
        pass
    out.put((tag, PosixStorage(folder).create(os.path.join(folder, "commit.json"), f"{tag}".encode())))


def test_create_if_absent_has_exactly_one_winner_among_processes(tmp_path):
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    start = time.time() + 0.5
    procs = [ctx.Process(target=_race_create, args=(str(tmp_path), i, start, out)) for i in range(8)]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=20) for _ in procs)
    for p in procs:
        p.join()
    winners = [tag for tag, won in results.items() if won]
    assert len(winners) == 1
    assert (tmp_path / "commit.json").read_text() == str(winners[0])  # whole, and the winner's
    assert [p.name for p in tmp_path.iterdir()] == ["commit.json"]  # no temporaries left


def _hold(folder: str, tag: int, log: str) -> None:
    with Lease(folder, "cfg", owner={"tag": tag}, ttl_s=3.0).acquire(poll_s=0.05):
        with open(log, "a") as fh:
            fh.write(f"{tag} in {time.time()}\n")
        time.sleep(0.3)
        with open(log, "a") as fh:
            fh.write(f"{tag} out {time.time()}\n")


def test_processes_take_turns_on_one_lease(tmp_path):
    ctx = multiprocessing.get_context("fork")
    log = tmp_path / "log"
    procs = [ctx.Process(target=_hold, args=(str(tmp_path / "w"), i, str(log))) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    events = [line.split() for line in log.read_text().splitlines()]
    assert len(events) == 8
    for k in range(0, 8, 2):  # every holder left before the next one entered
        assert events[k][0] == events[k + 1][0] and events[k][1] == "in" and events[k + 1][1] == "out"


def _foreign_lease(folder, generation: int, expires_at: float) -> None:
    """A lease record written by a process of another node (another host name)."""
    owner = {**this_process(), "host": "other-node", "pid": 1}
    (folder / f"cfg.{generation:08d}.json").write_text(json.dumps({"owner": owner, "expires_at": expires_at}))


def test_a_live_foreign_lease_blocks_and_an_expired_one_is_taken_over(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    _foreign_lease(tmp_path, 1, time.time() + 30)
    lease = Lease(tmp_path, "cfg")
    assert lease.try_acquire() is False
    with pytest.raises(TimeoutError, match="other-node pid 1"):
        lease.acquire(timeout_s=0.2, poll_s=0.05)
    # the other node stopped renewing: past its expiry plus the grace, the lease is free
    (tmp_path / "cfg.00000001.json").unlink()
    _foreign_lease(tmp_path, 1, time.time() - STALE_GRACE_S - 1)
    assert lease.try_acquire() is True and lease.generation == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.00000002.json"]
    lease.release()
    assert lease.current().released


def test_a_dead_process_of_this_machine_frees_its_lease_at_once(tmp_path):
    ctx = multiprocessing.get_context("fork")

    def take_and_die(folder):
        Lease(folder, "cfg").try_acquire()
        os._exit(0)  # no release: as a SIGKILLed trial

    p = ctx.Process(target=take_and_die, args=(str(tmp_path),))
    p.start()
    p.join()
    holder = Lease(tmp_path, "cfg").current()
    assert holder is not None and not holder.released and holder.expires_at > time.time()
    assert Lease(tmp_path, "cfg").try_acquire() is True


def test_a_holder_whose_lease_was_taken_over_is_told_so(tmp_path):
    lease = Lease(tmp_path, "cfg", ttl_s=2.0)
    lease.acquire()
    lease.check()
    # another node saw it expired (say, this node was cut off) and took generation 2
    _foreign_lease(tmp_path, 2, time.time() + 30)
    with pytest.raises(LeaseLost, match="other-node"):
        lease.check()
    with pytest.raises(LeaseLost):
        lease.renew()
    lease.release()  # releasing a lost lease leaves the new holder's record alone
    assert Lease(tmp_path, "cfg").current().owner["host"] == "other-node"


def test_renewal_keeps_the_lease_beyond_its_ttl(tmp_path):
    with Lease(tmp_path, "cfg", ttl_s=0.6) as lease:
        first = lease.current().expires_at
        time.sleep(1.5)
        assert lease.current().expires_at > first + 0.5  # renewed in the background
        lease.check()
    assert Lease(tmp_path, "cfg").current().released
