"""The phase check: its measures on known structures, and `data info` warning about a wrong phase."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from ase.build import bulk

from sweep.cli import main
from sweep.data.archive import COLLECTION_DIR, per_temperature_filename
from sweep.data.generate import MDSettings, generate_archive
from sweep.data.phase import check_phase, msd_curve, radial_distribution, unwrapped_positions, wendt_abraham_ratio


def _walk(n_frames: int, step: float, seed: int = 0) -> list:
    """A 32-atom fcc cell whose atoms random-walk by ``step`` Å per frame (50 fs apart)."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    frames = []
    for k in range(n_frames):
        frame = atoms.copy()
        frame.info["md_time_fs"] = 50.0 * k
        frame.wrap()
        frames.append(frame)
        atoms.positions += rng.normal(scale=step, size=atoms.positions.shape)
    return frames


def test_unwrapping_follows_an_atom_across_the_cell_boundary():
    frames = _walk(3, 0.0)
    length = frames[0].cell[0, 0]
    for k, frame in enumerate(frames):
        frame.positions[0] = [(length - 0.1 + 0.3 * k) % length, 1.0, 1.0]
    path = unwrapped_positions(frames)[:, 0, 0]
    np.testing.assert_allclose(np.diff(path), 0.3, atol=1e-12)


def test_msd_of_a_random_walk_grows_linearly():
    t, msd = msd_curve(_walk(60, 0.1))
    slope = np.polyfit(t, msd, 1)[0]
    # 3 components of variance 0.01 Å² per 50 fs step: 0.6 Å²/ps, less the removed centre-of-mass share
    assert slope == pytest.approx(0.6 * (1 - 1 / 32), rel=0.25)


def test_wendt_abraham_separates_a_crystal_from_a_disordered_cell():
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
    disordered = []
    for k in range(10):  # every atom 0.5 Å RMS off its site: the first shells merge, as in a liquid
        frame = crystal.copy()
        frame.positions += np.random.default_rng(k).normal(scale=0.5, size=frame.positions.shape)
        disordered.append(frame)
    assert wendt_abraham_ratio(*radial_distribution([crystal])) < 0.05
    assert wendt_abraham_ratio(*radial_distribution(disordered)) > 0.3


def test_a_walking_cell_is_liquid_and_a_still_one_crystalline():
    assert check_phase(_walk(40, 0.0), "Cu", "cold").phase == "crystal"
    hot = check_phase(_walk(40, 0.4), "Cu", "melt")
    assert hot.phase == "liquid" and hot.ok and hot.mean_pressure_GPa is None  # unlabelled frames: no pressure


def test_data_info_warns_about_a_melt_that_is_crystalline(tmp_path, capsys):
    settings = MDSettings(equilibration_fs=200, premelt_fs=200)
    collection = generate_archive(tmp_path / "a", ["Cu"], frames_per_temperature=20, seed=0, progress=False,
                                  labeller="classical", settings=settings)
    for split in ("train", "test"):  # the melt files now hold the cold crystal
        shutil.copy(collection / per_temperature_filename("Cu", "cold", split),
                    collection / per_temperature_filename("Cu", "melt", split))
    assert main(["data", "info", str(tmp_path / "a" / COLLECTION_DIR)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "warning: Cu melt: crystal" in out and "expected liquid" in out
    assert "warning: Cu cold" not in out
