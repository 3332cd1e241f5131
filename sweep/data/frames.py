"""Frames as the project passes them around: ASE ``Atoms`` with a ``SinglePointCalculator``.

Energy is in eV, forces in eV/Å and stress in eV/Å³ as a Voigt 6-vector
(xx, yy, zz, yz, xz, xy) in ASE's sign convention (positive = tensile).
Provenance (element, temperature, split, frame index, source) rides in ``atoms.info``.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

#: Keys a frame from the store carries in ``atoms.info``.
PROVENANCE_KEYS = ("element", "temperature", "temperature_K", "split", "frame_index", "source_file", "source_frame")


def make_frame(
    numbers,
    positions,
    cell,
    pbc,
    energy: float,
    forces,
    stress,
    info: Mapping[str, Any] | None = None,
) -> Atoms:
    """Build a labelled frame from arrays (``positions`` and ``forces`` may be flat)."""
    numbers = np.asarray(numbers, dtype=int)
    n = len(numbers)
    atoms = Atoms(
        numbers=numbers,
        positions=np.asarray(positions, dtype=float).reshape(n, 3),
        cell=np.asarray(cell, dtype=float).reshape(3, 3),
        pbc=np.asarray(pbc, dtype=bool).reshape(3),
    )
    atoms.calc = SinglePointCalculator(
        atoms,
        energy=float(energy),
        forces=np.asarray(forces, dtype=float).reshape(n, 3),
        stress=np.asarray(stress, dtype=float).reshape(6),
    )
    if info:
        atoms.info.update(info)
    return atoms


def relabel(atoms: Atoms, calculator) -> Atoms:
    """Return a copy of ``atoms`` labelled by ``calculator`` (energy, forces, stress)."""
    frame = atoms.copy()
    frame.calc = calculator
    energy = frame.get_potential_energy()
    forces = frame.get_forces()
    stress = frame.get_stress(voigt=True)
    return make_frame(frame.numbers, frame.positions, frame.cell.array, frame.pbc,
                      energy, forces, stress, info=dict(atoms.info))
