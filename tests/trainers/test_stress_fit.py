"""Models fit the stress of their own training frames, as the demo's settings train them.

Every frame of a TM23 trajectory has the same cell, so energies and forces alone do not fix a
model's pressure: only the stress labels do. When the fit lets them go (FLARE's likelihood
raising the stress noise without bound, NequIP weighing eV/Å³ like eV/Å), the predicted
diagonal stress sits a constant tens of meV/Å³ off the labels, and the stress parity plot
splits into two clouds (the diagonal components offset, the off-diagonal ones not). This
checks the offset on the training frames themselves, on SevenNet-labelled Cu at cold, warm and
melt (one volume), for the settings of the demo's spaces.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest

from sweep.data.archive import per_temperature_filename
from sweep.data.generate import generate_archive
from sweep.data.generate.cache import default_cache_root
from sweep.elements import TEMPERATURES
from sweep.trainers import TrainContext, get_trainer, null_reporter
from sweep.tune.space import GridParam, load_space, resolve_space_path

#: The predicted diagonal stress may sit at most this fraction of the labels' spread off them.
MAX_OFFSET_OF_SPREAD = 0.3


@pytest.fixture(scope="module")
def cu_frames(tmp_path_factory) -> list:
    """Every third training frame of SevenNet-labelled Cu at cold, warm and melt (one cell)."""
    collection = generate_archive(tmp_path_factory.mktemp("cu"), ["Cu"], frames_per_temperature=20, seed=0,
                                  progress=False, cache_root=default_cache_root())
    frames = [f for t in TEMPERATURES for f in ase.io.read(collection / per_temperature_filename("Cu", t, "train"), ":")]
    assert len({round(f.get_volume(), 6) for f in frames}) == 1
    return frames[::3]


def demo_params(model: str) -> dict:
    """The demo space's fixed settings of ``model``, with each grid at its first value."""
    space = load_space(resolve_space_path("demo_pipeline")).space
    study = next(s for s in space.studies if s.model == model)
    return {k: (v.grid[0] if isinstance(v, GridParam) else v) for k, v in study.params.items()}


def diagonal_offset(model, frames) -> tuple[float, float]:
    """(mean predicted − label diagonal stress, spread of the label diagonal stress), eV/Å³."""
    reference = np.array([f.get_stress()[:3] for f in frames])
    predicted = np.array([p.stress[:3] for p in model.predict(frames)])
    return float((predicted - reference).mean()), float(reference.std())


@pytest.mark.parametrize("model", ["flare", "nequip"])
def test_predicted_pressure_follows_the_stress_labels(cu_frames, model, tmp_path: Path):
    trainer = get_trainer(model)
    params = trainer.parse_params(demo_params(model))
    trained = trainer().train(params, cu_frames[:-2], cu_frames[-2:], null_reporter, tmp_path,
                              TrainContext(device="cpu", num_cpus=1, seed=0, temperature_K=1000.0))
    offset, spread = diagonal_offset(trained, cu_frames[:-2])
    assert spread > 0.01  # cold, warm and melt differ by GPa: the check is not vacuous
    assert abs(offset) < MAX_OFFSET_OF_SPREAD * spread, (offset, spread)
