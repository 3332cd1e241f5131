"""Clearly labelled fallback potentials for metals with no published classical potential at hand.

Each fallback is a first-nearest-neighbour MEAM (Baskes, PRB 46, 2727 (1992) formalism,
run by LAMMPS ``pair_style meam``) with the angular terms switched off (t1 = t2 = t3 = 0),
which makes it an EAM whose reference lattice follows the Rose universal equation of
state *exactly*. Three numbers fix that equation of state, and we fit them to measured
data (``potentials/fallback_targets.csv``):

- the nearest-neighbour distance ``re`` of the reference lattice (ideal hcp, or fcc for
  α-Hg), chosen so that its atomic volume equals the measured one;
- ``esub``, the measured cohesive energy;
- ``alpha = sqrt(9 B Ω / Ec)``, from the measured bulk modulus.

The remaining MEAM constants are generic, not fitted: ``b0 = 0.7 alpha`` (the ratio of
Baskes' 1992 fcc/bcc sets), ``asub = 1``, default screening (Cmin 2.0, Cmax 2.8).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from sweep.io.atomic import atomic_write_text

EV_PER_A3_PER_GPA = 1.0 / 160.21766208
B0_OVER_ALPHA = 0.7


class FallbackTarget(BaseModel):
    """Measured data one fallback is fitted to."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    Z: int
    mass: float = Field(gt=0)
    structure: str
    a: float = Field(gt=0, description="measured lattice constant a, Å")
    c: float | None = Field(default=None, description="measured c (hcp), Å")
    alpha_deg: float | None = Field(default=None, description="rhombohedral angle (α-Hg), degrees")
    Ec: float = Field(gt=0, description="measured cohesive energy, eV/atom")
    B: float = Field(gt=0, description="measured bulk modulus, GPa")
    reference: str = Field(pattern="^(hcp|fcc)$")

    def atomic_volume(self) -> float:
        """Measured volume per atom in Å³."""
        if self.structure == "hcp":
            return math.sqrt(3.0) / 4.0 * self.a**2 * float(self.c)
        if self.structure == "rhombohedral":
            ca = math.cos(math.radians(float(self.alpha_deg)))
            return self.a**3 * math.sqrt(1.0 - 3.0 * ca**2 + 2.0 * ca**3)
        raise ValueError(f"{self.symbol}: no volume rule for structure {self.structure!r}")

    def nearest_neighbour_distance(self) -> float:
        """``re``: the reference lattice's nearest-neighbour distance at the measured volume.

        Ideal hcp and fcc both have Ω = re³/√2.
        """
        return (math.sqrt(2.0) * self.atomic_volume()) ** (1.0 / 3.0)

    def rose_alpha(self) -> float:
        """``alpha = sqrt(9 B Ω / Ec)`` of the Rose equation of state."""
        return math.sqrt(9.0 * self.B * EV_PER_A3_PER_GPA * self.atomic_volume() / self.Ec)


def read_targets(path: str | Path) -> dict[str, FallbackTarget]:
    """Read ``fallback_targets.csv`` (``#`` lines are comments) into targets by symbol."""
    lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    targets = {}
    for row in csv.DictReader(lines):
        clean = {k: (v if v != "" else None) for k, v in row.items()}
        target = FallbackTarget(**clean)
        targets[target.symbol] = target
    return targets


def write_fallback_meam(target: FallbackTarget, folder: str | Path) -> tuple[Path, Path]:
    """Write ``<El>.fallback.library.meam`` and ``<El>.fallback.meam`` into ``folder``; return both paths."""
    folder = Path(folder)
    re_ = target.nearest_neighbour_distance()
    alpha = target.rose_alpha()
    # MEAM's alat is the cubic constant for fcc and a for hcp
    alat = re_ * math.sqrt(2.0) if target.reference == "fcc" else re_
    z = 12
    header = (
        f"# FALLBACK, not a published potential: Rose-EOS 1NN-MEAM (t1=t2=t3=0) for {target.symbol},\n"
        f"# fitted to measured Omega={target.atomic_volume():.4f} A^3, Ec={target.Ec} eV, B={target.B} GPa\n"
        "# (Kittel, Introduction to Solid State Physics, 8th ed., Tables 3.1 and 3.3; CRC Handbook lattice data).\n"
        "# Written by sweep.data.generate.fallback; formalism: M. I. Baskes, Phys. Rev. B 46, 2727 (1992).\n"
    )
    library = header + (
        f"'{target.symbol}' '{target.reference}' {z} {target.Z} {target.mass}\n"
        f"{alpha:.10f} {B0_OVER_ALPHA * alpha:.10f} 1.0 1.0 1.0 {alat:.10f} {target.Ec} 1.0\n"
        "1.0 0.0 0.0 0.0 1.0 0\n"
    )
    rc = max(4.0, 1.45 * re_)
    params = header + f"rc = {rc:.4f}\ndelr = 0.1\nnn2(1,1) = 0\nCmin(1,1,1) = 2.0\nCmax(1,1,1) = 2.8\n"
    lib_path = atomic_write_text(folder / f"{target.symbol}.fallback.library.meam", library)
    par_path = atomic_write_text(folder / f"{target.symbol}.fallback.meam", params)
    return lib_path, par_path
