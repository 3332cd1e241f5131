"""NequIP trainings in one process reuse frames and neighbour lists, with results unchanged."""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch

from sweep.trainers.base import TrainContext, get_trainer

shared = pytest.importorskip("sweep.trainers.nequip.shared")
from sweep.trainers.nequip.config import NequIPParams, build_config  # noqa: E402

TINY = {"num_layers": 2, "num_features": 8, "l_max": 1, "radial_mlp_width": 8, "batch_size": 3, "max_epochs": 2}


class Recorder:
    """A reporter that keeps every epoch's metrics."""

    def __init__(self):
        self.metrics: list[dict[str, float]] = []

    def __call__(self, step, metrics):
        self.metrics.append(dict(metrics))


def _train(directory: Path, frames, share: bool, **overrides):
    trainer = get_trainer("nequip")
    params = trainer.parse_params({**TINY, **overrides})
    reporter = Recorder()
    model = trainer().train(params, frames[:9], frames[9:12], reporter, directory,
                            TrainContext(device="cpu", seed=0, share_work=share))
    return model, reporter


@pytest.fixture
def empty_cache():
    shared.clear_cache()
    yield
    shared.clear_cache()


def _transforms(r_max: float) -> list[dict]:
    return [{"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper", "model_type_names": ["Cu"],
             "chemical_species_to_atom_type_map": {"Cu": "Cu"}},
            {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": r_max}]


def test_second_training_hits_the_cache_and_scores_the_same(emt_cu_frames, tmp_path, empty_cache):
    """Same frames and r_max, other learning rate and width: nothing recomputed, metrics as unshared."""
    frames = emt_cu_frames[0]
    first, _ = _train(tmp_path / "a", frames, share=True)
    # the first training builds both datasets once; its 2nd epoch and final validation reuse them
    assert first.info["data_cache"]["datasets_built"] == 2
    assert first.info["data_cache"]["frames_computed"] == 12
    assert first.info["data_cache"]["frames_reused"] > 0

    changes = {"learning_rate": 0.003, "num_features": 4}
    second, shared_run = _train(tmp_path / "b", frames, share=True, **changes)
    cache = second.info["data_cache"]
    assert cache["datasets_built"] == 0 and cache["frames_computed"] == 0
    assert cache["datasets_reused"] >= 2 and cache["frames_reused"] >= 9 + 2 * 3
    assert cache["transform_seconds_saved"] > 0 and cache["read_seconds_saved"] > 0
    assert second.info["share_work"] is True

    alone, plain_run = _train(tmp_path / "c", frames, share=False, **changes)
    assert alone.info["share_work"] is False
    assert set(alone.info["data_cache"].values()) == {0}
    assert len(shared_run.metrics) == len(plain_run.metrics) == 2
    for with_cache, without in zip(shared_run.metrics, plain_run.metrics):
        for key, value in without.items():
            if np.isfinite(value):
                assert with_cache[key] == pytest.approx(value, rel=1e-9, abs=0), key
    for key, value in alone.info.items():
        if key.startswith("best_val_"):
            assert second.info[key] == pytest.approx(value, rel=1e-9, abs=0), key


def test_another_cutoff_or_other_frames_miss(emt_cu_frames, tmp_path, empty_cache):
    frames = emt_cu_frames[0]
    _train(tmp_path / "a", frames, share=True, max_epochs=1)
    other_cutoff, _ = _train(tmp_path / "b", frames, share=True, max_epochs=1, r_max=4.5)
    assert other_cutoff.info["data_cache"]["datasets_built"] == 2
    assert other_cutoff.info["data_cache"]["frames_computed"] == 12
    reordered, _ = _train(tmp_path / "c", frames[3:] + frames[:3], share=True, max_epochs=1)
    assert reordered.info["data_cache"]["datasets_built"] == 2


def test_shared_dataset_gives_what_nequip_gives(emt_cu_frames, tmp_path, empty_cache):
    """Every transformed field of every frame equals nequip's own ASEDataset's, on first and later use."""
    from hydra.utils import instantiate
    from nequip.data.dataset import ASEDataset

    path = tmp_path / "frames.xyz"
    ase.io.write(path, emt_cu_frames[0], format="extxyz")
    plain = ASEDataset(str(path), transforms=[instantiate(t) for t in _transforms(4.0)],
                       ase_args={"format": "extxyz"})
    for attempt in range(2):
        ours = shared.SharedASEDataset(str(path), transforms=_transforms(4.0), ase_args={"format": "extxyz"})
        assert len(ours) == len(plain) == 12
        assert ours.num_atoms([0, 5]) == plain.num_atoms([0, 5])
        for a, b in zip(ours[list(range(12))], plain[list(range(12))]):
            assert a.keys() == b.keys()
            for key in a:
                assert torch.equal(a[key], b[key]), (attempt, key)
        assert ours[-1]["pos"].shape == (31, 3)
    stats = shared.cache_stats()
    assert stats.datasets_built == 1 and stats.datasets_reused == 1
    # ours[-1] twice, then all 12 a second time
    assert stats.frames_computed == 12 and stats.frames_reused == 1 + 12 + 1


def test_instantiated_transforms_are_refused(emt_cu_frames, tmp_path):
    """Built transform objects would hide r_max from the cache key."""
    from nequip.data.transforms import NeighborListTransform

    path = tmp_path / "frames.xyz"
    ase.io.write(path, emt_cu_frames[0][:2], format="extxyz")
    with pytest.raises(TypeError, match="_recursive_"):
        shared.SharedASEDataset(str(path), transforms=[NeighborListTransform(r_max=4.0)])


def test_callers_get_copies(emt_cu_frames, tmp_path, empty_cache):
    path = tmp_path / "frames.xyz"
    ase.io.write(path, emt_cu_frames[0][:2], format="extxyz")
    dataset = shared.SharedASEDataset(str(path), transforms=_transforms(4.0))
    first = dataset[0]
    edges = first["edge_index"].clone()
    first["edge_index"].zero_()
    first["pos"].add_(1.0)
    again = dataset[0]
    assert torch.equal(again["edge_index"], edges)
    assert not torch.equal(again["pos"], first["pos"])


def test_cache_is_bounded(emt_cu_frames, tmp_path, empty_cache, monkeypatch):
    monkeypatch.setattr(shared, "MAX_ENTRIES", 2)
    path = tmp_path / "frames.xyz"
    ase.io.write(path, emt_cu_frames[0][:2], format="extxyz")
    for r_max in (3.0, 3.5, 4.0):
        shared.SharedASEDataset(str(path), transforms=_transforms(r_max))[0]
    assert shared.cache_stats().evictions == 1
    shared.SharedASEDataset(str(path), transforms=_transforms(3.0))  # evicted: built again
    assert shared.cache_stats().datasets_built == 4
    monkeypatch.setattr(shared, "MAX_BYTES", 1)
    shared.SharedASEDataset(str(path), transforms=_transforms(4.5))[0]
    assert shared.cached_bytes() > 0 and shared.cache_stats().evictions == 4  # only the newest stays


def test_shared_config_differs_only_in_the_data_module():
    params = NequIPParams()
    args = {"type_names": ["Cu"], "train_file": "t.xyz", "val_file": "v.xyz", "seed": 0}
    plain, ours = build_config(params, **args), build_config(params, **args, share_data=True)
    assert plain["data"].pop("_target_") == "nequip.data.datamodule.ASEDataModule"
    assert ours["data"].pop("_target_") == "sweep.trainers.nequip.shared.SharedASEDataModule"
    assert plain == ours
