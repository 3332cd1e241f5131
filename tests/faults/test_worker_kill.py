"""SIGKILL a trial's worker process mid-training: Tune restarts the trial, which goes on from its checkpoint."""

from __future__ import annotations

import pytest

from tests.faults.sweeps import FLARE_STEPS
from tests.faults.worker_kills import run_worker_kills


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_worker_sigkill_resumes_from_checkpoint(tmp_path, sweep_store):
    result = run_worker_kills(tmp_path, sweep_store, kills=1, seed=7, r_cuts=4)
    assert result.exit_code == 0, result.log.read_text()[-4000:]
    assert len(result.kills) == 1
    audit = result.audit
    assert (audit.lost, audit.redone, audit.duplicates, audit.running) == (0, 0, 0, 0), audit
    (outcome,) = result.outcomes
    starts, ends = outcome["starts"], outcome["ends"]
    killed_at = result.kills[0]["at"]
    # started twice (the killed one and Tune's restart), ended once
    assert len(starts) == 2 and len(ends) == 1, outcome
    assert starts[0]["at"] < killed_at < starts[1]["at"]
    assert starts[1]["resumed_from_checkpoint"] and starts[1]["pid"] != starts[0]["pid"]
    # no finished block trained again: every block of frames reported once, all of them there
    assert outcome["blocks_reported_twice"] == 0, outcome
    assert outcome["steps"] == FLARE_STEPS, outcome
