"""Ctrl-C (SIGINT) and a batch scheduler's SIGTERM stop a sweep cleanly; resume then loses and redoes nothing.

The trials are FLARE on 2 CPUs, so each runs ``mpiexec`` in a session of its own: the stop must
leave no ``mpiexec`` (or MPI rank) behind (:mod:`tests.faults.signals`).
"""

from __future__ import annotations

import pytest

from tests.faults.signals import stop_and_resume


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sigint_then_sigterm_stop_cleanly_and_resume_loses_nothing(tmp_path, sweep_store):
    result = stop_and_resume(tmp_path, sweep_store)
    for sig in ("SIGINT", "SIGTERM"):
        assert result.exits[sig] == 1 and result.hinted[sig], result.logs[-1].read_text()[-3000:]
        assert result.stop_s[sig] < 120
        assert result.strays[sig] == [], f"left running after {sig}"
    assert result.final_exit == 0, result.logs[-1].read_text()[-3000:]
    audit = result.audit
    assert (audit.lost, audit.redone, audit.duplicates, audit.running) == (0, 0, 0, 0), audit
    assert audit.resumed_starts >= 1  # a stopped training went on from its checkpoint
    assert result.clean("SIGINT") and result.clean("SIGTERM")
