"""The MLflow server stops mid-sweep and comes back: trials go on and every metric reaches it."""

from __future__ import annotations

import pytest

from tests.faults.mlflow_outage import run_mlflow_outage
from tests.faults.sweeps import FLARE_STEPS


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_mlflow_server_restart_loses_no_metric(tmp_path, sweep_store):
    outage = run_mlflow_outage(tmp_path, sweep_store, outage_s=20.0, r_cuts=4)
    assert outage.exit_code == 0, outage.log.read_text()[-4000:]
    # the sweep went on while the server was down: trainings ended meanwhile
    assert outage.during["end"] >= 1, outage.during
    audit = outage.audit
    assert (audit.lost, audit.redone, audit.duplicates, audit.running) == (0, 0, 0, 0), audit
    # nothing lost: every configuration's validation curve is complete in the server's store
    assert len(outage.histories) == audit.total
    assert all(steps == FLARE_STEPS for steps in outage.histories.values()), outage.histories
    assert outage.pending_left == 0
