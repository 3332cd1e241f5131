"""A node of a ray.cluster_utils.Cluster dies mid-sweep: its trial is rescheduled and the sweep completes."""

from __future__ import annotations

import pytest

from tests.faults.node_loss import run_node_loss


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_node_lost_mid_sweep_completes_elsewhere(tmp_path, sweep_store):
    audit, seen = run_node_loss(tmp_path, sweep_store, workers=2)
    removed = seen["removed"]
    assert removed is not None, "no node was removed"
    assert seen["nodes_left"] == 1 and seen["complete"] and not seen["errors"], seen
    assert (audit.lost, audit.redone, audit.duplicates, audit.running) == (0, 0, 0, 0), audit
    # the lost node's training started again on the survivor, from its checkpoint, and ended once
    starts, ends = removed["starts"], removed["ends"]
    assert len(starts) == 2 and len(ends) == 1, removed
    assert starts[1]["at"] > removed["at"] and starts[1]["resumed_from_checkpoint"], removed
