"""Reader of the TM23 archive's real layout (Materials Cloud record 2024.48).

The archive unpacks to ``benchmarking_master_collection/`` holding, per element El:

- ``El_{cold|warm|melt}_nequip_{train|test}.xyz``: one trajectory per temperature,
  its first 900 frames as train and its last 100 as test;
- ``El_2700cwm_{train|test}.xyz``: the three temperatures together (2700/300).

Files are extxyz, parsed by ASE. Every frame must carry an energy, finite n×3
forces and a stress (6 or 9 components), all checked here; the label keys and units
of the real files are not confirmed, so :mod:`sweep.data.labels` detects them and
records what it assumed.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from ase import Atoms

from sweep.data.labels import LabelConvention, extract_labels
from sweep.elements import ELEMENTS, TEMPERATURES
from sweep.errors import InputError

COLLECTION_DIR = "benchmarking_master_collection"
SPLITS = ("train", "test")
_PER_TEMPERATURE = re.compile(r"^(?P<element>[A-Z][a-z]?)_(?P<temperature>cold|warm|melt)_nequip_(?P<split>train|test)\.xyz$")
_COMBINED = re.compile(r"^(?P<element>[A-Z][a-z]?)_2700cwm_(?P<split>train|test)\.xyz$")


def per_temperature_filename(element: str, temperature: str, split: str) -> str:
    """``El_T_nequip_split.xyz``, the archive's name for one temperature's split."""
    return f"{element}_{temperature}_nequip_{split}.xyz"


def combined_filename(element: str, split: str) -> str:
    """``El_2700cwm_split.xyz``, the archive's name for the three temperatures together."""
    return f"{element}_2700cwm_{split}.xyz"


@dataclass
class ArchiveContents:
    """What an archive folder holds: per-temperature files and combined files by element."""

    root: Path
    per_temperature: dict[tuple[str, str, str], Path] = field(default_factory=dict)
    combined: dict[tuple[str, str], Path] = field(default_factory=dict)

    @property
    def elements(self) -> list[str]:
        """Elements with at least one per-temperature file, in table order."""
        present = {el for el, _, _ in self.per_temperature}
        return [s for s in ELEMENTS if s in present]

    def temperatures(self, element: str) -> list[str]:
        """Temperatures of ``element`` with both a train and a test file."""
        return [t for t in TEMPERATURES
                if all((element, t, s) in self.per_temperature for s in SPLITS)]


def find_collection(path: str | Path) -> Path:
    """The folder holding the ``.xyz`` files: ``path`` itself or its ``benchmarking_master_collection``."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "path", "no such file or directory")
    if not path.is_dir():
        raise InputError(path, "path", "expected the archive folder (the unpacked benchmarking_master_collection)")
    nested = path / COLLECTION_DIR
    return nested if nested.is_dir() else path


def scan_archive(path: str | Path) -> ArchiveContents:
    """Index the archive's files by element, temperature and split; refuse unknown elements."""
    root = find_collection(path)
    contents = ArchiveContents(root=root)
    for file in sorted(root.iterdir()):
        match = _PER_TEMPERATURE.match(file.name) or _COMBINED.match(file.name)
        if match is None:
            continue
        element = match["element"]
        if element not in ELEMENTS:
            raise InputError(file, "element", f"{element!r} is not a TM23 metal")
        if "temperature" in match.groupdict():
            contents.per_temperature[(element, match["temperature"], match["split"])] = file
        else:
            contents.combined[(element, match["split"])] = file
    if not contents.per_temperature:
        raise InputError(root, "files", "no TM23 files (expected El_{cold,warm,melt}_nequip_{train,test}.xyz)")
    for (element, temperature, split) in contents.per_temperature:
        other = "test" if split == "train" else "train"
        if (element, temperature, other) not in contents.per_temperature:
            missing = root / per_temperature_filename(element, temperature, other)
            raise InputError(missing, "path", f"missing: {split} exists for {element} {temperature} but {other} does not")
    return contents


_SPECIAL_STRESS = re.compile(r"(?<![\w-])(stress|virial)=")


def _comment_line_parser(line: str) -> dict:
    """ASE's extxyz comment parser, also taking a 6-component (Voigt) ``stress``/``virial``.

    ASE insists that ``stress`` and ``virial`` hold 9 numbers; a Voigt 6-vector is
    renamed ``stress_voigt``/``virial_voigt`` and left for :mod:`sweep.data.labels`.
    """
    from ase.io.extxyz import key_val_str_to_dict

    try:
        return key_val_str_to_dict(line)
    except ValueError as exc:
        if "3x3" not in str(exc):
            raise
        return key_val_str_to_dict(_SPECIAL_STRESS.sub(lambda m: f"{m[1]}_voigt=", line))


def read_extxyz(path: str | Path) -> list[Atoms]:
    """Parse every frame of an extxyz file with ASE; a missing, empty or non-extxyz file is an InputError."""
    from ase.io.extxyz import read_xyz

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "path", "no such file")
    if path.stat().st_size == 0:
        raise InputError(path, "frames", "empty file")
    count_frames(path)
    try:
        with open(path, "r", encoding="utf-8", errors="strict") as fh:
            frames = list(read_xyz(fh, index=slice(None), properties_parser=_comment_line_parser))
    except Exception as exc:  # ASE raises many types for malformed text
        raise InputError(path, "format", f"not valid extxyz ({type(exc).__name__}: {exc})") from None
    if not frames:
        raise InputError(path, "frames", "no frames")
    return frames


def count_frames(path: Path) -> int:
    """Frames in an extxyz file, from its atom-count lines; a count the file cannot hold is an InputError.

    ASE skips a frame's lines one readline() at a time, even past the end of the file, so a
    header claiming 10^9 atoms would hang it: every count is checked here before ASE reads.
    """
    frames = 0
    with open(path, "rb") as fh:
        for frame, header in enumerate(fh):
            if not header.strip() and not any(line.strip() for line in fh):
                break  # blank lines at the end of the file
            try:
                n = int(header)
            except ValueError:
                raise InputError(path, "format", f"not valid extxyz (atom count line {header[:40]!r})", frame=frame) from None
            got = sum(1 for _ in itertools.islice(fh, n + 1)) if n > 0 else 0
            if n < 1 or got < n + 1:
                raise InputError(path, "atoms", f"header says {n} atoms but {max(0, got - 1)} follow", frame=frame)
            frames += 1
    return frames


@dataclass
class ValidatedFrame:
    """One checked frame, labels in eV, eV/Å and eV/Å³ (Voigt, ASE sign)."""

    atoms: Atoms
    energy: float
    forces: np.ndarray
    stress: np.ndarray
    source_frame: int


def validate_frames(path: Path, frames: list[Atoms], element: str,
                    convention: LabelConvention | None = None) -> tuple[list[ValidatedFrame], LabelConvention]:
    """Check every frame of one file and extract its labels; the first problem raises an InputError.

    The label convention (keys, stress size) is detected on the first frame and then
    required of every later one, so that one file cannot mix conventions.
    """
    z_expected = ELEMENTS[element].Z
    validated = []
    for i, atoms in enumerate(frames):
        numbers = atoms.get_atomic_numbers()
        if len(numbers) == 0:
            raise InputError(path, "species", "frame has no atoms", frame=i)
        if np.any(numbers != z_expected):
            others = sorted({atoms.get_chemical_symbols()[k] for k in np.flatnonzero(numbers != z_expected)})
            raise InputError(path, "species", f"expected only {element} (from the file name), found {', '.join(others)}", frame=i)
        if not np.all(np.isfinite(atoms.positions)):
            raise InputError(path, "pos", "non-finite position", frame=i)
        cell = atoms.cell.array
        if not np.all(np.isfinite(cell)) or abs(np.linalg.det(cell)) < 1e-6:
            raise InputError(path, "Lattice", "missing, non-finite or zero-volume cell", frame=i)
        energy, forces, stress, convention = extract_labels(path, i, atoms, convention)
        validated.append(ValidatedFrame(atoms=atoms, energy=energy, forces=forces, stress=stress, source_frame=i))
    return validated, convention


def iter_trajectory(contents: ArchiveContents, element: str, temperature: str
                    ) -> Iterator[tuple[str, Path, list[ValidatedFrame], LabelConvention]]:
    """Yield ``(split, file, frames, convention)`` for the train then the test file of one trajectory."""
    for split in SPLITS:
        path = contents.per_temperature[(element, temperature, split)]
        frames, convention = validate_frames(path, read_extxyz(path), element)
        yield split, path, frames, convention
