"""The MD temperature scale of a classical potential that melts far from the measured Tmelt.

TM23's trajectories are at 0.25, 0.75 and 1.25 × the measured melting point, chosen so that
warm is a hot crystal and melt a liquid. A classical potential has its own melting point:
where it lies outside (0.75, 1.25) × Tmelt, its warm trajectory diffuses like a liquid or its
melt stays crystalline. Such a potential's MD then runs at ``scale`` × TM23's temperatures,
with ``scale`` the candidate closest to 1 (by ratio) at which all three trajectories are in
their phase (:mod:`sweep.data.phase`), the frames labelled by the potential itself (the
phase is the MD's; the labeller does not change it). The scales found are kept, with what
was measured, in :data:`sweep.data.generate.potentials.MD_TEMPERATURE_SCALES`.
"""

from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence

from pydantic import BaseModel, ConfigDict

from sweep.data.generate.md import MDSettings
from sweep.data.phase import PhaseCheck, check_phase
from sweep.elements import TEMPERATURES

#: Tried in this order, nearest to 1 first, until one puts every trajectory in its phase.
CANDIDATE_SCALES = (1.0, 0.9, 1.1, 0.8, 1.25, 0.7, 1.4, 0.6, 1.6, 1.8, 2.0, 2.5, 3.0)


class ScaleOutcome(BaseModel):
    """The phase checks of one element's three trajectories at one MD temperature scale."""

    model_config = ConfigDict(frozen=True)

    element: str
    scale: float
    checks: list[PhaseCheck]

    @property
    def ok(self) -> bool:
        """Whether every trajectory is in its expected phase."""
        return all(check.ok for check in self.checks)

    def describe(self) -> str:
        """One line per scale: each trajectory's phase, MSD and Wendt–Abraham ratio."""
        parts = [f"{c.temperature} {c.phase} (MSD {c.msd_final_A2:.2f} Å², slope {c.msd_slope_A2_per_ps:.2f} Å²/ps, "
                 f"W–A {c.wendt_abraham:.2f})" for c in self.checks]
        return f"{self.element} × {self.scale:g}: {'ok' if self.ok else 'wrong phase'}; " + "; ".join(parts)


def phases_at_scale(symbol: str, scale: float, frames_per_temperature: int, seed: int,
                    settings: MDSettings = MDSettings()) -> ScaleOutcome:
    """Run ``symbol``'s cold, warm and melt MD at ``scale`` × TM23's temperatures and check each phase."""
    from sweep.data.generate.archive_writer import generate_trajectory
    from sweep.data.generate.potentials import potential_info

    # the phase reads positions only: labelling by the MD's own driver spares a second labeller
    md = potential_info(symbol)
    checks = []
    for label in TEMPERATURES:
        frames = generate_trajectory(symbol, label, frames_per_temperature, seed, settings, labeller=md.driver(label),
                                     md_temperature_scale=scale)
        checks.append(check_phase(frames, symbol, label))
    return ScaleOutcome(element=symbol, scale=scale, checks=checks)


def calibrate_element(symbol: str, frames_per_temperature: int, seed: int, settings: MDSettings = MDSettings(),
                      scales: Sequence[float] = CANDIDATE_SCALES) -> list[ScaleOutcome]:
    """The outcomes of ``scales``, nearest to 1 first, up to and including the first one that is ok.

    After the first, only the direction that can help is tried: hotter when only the melt is
    solid, colder when only the warm (or cold) trajectory is not.
    """
    ordered = sorted(scales, key=lambda s: abs(math.log(s)))
    first = phases_at_scale(symbol, ordered[0], frames_per_temperature, seed, settings)
    outcomes = [first]
    if first.ok:
        return outcomes
    wrong = {c.temperature for c in first.checks if not c.ok}
    if wrong == {"melt"}:
        candidates = [s for s in ordered[1:] if s > ordered[0]]
    elif "melt" not in wrong:
        candidates = [s for s in ordered[1:] if s < ordered[0]]
    else:
        candidates = ordered[1:]
    for scale in candidates:
        outcomes.append(phases_at_scale(symbol, scale, frames_per_temperature, seed, settings))
        if outcomes[-1].ok:
            break
    return outcomes


def calibrate(symbols: Sequence[str], frames_per_temperature: int, seed: int, settings: MDSettings = MDSettings(),
              scales: Sequence[float] = CANDIDATE_SCALES, jobs: int = 1,
              on_element: Callable[[list[ScaleOutcome]], None] | None = None) -> dict[str, list[ScaleOutcome]]:
    """:func:`calibrate_element` for each of ``symbols``, ``jobs`` elements at a time (one core each)."""
    from sweep.data.generate.archive_writer import one_core_worker

    context = multiprocessing.get_context("spawn")  # LAMMPS does not survive a fork
    out: dict[str, list[ScaleOutcome]] = {}
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=context, initializer=one_core_worker) as pool:
        futures = {s: pool.submit(calibrate_element, s, frames_per_temperature, seed, settings, tuple(scales))
                   for s in symbols}
        for symbol, future in futures.items():
            out[symbol] = future.result()
            if on_element is not None:
                on_element(out[symbol])
    return out
