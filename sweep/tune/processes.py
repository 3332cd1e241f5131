"""One driver per sweep, and no processes left over from a killed one.

When a driver that started a local Ray instance is SIGKILLed, Ray's raylet and GCS die
with it, but some ``ray::`` processes (the dashboard and runtime-env agents, anything a
trial started, such as ``mpiexec``) survive as orphans (measured with Ray 2.60). Every
process of a Ray instance carries ``RAY_RAYLET_PID`` in its environment, so the driver
records its raylet's pid and start time in ``driver.json``; the next driver of the same
sweep kills exactly the processes of that instance, by pid, and nothing else.

A second driver on the same sweep, on this machine or another node, is refused: the
running one holds the sweep's driver lease (``driver.<generation>.json``, renewed while it
runs; :mod:`sweep.storage.lease`). A killed driver's lease is free at once on its own
machine and after the lease's time to live elsewhere. Leftovers are killed only on the
machine (host, boot, PID namespace) where the dead driver ran.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from sweep.errors import InputError
from sweep.io import atomic_write_json
from sweep.storage.lease import Lease, on_this_machine, process_start_ticks, this_process

DRIVER_FILE = "driver.json"
DRIVER_LEASE = "driver"


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def instance_processes(raylet_pid: int) -> list[int]:
    """Pids of processes that belong to the Ray instance whose raylet had ``raylet_pid``."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        if _environ(int(entry.name)).get("RAY_RAYLET_PID") == str(raylet_pid):
            found.append(int(entry.name))
    return sorted(found)


class DriverLock:
    """Exclusive hold on a sweep folder for one driver process (a renewed lease)."""

    def __init__(self, sweep_dir: Path):
        self.sweep_dir = Path(sweep_dir)
        self._lease = Lease(self.sweep_dir, DRIVER_LEASE, owner={"role": "driver"})

    def acquire(self) -> "DriverLock":
        """Take the lease, or raise :class:`InputError` when another driver runs this sweep."""
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        if not self._lease.try_acquire():
            holder = self._lease.current()
            raise InputError(self.sweep_dir, "name", "this sweep is being run by another driver "
                                                     f"({holder.describe() if holder else 'unknown'})")
        self._lease.start_renewing()
        return self

    def release(self) -> None:
        """Let go of the lease."""
        self._lease.release()

    def __enter__(self) -> "DriverLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def read_driver(sweep_dir: Path) -> dict:
    """What the last driver recorded (empty when none did)."""
    try:
        return json.loads((Path(sweep_dir) / DRIVER_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def record_driver(sweep_dir: Path, started_ray: bool) -> dict:
    """Record this driver and, when it started Ray itself, its raylet (for the next driver's clean-up)."""
    info = {**this_process(), "started_ray": started_ray, "at": time.time(), "raylets": []}
    if started_ray:
        import ray

        node = ray._private.worker.global_worker.node  # the local instance this driver started
        for proc in node.all_processes.get("raylet", []):
            pid = proc.process.pid
            info["raylets"].append({"pid": pid, "start": process_start_ticks(pid)})
        info["session_dir"] = node.get_session_dir_path()
    atomic_write_json(Path(sweep_dir) / DRIVER_FILE, info)
    return info


def kill_leftovers(sweep_dir: Path, grace_s: float = 2.0) -> list[int]:
    """Kill what the previous (dead) driver's Ray instance left running; returns the pids killed.

    Call it while holding :class:`DriverLock`, so the previous driver is known to be gone.
    """
    info = read_driver(sweep_dir)
    if "host" in info and not on_this_machine(info):
        return []  # its processes live (or died) on another machine: nothing to do from here
    victims: list[int] = []
    for raylet in info.get("raylets", []):
        pid, start = raylet["pid"], raylet.get("start")
        alive_start = process_start_ticks(pid)
        if alive_start is not None and alive_start != start:
            continue  # the pid now belongs to another process (maybe another sweep's raylet)
        victims += instance_processes(pid)
        if alive_start is not None:
            victims.append(pid)
    victims = sorted(set(victims))
    for pid in victims:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(process_start_ticks(p) is not None and not _zombie(p) for p in victims):
        time.sleep(0.1)
    for pid in victims:
        if process_start_ticks(pid) is not None and not _zombie(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return victims


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
