"""FLARE structures shared between trainings in one process: neighbour lists and ACE descriptors.

A Tune worker runs many FLARE trials one after another (``reuse_actors``). Trials that
differ only in ζ or in the σ's (signal and noise) build the very same FLARE
``Structure``s from the same frames: FLARE's constructor computes the neighbour list and
the B2 descriptors with their force derivatives, which depend on the frame and on the
descriptor settings (kind, r_cut, n_max, l_max, species, radial basis and cutoff function,
all in :class:`~sweep.trainers.flare.structures.DescriptorSpec`) and on nothing else.

:func:`get_structure` keeps such structures in a process-wide cache, keyed by the spec and a
digest of the frame (atomic numbers, positions, cell, pbc; the labels too for a labelled
structure). A cached structure is never changed after it is stored: FLARE's ``SparseGP``
copies what it is given (``add_training_structure`` stores a copy, the other calls only read),
so handing one object to many models gives each the same bits as computing it afresh.
Structures are computed with one calculator per spec that lives as long as the process,
because a FLARE structure keeps a raw pointer to its calculator.

The cache is bounded by bytes (``$TM23_FLARE_DESCRIPTOR_CACHE_MB``, default 1024). When it
is full, the least recently used structures of *other* descriptor settings are evicted;
structures of the setting being requested are never evicted for each other, since a
training reads its frames in the same order every trial and LRU would then evict exactly
the frames the next trial needs first. A setting larger than the budget keeps the frames
that fit, and the rest are computed each time.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from typing import Any, Hashable

import numpy as np
from ase import Atoms

#: Size of the process-wide cache in MiB.
CACHE_MB_ENV = "TM23_FLARE_DESCRIPTOR_CACHE_MB"
DEFAULT_CACHE_MB = 1024


@dataclass
class Tally:
    """What one training (or one model's predictions) asked of the descriptors."""

    #: Whether cached structures could be used.
    shared: bool = False
    #: Structures computed here, and the seconds that took.
    computed: int = 0
    compute_s: float = 0.0
    #: Structures taken from the cache, and the seconds they took when they were computed.
    reused: int = 0
    reused_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The tally as plain JSON values."""
        return asdict(self)


@dataclass
class _Entry:
    value: Any
    group: Hashable
    nbytes: int
    compute_s: float


class StructureCache:
    """A bytes-bounded cache of structures, grouped by descriptor setting (see the module docstring)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._group_bytes: dict[Hashable, int] = {}
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0
        #: Structures not stored: larger than the budget, or their setting already fills it.
        self.refused = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable) -> _Entry | None:
        """The entry under ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, key: Hashable, group: Hashable, value: Any, nbytes: int, compute_s: float) -> bool:
        """Store ``value``, evicting other groups' least recently used entries if needed; whether it was stored."""
        with self._lock:
            if key in self._entries:
                return True
            if nbytes > self.max_bytes:
                self.refused += 1
                return False
            while self.bytes + nbytes > self.max_bytes:
                if self.bytes - self._group_bytes.get(group, 0) <= 0:
                    self.refused += 1
                    return False
                victim = next(k for k, e in self._entries.items() if e.group != group)
                self._drop(victim)
                self.evictions += 1
            self._entries[key] = _Entry(value, group, int(nbytes), float(compute_s))
            self._group_bytes[group] = self._group_bytes.get(group, 0) + int(nbytes)
            self.bytes += int(nbytes)
            return True

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.nbytes
        self._group_bytes[entry.group] -= entry.nbytes
        if not self._group_bytes[entry.group]:
            del self._group_bytes[entry.group]

    def clear(self) -> None:
        """Drop every entry and reset the counters."""
        with self._lock:
            self._entries.clear()
            self._group_bytes.clear()
            self.bytes = self.hits = self.misses = self.evictions = self.refused = 0

    def stats(self) -> dict[str, int]:
        """Entries, bytes and counters."""
        return {"entries": len(self._entries), "bytes": self.bytes, "max_bytes": self.max_bytes, "hits": self.hits,
                "misses": self.misses, "evictions": self.evictions, "refused": self.refused}


def _budget_bytes() -> int:
    try:
        mb = float(os.environ.get(CACHE_MB_ENV, DEFAULT_CACHE_MB))
    except ValueError:
        mb = DEFAULT_CACHE_MB
    return int(max(0.0, mb) * 2**20)


_CACHE = StructureCache(_budget_bytes())
#: One calculator per spec, never freed: cached and copied structures point to it.
_CALCULATORS: dict[Hashable, Any] = {}
_CALC_LOCK = threading.Lock()


def descriptor_cache() -> StructureCache:
    """This process's structure cache."""
    return _CACHE


def shared_calculator(spec):
    """The process-lifetime FLARE calculator for ``spec``."""
    with _CALC_LOCK:
        calc = _CALCULATORS.get(spec)
        if calc is None:
            calc = _CALCULATORS[spec] = spec.calculator()
        return calc


def frame_digest(atoms: Atoms, labels: bool) -> str | None:
    """A digest of what a structure is built from: numbers, positions, cell, pbc (and labels if asked).

    ``None`` when a labelled structure is asked of a frame without labels (it is then
    computed, which raises the trainer's own error).
    """
    h = hashlib.blake2b(digest_size=20)
    for array in (np.asarray(atoms.numbers, dtype=np.int64), np.asarray(atoms.positions, dtype=float),
                  np.asarray(atoms.cell.array, dtype=float), np.asarray(atoms.pbc, dtype=bool)):
        h.update(array.tobytes())
        h.update(b"|")
    if labels:
        try:
            parts = (np.asarray(atoms.get_potential_energy(), dtype=float), np.asarray(atoms.get_forces(), dtype=float),
                     np.asarray(atoms.get_stress(voigt=True), dtype=float))
        except Exception:  # noqa: BLE001 - the uncached path reports the missing label
            return None
        for array in parts:
            h.update(array.tobytes())
            h.update(b"|")
    return h.hexdigest()


def structure_nbytes(struc) -> int:
    """Bytes held by a FLARE structure's descriptor values (the bulk of it: force derivatives)."""
    total = 0
    for dv in struc.descriptors:
        for name in ("descriptors", "descriptor_force_dervs", "descriptor_norms", "descriptor_force_dots",
                     "cutoff_values", "cutoff_dervs", "neighbor_coordinates", "neighbor_counts",
                     "cumulative_neighbor_counts", "atom_indices", "neighbor_indices"):
            total += sum(np.asarray(a).nbytes for a in getattr(dv, name))
    return total + 8 * (len(struc.positions) * 8 + 64)


def get_structure(spec, atoms: Atoms, calculator, labels: bool = False, frame: int | None = None,
                  share: bool = False, tally: Tally | None = None):
    """``spec.structure(atoms, ...)``, taken from or stored in the process cache when ``share``.

    Without ``share`` this is exactly ``spec.structure(atoms, calculator, labels, frame)``.
    With it, ``calculator`` is not used (the cache's own calculator for ``spec`` is), and the
    structure returned may be shared with other models: callers must not modify it.
    """
    tally = tally if tally is not None else Tally()
    key = None
    if share:
        digest = frame_digest(atoms, labels)
        if digest is not None:
            key = (spec, digest, bool(labels))
            entry = _CACHE.get(key)
            if entry is not None:
                tally.reused += 1
                tally.reused_s += entry.compute_s
                return entry.value
            calculator = shared_calculator(spec)
    t0 = time.perf_counter()
    struc = spec.structure(atoms, calculator, labels=labels, frame=frame)
    elapsed = time.perf_counter() - t0
    tally.computed += 1
    tally.compute_s += elapsed
    if key is not None:
        _CACHE.put(key, spec, struc, structure_nbytes(struc), elapsed)
    return struc
