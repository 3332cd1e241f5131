"""Kill a writer subprocess (tests/faults/writer.py) at seeded random moments; check what is left."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.faults.writer import folder_version

REPO = Path(__file__).resolve().parents[2]


def kill_writer(kind: str, target: Path, sources: list[str], rng: random.Random, max_wait_s: float) -> None:
    """Start the writer, wait for its first completed write, let it run a seeded random while more, SIGKILL it.

    Waiting for the first write makes every kill land where an old version exists, however slow the machine.
    """
    proc = subprocess.Popen([sys.executable, "-m", "tests.faults.writer", kind, str(target), *sources], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    assert proc.stdout.readline().strip() == "wrote", proc.stderr.read()
    time.sleep(rng.uniform(0.05, max_wait_s))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def check(kind: str, target: Path, versions: dict) -> str | None:
    """Which version is visible at ``target`` ("A", "B" or "none yet"); raises AssertionError on a half one."""
    if kind == "ingest":
        from sweep.data.store import FrameStore

        if not (target / "_manifest.json").exists():
            return "none yet"
        store = FrameStore.open(target)
        counts = tuple(sorted((r["element"], r["temperature"], r["train"], r["test"]) for r in store.summary()))
        for element in store.elements():
            frames = store.frames(element)  # every frame the manifest names is readable
            assert len(frames) == sum(r["train"] + r["test"] for r in store.summary() if r["element"] == element)
        # ingest adds elements to the store: each element must be whole, as version A or B left it
        label = ""
        for element in store.elements():
            mine = tuple(r for r in counts if r[0] == element)
            match = [k for k, v in versions.items() if tuple(r for r in v if r[0] == element) == mine]
            assert match, (element, mine)
            label += match[-1]
        return "B" if "B" in label else "A"
    if kind == "ledger":
        from sweep.tune.ledger import Ledger

        records = Ledger(target).records()  # every record parses
        if not records:
            return "none yet"
        (record,) = records
        v = record.params["version"]
        assert record.metrics == {f"m{i}": float(v * 1000 + i) for i in range(20000)}
        return "AB"[v - 1]
    if not target.exists():
        assert not list(target.parent.glob(f".{target.name}.old-*")), "folder missing while its old copy waits"
        return "none yet"
    found = {p.name: p.read_bytes() for p in target.iterdir()}
    for name, version in (("A", 1), ("B", 2)):
        if found == folder_version(version):
            return name
    raise AssertionError(f"half-written folder: {sorted(found)}")


def expected_ingest_versions(sources: list[str]) -> dict[str, tuple]:
    """The store summary each source archive gives (ingested into a scratch store)."""
    import tempfile

    from sweep.data import ingest_archive

    out = {}
    for name, source in zip("AB", sources):
        with tempfile.TemporaryDirectory() as scratch:
            store = ingest_archive(source, Path(scratch) / "s", progress=False)
            out[name] = tuple(sorted((r["element"], r["temperature"], r["train"], r["test"]) for r in store.summary()))
    return out


def run_kills(kind: str, root: Path, sources: list[str], kills: int, seed: int, max_wait_s: float = 1.5) -> dict:
    """Kill the writer of ``kind`` ``kills`` times; returns {"injected", "survived", "seen"}."""
    rng = random.Random(seed)
    target = root / kind
    versions = expected_ingest_versions(sources) if kind == "ingest" else {}
    survived, seen = 0, []
    for _ in range(kills):
        kill_writer(kind, target, sources, rng, max_wait_s)
        try:
            seen.append(check(kind, target, versions))
            survived += 1
        except AssertionError as exc:
            seen.append(f"broken: {exc}")
    return {"injected": kills, "survived": survived, "seen": seen}
