"""Which phase a trajectory is in: diffusion, structural order, pressure and force scale.

A crystal stays put and keeps its shells; a liquid diffuses and washes out the shell
between the first two neighbour peaks. Measured per trajectory, on its frames in time order:

- **MSD slope**: the mean-square displacement from the first frame, of positions unwrapped
  by the minimum image between consecutive frames, fitted as a line over the second half of
  the trajectory (Å²/ps, = 6 D). A crystal's MSD plateaus (slope ≈ 0, also with a vacancy on
  this time scale); a liquid metal's grows at 6 D ≈ 1–3 Å²/ps.
- **Wendt–Abraham ratio** g(r_min)/g(r_max) of the radial distribution function: the first
  minimum over the first peak. Above about 0.14 a liquid (Wendt and Abraham, Phys. Rev.
  Lett. 41, 1244 (1978)); it confirms the call of the MSD.
- the mean pressure (GPa, from the stress labels: P = -tr σ / 3) and the mean |F| (eV/Å).

:func:`check_phase` reads a trajectory's frames and classifies it; each TM23 trajectory has
an expected phase (cold and warm crystalline, melt liquid), :data:`EXPECTED_PHASE`.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from ase import Atoms
from ase.units import GPa
from pydantic import BaseModel, ConfigDict

Phase = Literal["crystal", "liquid", "unclear"]

#: The phase each TM23 trajectory is meant to be in.
EXPECTED_PHASE: dict[str, Phase] = {"cold": "crystal", "warm": "crystal", "melt": "liquid"}

#: A trajectory whose MSD grows faster than this (Å²/ps, 6 D with D = 4e-6 cm²/s, a tenth of a
#: typical liquid metal's) diffuses like a liquid, if its structure is a liquid's too.
LIQUID_MSD_SLOPE = 0.25
#: A crystal's MSD grows slower than this (Å²/ps: a vacancy's hops in a hot crystal stay below)...
CRYSTAL_MSD_SLOPE = 0.1
#: ... and stays below this (Å²: atoms within about 0.6 Å RMS of where they started).
CRYSTAL_MSD = 1.0
#: The Wendt–Abraham ratio above which the structure is a liquid's.
WENDT_ABRAHAM_LIQUID = 0.14


class PhaseCheck(BaseModel):
    """One trajectory's phase measures and the phase they indicate."""

    model_config = ConfigDict(frozen=True)

    element: str
    temperature: str
    n_frames: int
    duration_ps: float
    msd_slope_A2_per_ps: float
    msd_final_A2: float
    wendt_abraham: float
    mean_pressure_GPa: float | None
    mean_abs_force: float | None
    phase: Phase

    @property
    def expected(self) -> Phase | None:
        """The phase this trajectory should be in (``None`` for a temperature label TM23 lacks)."""
        return EXPECTED_PHASE.get(self.temperature)

    @property
    def ok(self) -> bool:
        """Whether the trajectory is in its expected phase."""
        return self.expected is None or self.phase == self.expected

    def describe(self) -> str:
        """One line: the measures and, when the phase is wrong, why it matters."""
        pressure = "n/a" if self.mean_pressure_GPa is None else f"{self.mean_pressure_GPa:.1f} GPa"
        force = "n/a" if self.mean_abs_force is None else f"{self.mean_abs_force:.2f} eV/Å"
        text = (f"{self.element} {self.temperature}: {self.phase} (MSD slope {self.msd_slope_A2_per_ps:.2f} Å²/ps, "
                f"MSD {self.msd_final_A2:.2f} Å² after {self.duration_ps:.1f} ps, Wendt–Abraham "
                f"{self.wendt_abraham:.2f}, mean P {pressure}, mean |F| {force})")
        if not self.ok:
            text += f" — expected {self.expected}"
        return text


def unwrapped_positions(frames: Sequence[Atoms]) -> np.ndarray:
    """Positions (frames × atoms × 3) made continuous by the minimum-image step between consecutive frames."""
    cell = frames[0].cell
    out = np.empty((len(frames), len(frames[0]), 3))
    out[0] = frames[0].positions
    inverse = np.linalg.inv(cell.array)
    for k in range(1, len(frames)):
        step = frames[k].positions - frames[k - 1].positions
        fractional = step @ inverse
        fractional -= np.round(fractional) * frames[0].pbc
        out[k] = out[k - 1] + fractional @ cell.array
    return out


def _times_ps(frames: Sequence[Atoms]) -> np.ndarray:
    times = [f.info.get("md_time_fs") for f in frames]
    if all(t is not None for t in times):
        return (np.asarray(times, dtype=float) - float(times[0])) / 1000.0
    return np.arange(len(frames), dtype=float) * 0.05  # the protocol's 50 fs when frames carry no time


def msd_curve(frames: Sequence[Atoms]) -> tuple[np.ndarray, np.ndarray]:
    """(time in ps, mean-square displacement from the first frame in Å²), centre-of-mass drift removed."""
    positions = unwrapped_positions(frames)
    displacement = positions - positions[0]
    displacement -= displacement.mean(axis=1, keepdims=True)
    return _times_ps(frames), (displacement ** 2).sum(axis=2).mean(axis=1)


def radial_distribution(frames: Sequence[Atoms], r_max: float | None = None, bins: int = 80
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(r in Å, g(r)) averaged over ``frames``, with minimum-image distances up to ``r_max``."""
    first = frames[0]
    r_max = r_max or 0.5 * float(min(first.cell.lengths()))
    edges = np.linspace(0.0, r_max, bins + 1)
    counts = np.zeros(bins)
    for atoms in frames:
        d = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)]
        counts += np.histogram(d, bins=edges)[0]
    n, volume = len(first), first.get_volume()
    shells = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    ideal = len(frames) * 0.5 * n * (n - 1) / volume * shells
    return 0.5 * (edges[1:] + edges[:-1]), counts / ideal


def wendt_abraham_ratio(r: np.ndarray, g: np.ndarray, window: float = 1.5) -> float:
    """g at the first minimum after the first peak over g at that peak (smoothed over three bins).

    The first peak is the highest point within ``window`` Å of where g first reaches 0.5 (so a
    stray close pair does not count as a peak), the minimum the lowest point within ``window``
    Å after it.
    """
    smooth = np.convolve(g, np.ones(3) / 3.0, mode="same")
    onset = int(np.argmax(smooth >= 0.5)) if (smooth >= 0.5).any() else 0
    step = float(r[1] - r[0])
    span = max(2, int(round(window / step)))
    peak = onset + int(np.argmax(smooth[onset:onset + span]))
    after = smooth[peak:peak + span]
    minimum = peak + int(np.argmin(after))
    return float(smooth[minimum] / smooth[peak])


def classify(msd_slope: float, msd_final: float, wendt_abraham: float) -> Phase:
    """The phase indicated by the MSD slope (Å²/ps), the final MSD (Å²) and the Wendt–Abraham ratio.

    Diffusion decides; the RDF only confirms a liquid (a hot bcc crystal's shells blur too).
    """
    if msd_slope >= LIQUID_MSD_SLOPE and wendt_abraham >= WENDT_ABRAHAM_LIQUID:
        return "liquid"
    if msd_slope < CRYSTAL_MSD_SLOPE and msd_final < CRYSTAL_MSD:
        return "crystal"
    return "unclear"


def _labels(frames: Sequence[Atoms]) -> tuple[float | None, float | None]:
    try:
        stresses = np.array([f.get_stress(voigt=True) for f in frames])
        forces = np.concatenate([f.get_forces() for f in frames])
    except Exception:  # unlabelled frames: the structure measures still stand
        return None, None
    pressure = float(-stresses[:, :3].mean() / GPa)
    return pressure, float(np.linalg.norm(forces, axis=1).mean())


def check_phase(frames: Sequence[Atoms], element: str, temperature: str) -> PhaseCheck:
    """Measure and classify one trajectory from its frames in time order."""
    if len(frames) < 4:
        raise ValueError(f"{element} {temperature}: {len(frames)} frames are too few for a phase check")
    t, msd = msd_curve(frames)
    half = len(t) // 2
    slope = float(np.polyfit(t[half:], msd[half:], 1)[0]) if t[-1] > t[half] else 0.0
    r, g = radial_distribution(frames[::max(1, len(frames) // 20)])
    ratio = wendt_abraham_ratio(r, g)
    pressure, force = _labels(frames)
    return PhaseCheck(element=element, temperature=temperature, n_frames=len(frames), duration_ps=float(t[-1]),
                      msd_slope_A2_per_ps=slope, msd_final_A2=float(msd[-1]), wendt_abraham=ratio,
                      mean_pressure_GPa=pressure, mean_abs_force=force, phase=classify(slope, float(msd[-1]), ratio))
