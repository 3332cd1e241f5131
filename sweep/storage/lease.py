"""Leases: exclusive claims on a piece of sweep state that a dead node's claim cannot block.

A lease is a numbered series of small JSON files in one folder, ``<name>.<generation>.json``,
each created with :meth:`PosixStorage.create` (create-if-absent), so that of several
claimants exactly one gets each generation. The record names its owner (host, boot, PID
namespace, pid) and the time it expires. The holder renews it every third of its time to
live (by rewriting its own generation file) from a background thread.

A lease is free when its newest generation was released, when it expired more than
:data:`STALE_GRACE_S` ago (its holder stopped renewing: a dead or cut-off node), or when its
holder is a process of this very machine that no longer exists. Taking a free lease is
creating the next generation. A holder that finds a newer generation than its own has lost
the lease (it was taken as expired) and must stop: :meth:`Lease.check` raises
:class:`LeaseLost`, which trials call before they commit anything.

Expiry compares wall clocks of different nodes: they must agree to well within the grace
(NTP does; the defaults allow tens of seconds).
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.storage.posix import PosixStorage

#: A holder's claim lasts this long without a renewal.
LEASE_TTL_S = 30.0
#: An expired lease is taken only this long after its expiry (clock skew, attribute caches).
STALE_GRACE_S = 10.0
_NAME = re.compile(r"^(?P<name>.+)\.(?P<gen>\d{8})\.json$")


class LeaseLost(RuntimeError):
    """This process's lease was taken over by another holder (it had expired)."""


def _read_first_line(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def process_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def this_process() -> dict[str, Any]:
    """Who this process is, across a cluster: host, boot id, PID namespace, pid and its start time."""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    return {"host": socket.gethostname(), "boot_id": _read_first_line("/proc/sys/kernel/random/boot_id"),
            "pid_ns": pid_ns, "pid": os.getpid(), "pid_start": process_start_ticks(os.getpid())}


def on_this_machine(owner: dict[str, Any]) -> bool:
    """Whether ``owner`` (from :func:`this_process`) names a process of this host, boot and PID namespace."""
    me = this_process()
    return all(owner.get(k) == me[k] for k in ("host", "boot_id", "pid_ns"))


def owner_gone(owner: dict[str, Any]) -> bool:
    """Whether ``owner`` is a process of this machine that has ended (its pid is gone or reused)."""
    if not on_this_machine(owner):
        return False
    pid = owner.get("pid")
    return not isinstance(pid, int) or process_start_ticks(pid) != owner.get("pid_start")


@dataclass(frozen=True)
class LeaseRecord:
    """One generation of a lease as written on the storage."""

    generation: int
    owner: dict[str, Any]
    expires_at: float
    released: bool = False

    def free(self, now: float | None = None) -> bool:
        """Whether another claimant may take the lease after this generation."""
        now = time.time() if now is None else now
        return self.released or now > self.expires_at + STALE_GRACE_S or owner_gone(self.owner)

    def describe(self) -> str:
        """The holder, for messages: ``host pid N``."""
        return f"{self.owner.get('host', '?')} pid {self.owner.get('pid', '?')}"


class Lease:
    """An exclusive, renewable claim called ``name`` in ``folder`` (see the module docs)."""

    def __init__(self, folder: str | Path, name: str, owner: dict[str, Any] | None = None,
                 ttl_s: float = LEASE_TTL_S, storage: PosixStorage | None = None):
        self.folder = Path(folder)
        self.name = name
        self.owner = {**this_process(), **(owner or {})}
        self.ttl_s = float(ttl_s)
        self.storage = storage or PosixStorage(self.folder)
        self.generation: int | None = None
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writing = threading.Lock()  # a renewal never lands after the release

    # -- reading ---------------------------------------------------------------------------
    def _path(self, generation: int) -> Path:
        return self.folder / f"{self.name}.{generation:08d}.json"

    def generations(self) -> list[int]:
        """The generations present, oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for entry in self.folder.iterdir():
            match = _NAME.match(entry.name)
            if match and match["name"] == self.name:
                found.append(int(match["gen"]))
        return sorted(found)

    def _read(self, generation: int) -> LeaseRecord | None:
        path = self._path(generation)
        data = self.storage.read(path)
        if data is None:
            return None
        try:
            raw = json.loads(data)
            return LeaseRecord(generation, dict(raw["owner"]), float(raw["expires_at"]), bool(raw.get("released")))
        except (ValueError, KeyError, TypeError):
            # unreadable (a disk fault): treat it as a claim that lasts one TTL from its last write
            try:
                mtime = path.stat().st_mtime
            except FileNotFoundError:
                return None
            return LeaseRecord(generation, {"host": "unreadable lease file"}, mtime + self.ttl_s)

    def current(self) -> LeaseRecord | None:
        """The newest generation's record, or None when the lease was never taken."""
        for generation in reversed(self.generations()):
            record = self._read(generation)
            if record is not None:
                return record
        return None

    # -- holding ---------------------------------------------------------------------------
    def _record(self, generation: int, released: bool = False) -> bytes:
        return json.dumps({"owner": self.owner, "expires_at": time.time() + self.ttl_s, "released": released,
                           "generation": generation}, sort_keys=True).encode()

    def try_acquire(self) -> bool:
        """Take the lease if it is free; False when someone else holds it."""
        while True:
            generations = self.generations()
            top = generations[-1] if generations else 0
            record = self._read(top) if top else None
            if top and record is not None and not record.free():
                return False
            if self.storage.create(self._path(top + 1), self._record(top + 1)):
                self.generation = top + 1
                self._lost.clear()
                for old in generations:  # older generations say nothing any more
                    self.storage.delete(self._path(old))
                return True
            # another claimant created that generation first: look again

    def acquire(self, timeout_s: float | None = None, poll_s: float = 1.0) -> "Lease":
        """Take the lease, waiting while someone else holds it; ``TimeoutError`` after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self.try_acquire():
            if deadline is not None and time.monotonic() > deadline:
                holder = self.current()
                raise TimeoutError(f"lease {self.folder / self.name} held by "
                                   f"{holder.describe() if holder else 'someone'}")
            time.sleep(poll_s)
        return self

    def check(self) -> None:
        """Raise :class:`LeaseLost` if this lease was taken over (call before committing)."""
        if self.generation is None:
            raise LeaseLost(f"lease {self.folder / self.name} is not held")
        if self._lost.is_set():
            raise LeaseLost(f"lease {self.folder / self.name} was taken over by another holder")
        newer = [g for g in self.generations() if g > self.generation]
        if newer:
            self._lost.set()
            holder = self._read(newer[-1])
            raise LeaseLost(f"lease {self.folder / self.name} was taken over by "
                            f"{holder.describe() if holder else 'another holder'}")

    @property
    def lost(self) -> bool:
        """Whether a renewal found the lease taken over."""
        return self._lost.is_set()

    def renew(self) -> None:
        """Push the expiry one TTL ahead; :class:`LeaseLost` if it was taken over."""
        with self._writing:
            if self.generation is None:
                raise LeaseLost(f"lease {self.folder / self.name} was released")
            self.check()
            self.storage.replace(self._path(self.generation), self._record(self.generation))
        self.check()  # someone may have taken it between the check and the write

    def release(self) -> None:
        """Stop renewing and mark the lease free (nothing happens if it was lost meanwhile)."""
        self._stop.set()
        with self._writing:
            if self.generation is not None:
                try:
                    self.check()
                    self.storage.replace(self._path(self.generation), self._record(self.generation, released=True))
                except LeaseLost:
                    pass
                finally:
                    self.generation = None
        self._stop_renewing()

    # -- background renewal -----------------------------------------------------------------
    def start_renewing(self) -> None:
        """Renew every third of the TTL from a daemon thread until :meth:`release`."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease-{self.name}", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
            except LeaseLost:
                if self.generation is not None:
                    self._lost.set()
                return
            except OSError:  # storage unreachable for a moment: try again at the next period
                continue

    def _stop_renewing(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.ttl_s)
            self._thread = None

    def __enter__(self) -> "Lease":
        if self.generation is None:
            self.acquire()
        self.start_renewing()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
