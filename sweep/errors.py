"""Errors that reach the user as one line naming the file, the frame and the field."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input: formatted as ``<file>[: frame N]: <field>: <reason>`` on one line.

    The CLI prints ``error: <that line>`` and exits with status 2.
    """

    def __init__(self, source: str | Path | None, field: str | None, reason: str, frame: int | None = None):
        self.source = str(source) if source is not None else None
        self.field = field
        self.reason = " ".join(str(reason).split())  # one line, whatever the cause said
        self.frame = frame
        super().__init__(self.line())

    def line(self) -> str:
        """The one-line message."""
        parts = []
        if self.source is not None:
            parts.append(self.source)
        if self.frame is not None:
            parts.append(f"frame {self.frame}")
        if self.field is not None:
            parts.append(self.field)
        parts.append(self.reason)
        return ": ".join(parts)
