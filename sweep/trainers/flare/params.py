"""FLARE's hyperparameters in its own vocabulary (light: no FLARE, no torch)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from sweep.errors import InputError
from sweep.trainers.base import HyperParams


class FlareParams(HyperParams):
    """FLARE's hyperparameters in its own vocabulary, with the paper's initial values."""

    descriptor: Literal["B1", "B2"] = "B2"
    radial_basis: Literal["chebyshev"] = "chebyshev"
    cutoff_function: Literal["quadratic"] = "quadratic"
    r_cut: float = Field(5.0, gt=0, le=15.0, description="descriptor cutoff in Å")
    n_max: int = Field(8, ge=1, le=20)
    l_max: int = Field(3, ge=0, le=10)
    zeta: Literal[1, 2] = Field(2, description="power of the NormalizedDotProduct kernel")
    sigma: float = Field(2.0, gt=0, description="signal σ (initial)")
    sigma_e: float = Field(0.001, gt=0, description="energy noise in eV/atom (initial)")
    sigma_e_per_atom: bool = Field(True, description="σ_e is per atom: a frame's total-energy noise is "
                                   "σ_e·N_atoms (FLARE's rel_e_noise); false: σ_e is the total-energy noise")
    sigma_f: float = Field(0.05, gt=0, description="force noise in eV/Å at sigma_f_reference_K (initial)")
    sigma_s: float = Field(0.005, gt=0, description="stress noise in eV/Å³ (initial)")
    sigma_e_max: float | None = Field(0.05, gt=0, description="upper bound on the fitted energy noise in eV/atom "
                                      "(None: unbounded). Unbounded, the likelihood can call the energy labels noise "
                                      "(measured: σ_e 55 eV/atom on Cu full, energy error 3.5%; 395 on EMT Cu with an "
                                      "energy reference, 2 eV/atom off), since forces and stress fix energies only up "
                                      "to a constant")
    sigma_s_max: float | None = Field(0.003, gt=0, description="upper bound on the fitted stress noise in eV/Å³ "
                                      "(None: unbounded). Energies and forces of frames at one volume do not "
                                      "fix a model's pressure; a likelihood free to call the stress labels noise "
                                      "leaves the pressure offset by GPa (measured: Ti, 0.01 let the fit "
                                      "collapse to a -92 meV/Å³ offset, 0.003 keeps it at -1 meV/Å³)")
    energy_reference: Literal["mean", "none"] = Field(
        "mean", description="per-species energy subtracted from the energy labels before the fit and added back "
        "to predictions (FLARE's single_atom_energies). mean: the per-atom energy of the training frames, "
        "least squares over their compositions; none: the GP fits absolute energies, and its signal σ then "
        "grows to hundreds to carry several eV per atom, which leaves the stress (the strain derivative of "
        "that large, nearly constant local energy) offset: Ti full, σ 480 and stress error 231% (none) "
        "against σ 21 and 26% (mean, with sigma_e_max)")
    sigma_f_temperature_scaling: Literal["sqrt", "none"] = "sqrt"
    sigma_f_reference_K: float = Field(1000.0, gt=0)
    sparse_per_frame: int = Field(10, ge=1, description="sparse environments added per frame")
    max_sparse: int = Field(3000, ge=1, description="cap on the total number of sparse environments")
    block_size: int = Field(5, ge=1, description="frames added between reports and checkpoints")
    optimize_every: int = Field(20, ge=0, description="re-optimise after this many frames (0: only at the end)")
    optimize_final: bool = True
    opt_method: Literal["L-BFGS-B"] = "L-BFGS-B"
    gtol: float = Field(1e-4, gt=0)
    maxiter: int = Field(200, ge=0)
    maxfun: int | None = Field(None, ge=1, description="cap on likelihood evaluations per optimisation "
                               "(L-BFGS-B maxfun; None: scipy's default)")
    likelihood_gradient: Literal["exact", "flare"] = Field(
        "exact", description="exact: the derivative of the likelihood as computed (K_uu jitter included); "
        "flare: FLARE 1.4.0's formula, whose σ term inverts K_uu explicitly")

    @field_validator("l_max")
    @classmethod
    def _b1_is_l0(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("descriptor") == "B1" and value != 0:
            raise ValueError("B1 is the l = 0 (2-body) descriptor: l_max must be 0")
        return value


def descriptor_dimension(descriptor: str, n_max: int, l_max: int, n_species: int) -> int:
    """n_d: the paper's Eq. 1 for B2, (n·s + 1)·n·s/2·(l_max + 1); n·s for B1."""
    ns = n_max * n_species
    if descriptor == "B1":
        return ns
    return (ns + 1) * ns // 2 * (l_max + 1)


def scaled_sigma_f(params: FlareParams, temperature_K: float | None) -> float:
    """Initial σ_f for a trajectory at ``temperature_K``: σ_f·√(T/T_ref), or σ_f unscaled."""
    if temperature_K is None or params.sigma_f_temperature_scaling == "none":
        return params.sigma_f
    if not temperature_K > 0:
        raise InputError(None, "temperature_K", f"must be > 0 K, got {temperature_K}")
    return params.sigma_f * math.sqrt(temperature_K / params.sigma_f_reference_K)


