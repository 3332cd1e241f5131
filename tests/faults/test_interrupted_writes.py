"""SIGKILL the ingest, a ledger write and an export/report folder swap mid-write: old or new, never half."""

from __future__ import annotations

import pytest

from tests.conftest import write_emt_archive
from tests.faults.interrupted import run_kills


@pytest.fixture(scope="module")
def two_archives(tmp_path_factory):
    root = tmp_path_factory.mktemp("two-archives")
    a = write_emt_archive(root / "a", elements=("Cu",), frames_per_temperature=10)
    b = write_emt_archive(root / "b", elements=("Cu", "Au"), frames_per_temperature=20, seed=5)
    return [str(a), str(b)]


@pytest.mark.parametrize("kind", ["ingest", "ledger", "export", "report"])
def test_killed_writer_leaves_old_or_new(kind, two_archives, tmp_path):
    result = run_kills(kind, tmp_path, two_archives, kills=4, seed=sum(map(ord, kind)), max_wait_s=2.5)
    assert result["survived"] == result["injected"], result["seen"]
    # every kill lands after a first complete write, so one whole version is always visible
    assert all(s in ("A", "B") for s in result["seen"]), result["seen"]
