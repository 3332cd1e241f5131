"""Find a frame's energy, forces and stress, whatever keys the file used, and check their units.

The TM23 archive's label keys and units are not documented. ASE's extxyz reader
turns the standard keys (``energy``, ``forces``, ``stress``, ``virial``) into a
``SinglePointCalculator``; other codes write ``REF_energy``, ``dft_forces`` and the
like into ``info``/``arrays``. What is assumed, and checked for plausibility:

- energies in eV, forces in eV/Å, stress in eV/Å³ (ASE's extxyz units);
- a 9-component stress is a row-major 3×3 tensor; 6 components are Voigt
  (xx, yy, zz, yz, xz, xy);
- the stress is in ASE's sign convention (positive = tensile), as ASE's
  ``get_stress()`` returns it; a virial ``W`` (eV) is turned into ``-W / V``.

A value outside the plausible range for a metal (|E|/atom > 25 eV, |F| > 100 eV/Å,
|σ| > 2 eV/Å³ ≈ 320 GPa) is refused with a hint at the unit it looks like, rather
than silently rescaled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from sweep.errors import InputError

ENERGY_KEYS = ("energy", "REF_energy", "dft_energy", "DFT_energy", "Energy", "total_energy", "free_energy")
FORCES_KEYS = ("forces", "REF_forces", "dft_forces", "DFT_forces", "force", "Forces")
STRESS_KEYS = ("stress", "stress_voigt", "REF_stress", "dft_stress", "DFT_stress", "Stress")
VIRIAL_KEYS = ("virial", "virial_voigt", "REF_virial", "dft_virial", "Virial")

MAX_ENERGY_PER_ATOM = 25.0  # eV; PBE total energies of d metals are -1 to -13 eV/atom
MAX_FORCE = 100.0  # eV/Å
MAX_STRESS = 2.0  # eV/Å³ (≈ 320 GPa)


@dataclass(frozen=True)
class LabelConvention:
    """Where a file keeps its labels and what was assumed about them."""

    energy_key: str
    forces_key: str
    stress_key: str
    stress_components: int
    stress_from_virial: bool = False
    units: str = "eV, eV/Å, eV/Å³"
    stress_sign: str = "ASE (positive = tensile)"

    def as_dict(self) -> dict:
        """Plain dict, for the store's manifest."""
        return asdict(self)


def _calc_results(atoms: Atoms) -> dict:
    calc = atoms.calc
    return dict(getattr(calc, "results", {}) or {}) if calc is not None else {}


def _find(keys: tuple[str, ...], *sources: dict) -> tuple[str, object] | tuple[None, None]:
    for key in keys:
        for source in sources:
            if key in source and source[key] is not None:
                return key, source[key]
    return None, None


def _voigt(path: Path, frame: int, key: str, value) -> tuple[np.ndarray, int]:
    try:
        arr = np.asarray(value, dtype=float)
    except ValueError:  # a malformed number inside the quoted string
        raise InputError(path, key, "not a list of numbers", frame=frame) from None
    size = arr.size
    if size == 9:
        m = arr.reshape(3, 3)
        return np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]]), 9
    if size == 6:
        return arr.reshape(6), 6
    raise InputError(path, key, f"expected 6 or 9 stress components, got {size}", frame=frame)


def extract_labels(path: Path, frame: int, atoms: Atoms, expected: LabelConvention | None
                   ) -> tuple[float, np.ndarray, np.ndarray, LabelConvention]:
    """Energy (eV), forces (n×3, eV/Å) and Voigt stress (eV/Å³) of one frame, checked.

    ``expected`` is the convention found on an earlier frame of the same file; a frame
    that departs from it (a missing key) is refused.
    """
    results, info, arrays = _calc_results(atoms), atoms.info, atoms.arrays
    n = len(atoms)

    e_key, energy = _find(ENERGY_KEYS, results, info)
    if e_key is None:
        raise InputError(path, "energy", f"missing (looked for {', '.join(ENERGY_KEYS)})", frame=frame)
    try:
        energy = float(np.asarray(energy, dtype=float).reshape(()))
    except (TypeError, ValueError):
        raise InputError(path, e_key, "not a single number", frame=frame) from None
    if not np.isfinite(energy):
        raise InputError(path, e_key, f"non-finite value {energy}", frame=frame)
    if abs(energy) / n > MAX_ENERGY_PER_ATOM:
        hint = " (looks like meV; eV expected)" if abs(energy) / n / 1e3 <= MAX_ENERGY_PER_ATOM else ""
        raise InputError(path, e_key, f"{energy / n:.4g} eV/atom is implausible for a metal{hint}", frame=frame)

    f_key, forces = _find(FORCES_KEYS, results, arrays)
    if f_key is None:
        raise InputError(path, "forces", f"missing (looked for {', '.join(FORCES_KEYS)})", frame=frame)
    forces = np.asarray(forces, dtype=float)
    if forces.shape != (n, 3):
        raise InputError(path, f_key, f"shape {forces.shape}, expected ({n}, 3)", frame=frame)
    if not np.all(np.isfinite(forces)):
        raise InputError(path, f_key, "non-finite value", frame=frame)
    if np.abs(forces).max() > MAX_FORCE:
        raise InputError(path, f_key, f"|F| = {np.abs(forces).max():.4g} eV/Å is implausible (eV/Å expected)", frame=frame)

    s_key, stress = _find(STRESS_KEYS, results, info)
    from_virial = False
    if s_key is None:
        s_key, virial = _find(VIRIAL_KEYS, info)
        if s_key is None:
            raise InputError(path, "stress", f"missing (looked for {', '.join(STRESS_KEYS + VIRIAL_KEYS)})", frame=frame)
        stress, n_components = _voigt(path, frame, s_key, virial)
        stress = -stress / atoms.get_volume()
        from_virial = True
    else:
        stress, n_components = _voigt(path, frame, s_key, stress)
        if s_key in results:
            n_components = 9  # ASE's extxyz reader takes `stress` only as a 3×3 tensor
    if not np.all(np.isfinite(stress)):
        raise InputError(path, s_key, "non-finite value", frame=frame)
    if np.abs(stress).max() > MAX_STRESS:
        raise InputError(path, s_key, f"|σ| = {np.abs(stress).max():.4g} is implausible in eV/Å³ "
                         "(looks like kbar or GPa)", frame=frame)

    found = LabelConvention(energy_key=e_key, forces_key=f_key, stress_key=s_key,
                            stress_components=n_components, stress_from_virial=from_virial)
    if expected is not None and (found.energy_key, found.forces_key, found.stress_key) != (
            expected.energy_key, expected.forces_key, expected.stress_key):
        raise InputError(path, "labels", f"frame uses keys {found.energy_key}/{found.forces_key}/{found.stress_key}, "
                         f"earlier frames {expected.energy_key}/{expected.forces_key}/{expected.stress_key}", frame=frame)
    return energy, forces, stress, expected or found
