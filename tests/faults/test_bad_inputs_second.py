"""The second bad-input corpus, tried through the CLI: one clear line, non-zero exit, nothing half-written."""

from __future__ import annotations

import errno
import os

import pytest

from tests.faults.corpus import make_workspace
from tests.faults.corpus_second import SECOND_CORPUS, Case, judge, race_two_runs


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("bad-inputs-2"))


def test_second_corpus_is_distinct():
    assert len({c.name for c in SECOND_CORPUS}) == len(SECOND_CORPUS) >= 16


@pytest.mark.parametrize("case", SECOND_CORPUS, ids=lambda c: f"{c.kind}-{c.name}")
def test_bad_input_is_refused_clearly(case: Case, workspace, tmp_path):
    if case.needs_root and os.geteuid() != 0:
        pytest.skip("mounts a small tmpfs: root only")
    outcome = judge(case, workspace, tmp_path / case.name)
    assert outcome.clear, (outcome.problems, outcome.stderr)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_runs_racing_on_one_name(tmp_path, sweep_store):
    outcome = race_two_runs(tmp_path, sweep_store)
    assert outcome.clear, (outcome.problems, outcome.stderr)


def test_a_ledger_write_on_a_full_disk_leaves_nothing_half_written(tmp_path):
    import subprocess
    import time

    from sweep.tune.ledger import Ledger, LedgerRecord

    if os.geteuid() != 0:
        pytest.skip("mounts a small tmpfs: root only")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], check=True)
    try:
        (mount / "filler").write_bytes(b"\0" * (60 * 1024))
        record = LedgerRecord(config_hash="abc", status="finished", model="flare", element="Cu", task="full", seed=0,
                              params={"note": "x" * 20_000}, metrics={"val_forces_mae": 1.0}, work_dir="w",
                              finished_at=time.time())
        with pytest.raises(OSError) as raised:
            Ledger(mount / "s").put(record)
        assert raised.value.errno == errno.ENOSPC
        assert Ledger(mount / "s").get("abc") is None
        assert [p.name for p in (mount / "s" / "ledger").iterdir()] == []  # no temporary left
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
