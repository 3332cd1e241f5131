"""Generated elements cached by their inputs, so that tests and the demo never redo an element.

One entry per element: the folder of its eight archive files, named by a hash of everything
that decides its bytes: the labeller (name, package version, model), the protocol (version
and MD settings), the element, the frames per temperature and the seed. An entry is built in a
temporary sibling and renamed into place whole, so a killed generation leaves no half entry;
two processes building the same entry keep the first.

The cache root is ``$TM23_CACHE_DIR``, else ``~/.cache/tm23-sweep``, read once by
:func:`default_cache_root` (the CLI passes it down).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from sweep.io.atomic import atomic_directory

CACHE_ENV = "TM23_CACHE_DIR"
#: Changes whenever the generator's output for the same inputs changes.
PROTOCOL_VERSION = 3


def default_cache_root() -> Path:
    """``$TM23_CACHE_DIR``, else ``~/.cache/tm23-sweep`` (XDG's cache home when set)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tm23-sweep"


def element_key(inputs: dict) -> str:
    """The hex digest naming one element's entry (``inputs``: JSON-serialisable, keys sorted)."""
    blob = json.dumps({"protocol_version": PROTOCOL_VERSION, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class ElementCache:
    """The cache's folder of element entries under ``root / "archives"``."""

    def __init__(self, root: Path):
        self.root = Path(root) / "archives"

    def entry(self, symbol: str, key: str) -> Path:
        """Where the entry of ``symbol`` with ``key`` lives (present or not)."""
        return self.root / f"{symbol}-{key}"

    def find(self, symbol: str, key: str) -> Path | None:
        """The complete entry, or ``None``."""
        path = self.entry(symbol, key)
        return path if (path / "inputs.json").is_file() else None

    def store(self, symbol: str, key: str, inputs: dict, built: Path) -> Path:
        """Move the files of ``built`` into the entry (first writer wins) and return the entry."""
        target = self.entry(symbol, key)
        try:
            with atomic_directory(target, replace=False) as tmp:
                for path in sorted(built.iterdir()):
                    shutil.copy2(path, tmp / path.name)
                (tmp / "inputs.json").write_text(json.dumps(inputs, indent=2, sort_keys=True, default=str) + "\n")
        except FileExistsError:
            pass  # another process stored the same entry meanwhile: same inputs, same bytes
        return target
