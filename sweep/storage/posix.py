"""Sweep state on a POSIX filesystem that every node mounts (NFS, Lustre, EFS, or one local disk).

Several kernels see such a mount, each with its own caches, so only two operations serve
as commit points, both atomic at the file server:

- :meth:`PosixStorage.create`: create-if-absent. The content is written to a temporary
  sibling, flushed, and then ``link()``ed to its name; ``link`` fails when the name exists,
  on NFS as on a local disk (the classic NFS-safe lock file). Exactly one of several
  writers succeeds, and a reader sees the whole content or no file.
- :meth:`PosixStorage.replace`: write-then-rename, for files that only one owner writes
  (under a lease, :mod:`sweep.storage.lease`).

``flock`` and ``renameat2(RENAME_EXCHANGE)`` are not used for sweep state: NFS clients grant
an ``flock`` locally (measured on an sshfs mount: a second node would get it too), and
NFS has no rename-exchange. Object stores (``s3://``, ``gs://``) would implement the same
two operations with conditional writes (``If-None-Match: *``, ``ifGenerationMatch=0``);
they are not implemented yet and are refused where a storage root is resolved.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from pathlib import Path

from sweep.io.atomic import fsync_dir


def _write_temp(path: Path, data: bytes, mode: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return tmp


class PosixStorage:
    """Create-if-absent and single-writer replace on a (possibly shared) POSIX filesystem."""

    scheme = "file"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def create(self, path: str | Path, data: bytes, mode: int = 0o644) -> bool:
        """Write ``data`` at ``path`` unless something is there; True if this call created it."""
        path = Path(path)
        tmp = _write_temp(path, data, mode)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        fsync_dir(path.parent)
        return True

    def replace(self, path: str | Path, data: bytes, mode: int = 0o644) -> Path:
        """Write ``data`` at ``path`` whole (readers see the old or the new content); one writer only."""
        path = Path(path)
        tmp = _write_temp(path, data, mode)
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        fsync_dir(path.parent)
        return path

    def read(self, path: str | Path) -> bytes | None:
        """The content at ``path``, or None when there is no file."""
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, path: str | Path) -> None:
        """Remove ``path`` if it is there."""
        with contextlib.suppress(FileNotFoundError):
            Path(path).unlink()

    def clean_temporaries(self, folder: str | Path, older_than_s: float = 3600.0) -> int:
        """Remove temporary files that killed writers left in ``folder``; returns how many."""
        removed = 0
        cutoff = time.time() - older_than_s
        for tmp in Path(folder).glob(".*.tmp"):
            try:
                if tmp.is_file() and tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed
