"""Shared fixtures: small real data, made with ASE's EMT calculator (no mocks)."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from sweep.data.frames import relabel


def emt_frames(symbol: str = "Cu", n_frames: int = 8, size: int = 2, rattle: float = 0.1, seed: int = 0,
               vacancy: bool = True):
    """Rattled fcc supercells with one vacancy, labelled by EMT (energy, forces, stress)."""
    rng = np.random.default_rng(seed)
    base = bulk(symbol, "fcc", cubic=True).repeat((size, size, size))
    if vacancy:
        del base[0]
    frames = []
    for i in range(n_frames):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
        strain = np.eye(3) + rng.normal(scale=0.01, size=(3, 3))
        atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
        frame = relabel(atoms, EMT())
        frame.info.update({"element": symbol, "temperature": "melt", "frame_index": i})
        frames.append(frame)
    return frames


@pytest.fixture(scope="session")
def emt_cu_frames():
    """16 EMT-labelled Cu frames of 31 atoms: 12 for training, 4 for testing."""
    frames = emt_frames("Cu", n_frames=16, seed=1)
    return frames[:12], frames[12:]


def write_emt_archive(root, elements=("Cu",), frames_per_temperature: int = 10, seed: int = 0):
    """A tiny archive in the real TM23 layout, labelled by EMT; returns the collection folder."""
    import ase.io

    from sweep.data.archive import COLLECTION_DIR, combined_filename, per_temperature_filename
    from sweep.elements import TEMPERATURES

    collection = root / COLLECTION_DIR
    collection.mkdir(parents=True, exist_ok=True)
    n_test = max(1, frames_per_temperature // 10)
    for k, element in enumerate(elements):
        combined = {"train": [], "test": []}
        for j, temperature in enumerate(TEMPERATURES):
            frames = emt_frames(element, n_frames=frames_per_temperature, rattle=0.05 * (j + 1),
                                seed=seed + 100 * k + j)
            parts = {"train": frames[:-n_test], "test": frames[-n_test:]}
            for split, part in parts.items():
                ase.io.write(collection / per_temperature_filename(element, temperature, split), part, format="extxyz")
                combined[split] += part
        for split, part in combined.items():
            ase.io.write(collection / combined_filename(element, split), part, format="extxyz")
    return collection


@pytest.fixture
def emt_archive(tmp_path):
    """A Cu+Au EMT archive with 10 frames per temperature (9 train, 1 test)."""
    return write_emt_archive(tmp_path / "archive", elements=("Cu", "Au"))


@pytest.fixture(scope="session")
def sweep_store(tmp_path_factory) -> str:
    """A Parquet store of Cu and Au, 10 EMT frames per temperature (task ``full``: 24/3/3 frames)."""
    return make_sweep_store(tmp_path_factory.mktemp("sweep-store"))


def make_sweep_store(root) -> str:
    """Write the Cu+Au EMT archive (10 frames per temperature) under ``root`` and ingest it; returns the store."""
    from pathlib import Path

    from sweep.data import ingest_archive

    root = Path(root)
    collection = write_emt_archive(root / "archive", elements=("Cu", "Au"), frames_per_temperature=10)
    ingest_archive(collection, root / "store", progress=False)
    return str(root / "store")
