"""Data: the archive reader, the embedded generator, the Parquet store and the paper's splits.

Data flows one way: archive (real or generated extxyz) → :func:`ingest_archive` →
:class:`FrameStore` → :func:`split_frames` → trainers, which see ASE ``Atoms`` only.
"""

from sweep.data.frames import make_frame
from sweep.data.splits import SplitFrames, Task, parse_task, split_frames
from sweep.data.store import FrameStore, frames_from_table, ingest_archive

__all__ = ["FrameStore", "SplitFrames", "Task", "frames_from_table", "ingest_archive", "make_frame",
           "parse_task", "split_frames"]
