"""Subprocess side of the interrupted-write tests: repeat one kind of write until killed.

``python -m tests.faults.writer KIND TARGET SOURCE...`` alternates between two versions
(A and B) of an ingest, a ledger record, an export folder or a report folder, forever,
printing "wrote" after each completed write.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _ledger_record(version: int):
    from sweep.tune.ledger import LedgerRecord

    # large enough that a write takes a while: a wide metrics dict
    metrics = {f"m{i}": float(version * 1000 + i) for i in range(20000)}
    return LedgerRecord(config_hash="f" * 16, status="finished", model="flare", element="Cu", task="full", seed=0,
                        params={"version": version}, metrics=metrics, work_dir="w", finished_at=float(version))


def folder_version(version: int) -> dict[str, bytes]:
    """The files of version ``version`` of an export-like folder (a few MB, several files)."""
    return {f"part{i}.bin": bytes([version]) * 400_000 for i in range(6)} | {"manifest.json": b'{"v": %d}' % version}


def main(kind: str, target: str, *sources: str) -> None:
    """Write version A, then B, then A ... of ``kind`` at ``target`` until killed."""
    from sweep.data import ingest_archive  # noqa: F401  imported before "ready": kills land in writes
    from sweep.tune.ledger import Ledger  # noqa: F401

    print("ready", flush=True)
    version = 1
    while True:
        version = 1 - version
        if kind == "ingest":
            from sweep.data import ingest_archive

            ingest_archive(sources[version], target, progress=False)
        elif kind == "ledger":
            from sweep.tune.ledger import Ledger

            Ledger(target).put(_ledger_record(version + 1))
        elif kind in ("export", "report"):
            # the writers' own atomic folder swap (sweep.analysis.export/report use atomic_directory)
            from sweep.io import atomic_directory, atomic_write_bytes

            with atomic_directory(target) as tmp:
                for name, data in folder_version(version + 1).items():
                    atomic_write_bytes(tmp / name, data)
        else:
            raise SystemExit(f"unknown kind {kind}")
        print("wrote", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
