"""FLARE's data structures: descriptor settings, ``Structure``s from ASE frames, labels and stress order.

``B1`` is the 2-body ACE descriptor: the l = 0 single-bond vector c_n, of length
n_max·n_species. mir-flare 1.4.0 does not bind a B1 calculator (it exists only on an
unreleased upstream branch), so it is derived exactly from FLARE's B2 with l_max = 0: that
descriptor holds the products c_a·c_b (a ≤ b); with the Chebyshev basis g_0 = 1 and the
quadratic cutoff, c_(s,0) = Y00·Σ_j (r_ij − r_cut)² > 0 for every atom that has a neighbour
of species s, so c_b = B2_(s0,b) / √B2_(s0,s0), and likewise for the force derivatives.

Stress enters in FLARE's order and sign: ``-stress[[0, 5, 4, 1, 3, 2]]`` (xx, xy, xz, yy,
yz, zz, negated), as FLARE's OTF code converts ASE stress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
from ase import Atoms

from sweep.errors import InputError
from sweep.trainers.flare.params import descriptor_dimension

if TYPE_CHECKING:
    from sweep.trainers.flare.params import FlareParams

#: ASE Voigt (xx, yy, zz, yz, xz, xy) -> FLARE (xx, xy, xz, yy, yz, zz), negated.
ASE_TO_FLARE_ORDER = (0, 5, 4, 1, 3, 2)
#: The inverse permutation: FLARE (xx, xy, xz, yy, yz, zz) -> ASE Voigt, negated.
FLARE_TO_ASE_ORDER = (0, 3, 5, 4, 2, 1)
#: Lower bounds for (σ, σ_e, σ_f, σ_s) in L-BFGS-B; without them σ_f goes negative.
HYP_LOWER_BOUNDS = (1e-3, 1e-4, 1e-4, 1e-5)


def hyperparameter_bounds(sigma_e_max: float | None, sigma_s_max: float | None) -> list[tuple[float, float | None]]:
    """L-BFGS-B bounds for (σ, σ_e, σ_f, σ_s): the lower bounds, σ_e at most ``sigma_e_max`` and σ_s at most ``sigma_s_max``."""
    bounds: list[tuple[float, float | None]] = [(b, None) for b in HYP_LOWER_BOUNDS]
    if sigma_e_max is not None:
        bounds[1] = (HYP_LOWER_BOUNDS[1], sigma_e_max)
    if sigma_s_max is not None:
        bounds[3] = (HYP_LOWER_BOUNDS[3], sigma_s_max)
    return bounds
#: Label kinds in FLARE's label vector: per frame [energy, forces (3N), stress (6)].
ENERGY, FORCE, STRESS = 0, 1, 2


def label_kinds(n_atoms: int) -> np.ndarray:
    """The kind of each of a frame's labels in FLARE's order: energy, 3N forces, 6 stresses."""
    return np.concatenate([[ENERGY], np.full(3 * n_atoms, FORCE), np.full(6, STRESS)]).astype(np.int8)


def ase_to_flare_stress(stress: Sequence[float]) -> np.ndarray:
    """ASE Voigt stress (positive = tensile) -> FLARE's (xx, xy, xz, yy, yz, zz), negated."""
    return -np.asarray(stress, dtype=float)[list(ASE_TO_FLARE_ORDER)]


def flare_to_ase_stress(stress: Sequence[float]) -> np.ndarray:
    """FLARE's (xx, xy, xz, yy, yz, zz) stress -> ASE Voigt (xx, yy, zz, yz, xz, xy), negated."""
    return -np.asarray(stress, dtype=float)[list(FLARE_TO_ASE_ORDER)]


def flare_modules():
    """FLARE's C++ module and Python wrapper, imported on first use."""
    from flare.bffs.sgp import _C_flare
    from flare.bffs.sgp import sparse_gp as sgp_py

    return _C_flare, sgp_py


def reference_energies(frames: Sequence[Atoms], species: Sequence[int]) -> tuple[float, ...]:
    """Per-atom energy of each of ``species`` (eV): least squares of the frames' energies over their compositions.

    For one species this is the mean energy per atom of ``frames``.
    """
    counts = np.array([[np.count_nonzero(f.numbers == z) for z in species] for f in frames], dtype=float)
    energies = np.array([frame_labels(f, i)[0] for i, f in enumerate(frames)])
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return tuple(float(e) for e in solution)


@dataclass(frozen=True)
class DescriptorSpec:
    """How to turn atoms into FLARE descriptors (kind, cutoff, basis sizes, species) and labels.

    ``energy_reference`` holds a per-atom energy for each species (FLARE's
    ``single_atom_energies``), subtracted from energy labels and added back to predictions;
    empty when absolute energies are fitted.
    """

    kind: str
    r_cut: float
    n_max: int
    l_max: int
    species: tuple[int, ...]
    energy_reference: tuple[float, ...] = ()

    @classmethod
    def from_params(cls, params: FlareParams, frames: Sequence[Atoms]) -> "DescriptorSpec":
        """The spec for ``params`` over the species present in ``frames`` (and their reference energies)."""
        species = tuple(sorted({int(z) for f in frames for z in f.numbers}))
        reference = reference_energies(frames, species) if params.energy_reference == "mean" else ()
        return cls(params.descriptor, params.r_cut, params.n_max, params.l_max, species, reference)

    def reference_energy(self, atoms: Atoms) -> float:
        """The sum of ``atoms``' per-species reference energies (0 without a reference)."""
        total = 0.0
        if self.energy_reference:
            # Summed atom by atom, as FLARE's update_db does, so that a model FLARE rebuilds
            # from its JSON holds bit-identical labels.
            for code in self.codes(atoms):
                total += self.energy_reference[code]
        return total

    @property
    def single_atom_energies(self) -> dict[int, float] | None:
        """The reference as FLARE's ``single_atom_energies`` (species code -> eV), or ``None``."""
        return dict(enumerate(self.energy_reference)) if self.energy_reference else None

    @property
    def species_map(self) -> dict[int, int]:
        """Atomic number -> FLARE species code 0, 1, ..."""
        return {z: i for i, z in enumerate(self.species)}

    @property
    def n_species(self) -> int:
        """Number of species."""
        return len(self.species)

    @property
    def dimension(self) -> int:
        """Descriptor length by Eq. 1 (B2) or n_max·n_species (B1)."""
        return descriptor_dimension(self.kind, self.n_max, self.l_max, self.n_species)

    def calculator(self):
        """A FLARE B2 calculator (l_max 0 for B1, which is derived from it)."""
        C, _ = flare_modules()
        l_max = 0 if self.kind == "B1" else self.l_max
        return C.B2("chebyshev", "quadratic", [0.0, self.r_cut], [], [self.n_species, self.n_max, l_max])

    def codes(self, atoms: Atoms, source: str = "frames", frame: int | None = None) -> list[int]:
        """FLARE species codes of ``atoms``; an unknown element is an :class:`InputError`."""
        smap = self.species_map
        try:
            return [smap[int(z)] for z in atoms.numbers]
        except KeyError as exc:
            raise InputError(source, "species", f"element Z={exc.args[0]} is not in the model's species "
                             f"{list(self.species)}", frame=frame) from None

    def structure(self, atoms: Atoms, calculator, labels: bool = False, frame: int | None = None):
        """A FLARE ``Structure`` with descriptors (and energy/force/stress labels if asked).

        ``calculator`` must outlive the structure: the C++ side keeps a raw pointer to it.
        """
        C, _ = flare_modules()
        struc = C.Structure(np.asarray(atoms.cell.array, dtype=float), self.codes(atoms, frame=frame),
                            np.asarray(atoms.positions, dtype=float), self.r_cut, [calculator])
        if self.kind == "B1":
            dv = struc.descriptors[0]
            b1_from_b2(dv, self.n_species, self.n_max)
            struc.descriptors = [dv]
        if labels:
            energy, forces, stress = frame_labels(atoms, frame)
            struc.energy = np.array([[energy - self.reference_energy(atoms)]])
            struc.forces = forces.reshape(-1)
            struc.stresses = ase_to_flare_stress(stress)
        return struc


def frame_labels(atoms: Atoms, frame: int | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """(energy eV, forces eV/Å, ASE Voigt stress eV/Å³) of a labelled frame."""
    try:
        return (float(atoms.get_potential_energy()), np.asarray(atoms.get_forces(), dtype=float),
                np.asarray(atoms.get_stress(voigt=True), dtype=float))
    except Exception as exc:  # noqa: BLE001 - any missing label is the same user error
        raise InputError("train frames", "labels", f"frame needs energy, forces and stress: {exc}",
                         frame=frame) from None


def _pair_column(a: int, b: int, n: int) -> int:
    """Column of the product (a, b), a ≤ b, in FLARE's B2 with l_max 0 over n radial channels."""
    return a * n - a * (a - 1) // 2 + (b - a)


def b1_from_b2(dv, n_species: int, n_max: int) -> None:
    """Turn FLARE ``DescriptorValues`` of B2 (l_max 0) into B1 in place (see module docstring)."""
    n_rad = n_species * n_max
    descs, dervs, norms, dots = [], [], [], []
    for t in range(dv.n_types):
        d2 = np.asarray(dv.descriptors[t])
        f2 = np.asarray(dv.descriptor_force_dervs[t])
        counts = np.asarray(dv.neighbor_counts[t]).ravel()
        row_atom = np.repeat(np.arange(len(counts)), 3 * counts)
        c = np.zeros((d2.shape[0], n_rad))
        dc = np.zeros((f2.shape[0], n_rad))
        for s in range(n_species):
            ref = s * n_max
            c2 = d2[:, _pair_column(ref, ref, n_rad)]
            present = c2 > 0
            c_ref = np.where(present, np.sqrt(np.where(present, c2, 1.0)), 0.0)
            inv = np.where(present, 1.0 / np.where(present, c_ref, 1.0), 0.0)
            inv_rows = inv[row_atom]
            dc_ref = 0.5 * f2[:, _pair_column(ref, ref, n_rad)] * inv_rows
            c[:, ref] = c_ref
            dc[:, ref] = dc_ref
            for b in range(ref + 1, ref + n_max):
                col = _pair_column(ref, b, n_rad)
                c[:, b] = d2[:, col] * inv
                dc[:, b] = (f2[:, col] - c[row_atom, b] * dc_ref) * inv_rows
        descs.append(c)
        dervs.append(dc)
        norms.append(np.sqrt(np.einsum("ij,ij->i", c, c)))
        dots.append(np.einsum("ij,ij->i", dc, c[row_atom]) if len(row_atom) else np.zeros(0))
    dv.descriptors = descs
    dv.descriptor_force_dervs = dervs
    dv.descriptor_norms = norms
    dv.descriptor_force_dots = dots
    dv.n_descriptors = n_rad


