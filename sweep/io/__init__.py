"""File-system helpers shared by every writer in the project."""

from sweep.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, atomic_directory

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "atomic_directory"]
