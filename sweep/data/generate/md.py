"""Langevin MD at one temperature: (melt,) equilibrate, then sample frames at a fixed interval.

This mirrors the TM23 protocol (NVT AIMD, 5 ps of equilibration dropped, a frame every
50 fs) with a cheap classical calculator driving the dynamics (or, for a metal that no
potential at hand melts near its Tmelt, the labeller itself); the sampled frames are then
labelled by the data set's labeller (:mod:`sweep.data.generate.labellers`), as the paper
relabelled its Γ-point AIMD frames at a denser k-mesh. A liquid trajectory is first melted
well above Tmelt, then held at its own temperature. The centre of mass is held fixed
(``FixCom``), so the kinetic temperature has 3N - 3 degrees of freedom; each frame records it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from ase import Atoms, units
from ase.constraints import FixCom
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from pydantic import BaseModel, ConfigDict, Field

from sweep.data.frames import make_frame


class MDSettings(BaseModel):
    """Integrator, thermostat and sampling of one trajectory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timestep_fs: float = Field(default=2.0, gt=0, le=10)
    friction_per_fs: float = Field(default=0.02, gt=0, description="Langevin friction, 1/fs")
    equilibration_fs: float = Field(default=5000.0, ge=0, description="dropped before the first sample")
    sample_interval_fs: float = Field(default=50.0, gt=0, description="time between two sampled frames")
    premelt_factor: float = Field(default=2.0, ge=1, description="a liquid trajectory melts first at this × Tmelt")
    premelt_fs: float = Field(default=3000.0, ge=0, description="time spent melting before equilibration")

    def steps(self, time_fs: float) -> int:
        """MD steps covering ``time_fs``."""
        return int(round(time_fs / self.timestep_fs))


class MDBlowUp(RuntimeError):
    """The trajectory produced a non-finite label: the potential cannot hold this state."""


def _label(atoms: Atoms, info: dict) -> Atoms:
    """A frame carrying the calculator's current energy, forces and stress (virial only)."""
    calc = atoms.calc
    energy = float(calc.get_property("energy", atoms))
    forces = np.array(calc.get_property("forces", atoms), dtype=float)
    stress = np.array(calc.get_property("stress", atoms), dtype=float)
    if not (np.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(stress).all()):
        raise MDBlowUp(f"non-finite label at {info}")
    # positions wrapped into the cell: the labels do not depend on the periodic image
    return make_frame(atoms.numbers, atoms.get_positions(wrap=True), atoms.cell.array, atoms.pbc, energy, forces,
                      stress, info=info)


def kinetic_temperature(atoms: Atoms) -> float:
    """Kinetic temperature in K with the degrees of freedom of ``atoms`` (3N - 3 under ``FixCom``)."""
    return float(atoms.get_temperature())


def run_trajectory(
    atoms: Atoms,
    calculator,
    temperature_K: float,
    n_frames: int,
    rng: np.random.Generator,
    settings: MDSettings = MDSettings(),
    info: dict | None = None,
    on_frame: Callable[[int], None] | None = None,
    premelt_K: float | None = None,
) -> list[Atoms]:
    """Run Langevin MD of ``atoms`` at ``temperature_K`` and return ``n_frames`` frames labelled by ``calculator``.

    Velocities start from a Maxwell-Boltzmann draw of ``rng`` (zero total momentum). With
    ``premelt_K``, the run first spends ``settings.premelt_fs`` at that temperature. Then
    ``settings.equilibration_fs`` are dropped, and a frame is kept every
    ``settings.sample_interval_fs``. Each frame's ``info`` gets ``info`` plus the target
    ``temperature_K``, the frame's kinetic ``md_temperature_K`` and ``md_time_fs`` (counted
    from the start of equilibration).
    """
    atoms = atoms.copy()
    atoms.set_constraint(FixCom())
    atoms.calc = calculator
    MaxwellBoltzmannDistribution(atoms, temperature_K=premelt_K or temperature_K, rng=rng)
    Stationary(atoms)
    dyn = Langevin(atoms, settings.timestep_fs * units.fs, temperature_K=premelt_K or temperature_K,
                   friction=settings.friction_per_fs / units.fs, fixcm=False, rng=rng)
    if premelt_K and settings.premelt_fs:
        dyn.run(settings.steps(settings.premelt_fs))
        dyn.set_temperature(temperature_K=temperature_K)
    base = dict(info or {})
    frames: list[Atoms] = []
    equilibration, interval = settings.steps(settings.equilibration_fs), settings.steps(settings.sample_interval_fs)
    if equilibration:
        dyn.run(equilibration)
    for k in range(n_frames):
        dyn.run(interval)
        step = equilibration + (k + 1) * interval
        frame_info = {**base, "temperature_K": float(temperature_K),
                      "md_temperature_K": kinetic_temperature(atoms),
                      "md_time_fs": step * settings.timestep_fs}
        frames.append(_label(atoms, frame_info))
        if on_frame is not None:
            on_frame(k)
    return frames
