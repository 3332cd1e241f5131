"""The sweep's ledger: one record per finished configuration, so nothing is trained twice.

Tune's own experiment state is a snapshot taken every few seconds; after a driver is
killed it can re-run trials that had finished just before (measured with Ray 2.60).
The ledger is the commit point instead. A trial writes its record, atomically, once
its training is done, its metrics are scored and its MLflow run is closed. A trial whose
configuration hash is already in the ledger reports the recorded metrics and returns.

Layout under the sweep folder (``<runs root>/<sweep name>/``)::

    ledger/<config hash>.json         one record per finished configuration
    work/<config hash>/               run_training's out_dir: checkpoint/, model/, export/, ...
    work/<config hash>/trainings.json every start and end of a real training (the redo counter)
    work/<config hash>/lease.*.json   the lease of the trial working on this configuration

The sweep folder lives under the storage root, which every node of a cluster mounts at the
same path (:mod:`sweep.storage`). A record is committed by create-if-absent, so of two trials
that finish one configuration (twins, or a trial and the driver recording a stopped one)
exactly one record lands and it is never overwritten. The work folder lives beside Tune's
trial folders rather than inside them, so that a restored or restarted trial finds the
trainer's checkpoints whatever its trial id, on whatever node it restarts; only the holder
of the configuration's lease writes there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

from pydantic import BaseModel, ConfigDict

from sweep.errors import InputError
from sweep.io import atomic_write_json
from sweep.storage import Lease, PosixStorage

LEDGER_DIR = "ledger"
WORK_DIR = "work"
COUNTER_FILE = "trainings.json"
#: The configuration lease's files in a work folder: ``lease.<generation>.json``.
LEASE_NAME = "lease"


def config_hash(model: str, element: str, task: str, seed: int, params: Mapping[str, Any]) -> str:
    """Hash of everything that decides a training's outcome (16 hex digits).

    ``params`` should be the trainer's validated params with defaults filled in, so that
    writing a default explicitly or leaving it out gives the same hash.
    """
    canonical = json.dumps({"model": model, "element": element, "task": task, "seed": seed,
                            "params": dict(params)}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class LedgerRecord(BaseModel):
    """A finished configuration: what ran, its final metrics and where it is logged."""

    model_config = ConfigDict(extra="ignore")

    config_hash: str
    status: str  # "finished", or "stopped" when a scheduler ended it early
    model: str
    element: str
    task: str
    seed: int
    params: dict[str, Any]
    metrics: dict[str, float]
    info: dict[str, Any] = {}
    trial_id: str | None = None
    mlflow_run_id: str | None = None
    work_dir: str
    node: dict[str, Any] = {}
    #: Seconds spent in the trial's phases: resolve, setup, run_training, logging.
    timings: dict[str, float] = {}
    finished_at: float


class Ledger:
    """The ledger of one sweep folder."""

    def __init__(self, sweep_dir: str | Path):
        self.sweep_dir = Path(sweep_dir)
        self.root = self.sweep_dir / LEDGER_DIR

    def path(self, digest: str) -> Path:
        """Where the record of ``digest`` lives."""
        return self.root / f"{digest}.json"

    def get(self, digest: str) -> LedgerRecord | None:
        """The record of ``digest``, or ``None`` when that configuration has not finished."""
        return self._read(self.path(digest))

    @staticmethod
    def _read(path: Path) -> LedgerRecord | None:
        try:
            return LedgerRecord.model_validate_json(path.read_text())
        except FileNotFoundError:
            return None
        except (ValueError, UnicodeDecodeError) as exc:  # pydantic's ValidationError is a ValueError
            raise InputError(path, "ledger record", f"unreadable ({str(exc).splitlines()[0][:120]}); move it away "
                                                    "to train that configuration again") from None

    def put(self, record: LedgerRecord) -> bool:
        """Commit ``record`` unless its configuration already has one; True if this call wrote it.

        Create-if-absent: a reader sees the record whole or not at all, and the first record
        of a configuration is never replaced.
        """
        data = (json.dumps(record.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()
        return PosixStorage(self.root).create(self.path(record.config_hash), data)

    def records(self) -> list[LedgerRecord]:
        """Every record, oldest first."""
        if not self.root.is_dir():
            return []
        out = [self._read(p) for p in self.root.glob("*.json")]
        return sorted((r for r in out if r is not None), key=lambda r: r.finished_at)

    def work_dir(self, digest: str) -> Path:
        """The trainer's folder for ``digest`` (checkpoints, model, export)."""
        return self.sweep_dir / WORK_DIR / digest


def node_facts() -> dict[str, Any]:
    """Host name and, inside a Ray worker, the node id and address and the placement-group bundle nodes."""
    facts: dict[str, Any] = {"hostname": socket.gethostname(), "pid": os.getpid()}
    try:
        import ray

        if ray.is_initialized():
            ctx = ray.get_runtime_context()
            facts["node_id"] = ctx.get_node_id()
            facts["node_ip"] = ray.util.get_node_ip_address()
            facts["gpu_ids"] = [str(g) for g in ray.get_gpu_ids()]
            facts["assigned"] = {k: float(v) for k, v in ctx.get_assigned_resources().items()}
            pg = ctx.get_placement_group_id()
            if pg:
                from ray.util.placement_group import placement_group_table

                table = placement_group_table()
                entry = table.get(pg) or {}
                facts["bundle_nodes"] = sorted(set(entry.get("bundles_to_node_id", {}).values()))
                facts["bundles"] = [dict(b) for b in entry.get("bundles", {}).values()]
    except Exception as exc:  # facts are informative; never fail a trial over them
        facts["error"] = repr(exc)
    return facts


# -- the redo counter --------------------------------------------------------------------
def record_training_start(work_dir: Path, resumed: bool, trial_id: str | None) -> int:
    """Note that a real training starts in ``work_dir``; returns how many have started there."""
    path = Path(work_dir) / COUNTER_FILE
    counts = training_counts(work_dir)
    counts["starts"].append({"at": time.time(), "resumed_from_checkpoint": resumed, "trial_id": trial_id,
                             "pid": os.getpid(), "host": socket.gethostname()})
    atomic_write_json(path, counts)
    return len(counts["starts"])


def record_training_end(work_dir: Path, trial_id: str | None, last_step: int | None = None) -> int:
    """Note that a training in ``work_dir`` ran to its end (at report ``last_step``); returns how many have."""
    path = Path(work_dir) / COUNTER_FILE
    counts = training_counts(work_dir)
    counts["ends"].append({"at": time.time(), "trial_id": trial_id, "pid": os.getpid(), "last_step": last_step})
    atomic_write_json(path, counts)
    return len(counts["ends"])


def training_counts(work_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every recorded start and end of a training in ``work_dir``: ``{"starts": [...], "ends": [...]}``."""
    path = Path(work_dir) / COUNTER_FILE
    try:
        counts = json.loads(path.read_text())
    except FileNotFoundError:
        counts = {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(path, COUNTER_FILE, f"unreadable ({exc}); move it away to go on with that configuration") \
            from None
    if not isinstance(counts, dict) or not all(isinstance(counts.get(k, []), list) for k in ("starts", "ends")):
        raise InputError(path, COUNTER_FILE, "not a record of training starts and ends")
    return {"starts": counts.get("starts", []), "ends": counts.get("ends", [])}


def check_sweep_state(sweep_dir: str | Path) -> None:
    """Read every ledger record, redo counter and saved MLflow operation of a sweep; a damaged one is a
    one-line :class:`InputError` naming the file, before anything runs."""
    from sweep.integrations.mlflow import PENDING_FILE, read_pending

    ledger = Ledger(sweep_dir)
    ledger.records()
    for work in sorted((Path(sweep_dir) / WORK_DIR).glob("*/")):
        training_counts(work)
        if (work / PENDING_FILE).exists():
            read_pending(work / PENDING_FILE)


def training_starts(work_dir: Path) -> list[dict[str, Any]]:
    """Every recorded start of a training in ``work_dir``."""
    return training_counts(work_dir)["starts"]


@contextlib.contextmanager
def config_lease(work_dir: Path, owner: Mapping[str, Any] | None = None) -> Iterator[Lease]:
    """Hold the configuration's lease while working on it (two trials of one configuration take turns).

    The lease is renewed in the background; a holder whose node dies stops renewing, and
    after the lease's time to live another node's trial takes it over
    (:mod:`sweep.storage.lease`). A process of this machine that died frees it at once.
    Call :meth:`Lease.check` before committing anything under the lease.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    with Lease(work_dir, LEASE_NAME, owner=dict(owner or {})) as lease:
        yield lease
