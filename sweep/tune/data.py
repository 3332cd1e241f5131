"""Element frames in Ray's object store: read once by the driver, shared by every trial.

The driver reads each element's whole table (every temperature, both archive splits)
from the Parquet store once and ``ray.put``s it; trials get the object reference and
rebuild their split from memory with the project's own :func:`split_frames`, through
:class:`TableStore`, which offers the two :class:`FrameStore` methods that splitting
uses. Trials never open the store.
"""

from __future__ import annotations

from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
from ase import Atoms

from sweep.data.splits import SplitFrames, split_frames
from sweep.data.store import FrameStore, PartitionEntry, frames_from_table
from sweep.elements import TEMPERATURES
from sweep.errors import InputError


class ElementTable:
    """One element's frames (an Arrow table) and its store manifest entries; picklable."""

    def __init__(self, element: str, table: pa.Table, partitions: dict[str, PartitionEntry], uri: str):
        self.element = element
        self.table = table
        self.partitions = partitions
        self.uri = uri

    @classmethod
    def read(cls, store: FrameStore, element: str) -> "ElementTable":
        """Read every frame of ``element`` from ``store``: the one read a sweep makes."""
        temperatures = store.temperatures(element)
        if not temperatures:
            store.partition(element, "cold")  # raises the store's one-line error
        partitions = {t: store.partition(element, t) for t in temperatures}
        return cls(element, store.read_table(element, temperatures), partitions, store.uri)


class TableStore:
    """The part of :class:`FrameStore`'s interface that :func:`split_frames` uses, over memory."""

    def __init__(self, tables: dict[str, ElementTable]):
        self._tables = tables

    def partition(self, element: str, temperature: str) -> PartitionEntry:
        """The store's manifest entry of one trajectory."""
        try:
            return self._tables[element].partitions[temperature]
        except KeyError:
            raise InputError(self._uri(element), "temperature", f"{element} has no {temperature} frames") from None

    def frames(self, element: str, temperatures: str | Sequence[str] | None = None,
               split: str | None = None) -> list[Atoms]:
        """Frames in :meth:`FrameStore.read_table`'s order: temperature, then frame index."""
        entry = self._tables[element]
        if temperatures is None:
            temperatures = [t for t in TEMPERATURES if t in entry.partitions]
        elif isinstance(temperatures, str):
            temperatures = [temperatures]
        parts = []
        for t in temperatures:
            self.partition(element, t)
            mask = pc.equal(entry.table["temperature"], t)
            if split is not None:
                mask = pc.and_(mask, pc.equal(entry.table["split"], split))
            parts.append(entry.table.filter(mask).sort_by("frame_index"))
        return frames_from_table(pa.concat_tables(parts)) if parts else []

    def _uri(self, element: str) -> str:
        entry = self._tables.get(element)
        return entry.uri if entry else "store"


def build_split(table: ElementTable, task: str, seed: int) -> SplitFrames:
    """``split_frames`` of ``table``'s element from memory (milliseconds for the embedded data)."""
    return split_frames(TableStore({table.element: table}), table.element, task, seed)
