"""Starting structures of the TM23 protocol: ground state, supercell ≥ 7 Å, one vacancy.

fcc and bcc use the conventional cubic cell, hcp its two-atom hexagonal cell, α-Mn the
58-atom cubic cell of space group I-43m and α-Hg the one-atom rhombohedral cell of R-3m,
all at the PBE lattice constants of :mod:`sweep.elements`.
"""

from __future__ import annotations

import math

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.spacegroup import crystal

from sweep.elements import Element, get_element

#: Every supercell lattice vector is at least this long (Å), as in the paper.
MIN_LATTICE_VECTOR = 7.0

# α-Mn (A12, I-43m, No. 217): Wyckoff 2a, 8c (x,x,x) and two 24g (x,x,z); fractional
# coordinates of Bradley & Thewlis, Proc. R. Soc. A 115, 456 (1927), as refined by
# Lawson et al., J. Appl. Phys. 76, 7049 (1994).
_ALPHA_MN_SITES = [
    (0.0, 0.0, 0.0),
    (0.3179, 0.3179, 0.3179),
    (0.3571, 0.3571, 0.0347),
    (0.0896, 0.0896, 0.2819),
]


def unit_cell(element: Element | str) -> Atoms:
    """The ground-state cell of ``element`` at its PBE lattice constants."""
    el = get_element(element) if isinstance(element, str) else element
    s = el.symbol
    if el.structure in ("fcc", "bcc"):
        return bulk(s, el.structure, a=el.a, cubic=True)
    if el.structure == "hcp":
        return bulk(s, "hcp", a=el.a, c=el.c)
    if el.structure == "alpha-Mn":
        return crystal([s] * 4, basis=_ALPHA_MN_SITES, spacegroup=217, cellpar=[el.a, el.a, el.a, 90, 90, 90],
                       primitive_cell=False)
    if el.structure == "alpha-Hg":
        return crystal(s, basis=[(0.0, 0.0, 0.0)], spacegroup=166, setting=2,
                       cellpar=[el.a, el.a, el.a, el.alpha_deg, el.alpha_deg, el.alpha_deg])
    raise ValueError(f"{s}: unknown structure {el.structure!r}")


def supercell_repeats(cell: Atoms, min_length: float = MIN_LATTICE_VECTOR) -> tuple[int, int, int]:
    """The smallest repeat that makes every lattice vector at least ``min_length`` long."""
    return tuple(max(1, math.ceil(min_length / length - 1e-9)) for length in cell.cell.lengths())


def perfect_supercell(element: Element | str) -> Atoms:
    """The ground-state supercell without a vacancy."""
    cell = unit_cell(element)
    return cell.repeat(supercell_repeats(cell))


def vacancy_supercell(element: Element | str, rng: np.random.Generator) -> tuple[Atoms, int]:
    """The supercell with one atom removed at a site drawn from ``rng``; returns it and the site index."""
    atoms = perfect_supercell(element)
    site = int(rng.integers(len(atoms)))
    del atoms[site]
    atoms.info["vacancy_site"] = site
    return atoms, site
