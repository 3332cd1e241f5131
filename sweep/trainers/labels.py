"""Frames as trainers receive them: labelled copies, a seeded hold-out, a fingerprint, label magnitudes (light)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Sequence

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from sweep.errors import InputError
from sweep.io.atomic import atomic_write_text

#: meV per eV: every reported error is in meV units.
EV_TO_MEV = 1e3


def labelled_copies(frames: Sequence[Atoms], source: str) -> list[Atoms]:
    """Bare copies of ``frames`` carrying only energy, forces and stress; bad frames raise InputError."""
    out = []
    for index, frame in enumerate(frames):
        if frame.calc is None:
            raise InputError(source, "calculator", "frame has no labels (energy, forces, stress)", frame=index)
        try:
            energy = frame.get_potential_energy()
            forces = frame.get_forces()
            stress = frame.get_stress(voigt=True)
        except Exception as exc:  # ASE raises PropertyNotImplementedError and friends
            raise InputError(source, "labels", f"energy, forces and stress are required: {exc}", frame=index) from None
        atoms = Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell.array, pbc=frame.pbc)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
        out.append(atoms)
    return out


def write_extxyz(path: Path, frames: Sequence[Atoms]) -> Path:
    """Write ``frames`` (with their labels) as one extxyz file, atomically."""
    buffer = io.StringIO()
    ase.io.write(buffer, list(frames), format="extxyz")
    return atomic_write_text(path, buffer.getvalue())


def fingerprint(*frame_sets: Sequence[Atoms]) -> str:
    """SHA-256 of the frames' numbers, positions, cells, pbc and labels (a checkpoint is for these frames)."""
    digest = hashlib.sha256()
    for frames in frame_sets:
        digest.update(str(len(frames)).encode())
        for atoms in frames:
            for array in (atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc,
                          atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=True)):
                digest.update(np.ascontiguousarray(array, dtype=float).tobytes())
    return digest.hexdigest()


def label_mav(frames: Sequence[Atoms]) -> dict[str, float]:
    """Mean |label| of ``frames`` in meV units (the % error's denominator, Eq. 2)."""
    energy = np.array([f.get_potential_energy() / len(f) for f in frames])
    forces = np.concatenate([f.get_forces().ravel() for f in frames])
    stress = np.concatenate([f.get_stress(voigt=True) for f in frames])
    return {label: float(EV_TO_MEV * np.mean(np.abs(values)))
            for label, values in (("energy", energy), ("forces", forces), ("stress", stress))}


def holdout_split(frames: Sequence[Atoms], fraction: float, seed: int) -> tuple[list[Atoms], list[Atoms]]:
    """Split ``frames`` into (train, val) with a seeded random ``fraction`` (at least one frame) held out."""
    if len(frames) < 2:
        raise InputError("train frames", "val_frames", "need at least 2 training frames to hold out validation frames")
    n_val = min(len(frames) - 1, max(1, round(fraction * len(frames))))
    order = np.random.default_rng(seed).permutation(len(frames))
    val_idx = set(order[:n_val].tolist())
    train = [f for i, f in enumerate(frames) if i not in val_idx]
    val = [f for i, f in enumerate(frames) if i in val_idx]
    return train, val


