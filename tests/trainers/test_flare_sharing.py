"""FLARE trainings that differ only in ζ or σ reuse one set of structures, with bit-identical results."""

from __future__ import annotations

import numpy as np
import pytest

from sweep.trainers import TrainContext, get_trainer
from sweep.trainers.flare import model as flare_model
from sweep.trainers.flare import parallel as flare_parallel
from sweep.trainers.flare.descriptors import StructureCache, descriptor_cache
from tests.conftest import emt_frames

#: 45-dim B2, a few seconds per training; optimised, so ζ and σ change every later step.
SMALL = dict(r_cut=4.5, n_max=5, l_max=2, sparse_per_frame=5, block_size=4, optimize_every=4, maxiter=15)


@pytest.fixture(scope="module")
def frames():
    """8 training, 2 validation and 3 test EMT Cu frames."""
    f = emt_frames("Cu", n_frames=13, seed=3)
    return f[:8], f[8:10], f[10:]


@pytest.fixture(autouse=True)
def empty_cache():
    descriptor_cache().clear()
    yield
    descriptor_cache().clear()


def _train(frames, path, share: bool, num_cpus: int = 1, **overrides):
    train, val, test = frames
    trainer = get_trainer("flare")
    params = trainer.parse_params({**SMALL, **overrides})
    context = TrainContext(temperature_K=1000.0, num_cpus=num_cpus, share_work=share)
    reports = []
    model = trainer().train(params, train, val, lambda s, m: reports.append(dict(m)), path, context)
    preds = model.predict(test)
    flat = np.concatenate([np.r_[p.energy, p.forces.ravel(), p.stress] for p in preds])
    return model, flat, reports


def _assert_same(a, b):
    model_a, pred_a, reports_a = a
    model_b, pred_b, reports_b = b
    assert np.abs(pred_a - pred_b).max() == 0.0
    assert reports_a == reports_b
    assert model_a.model["sparse_indice"] == model_b.model["sparse_indice"]
    assert model_a.info["hyperparameters"] == model_b.info["hyperparameters"]


@pytest.mark.parametrize("change", [{"zeta": 1}, {"sigma": 0.5, "sigma_f": 0.1}],
                         ids=["zeta", "sigma"])
def test_a_second_training_reuses_the_structures_and_predicts_the_same(change, frames, tmp_path):
    first, _, _ = _train(frames, tmp_path / "first", share=True)  # ζ = 2, default σ's
    n_train, n_val = len(frames[0]), len(frames[1])
    # each training and validation frame once; frame 0 again for the descriptor length, from the cache
    assert first.info["descriptors"]["computed"] == n_train + n_val
    assert first.info["descriptors"]["reused"] == 1

    shared = _train(frames, tmp_path / "shared", share=True, **change)
    alone = _train(frames, tmp_path / "alone", share=False, **change)
    tally = shared[0].info["descriptors"]
    assert tally["shared"] and tally["computed"] == 0 and tally["reused"] == n_train + n_val + 1
    assert shared[0].prediction_tally.reused == len(frames[2]) and shared[0].prediction_tally.computed == 0
    alone_tally = alone[0].info["descriptors"]
    assert alone_tally["reused"] == 0 and alone_tally["computed"] == n_train + n_val + 1
    assert alone[0].prediction_tally.computed == len(frames[2])
    _assert_same(shared, alone)
    assert shared[0].info["zeta"] == change.get("zeta", 2)


def test_other_descriptor_settings_do_not_share(frames, tmp_path):
    _train(frames, tmp_path / "b2", share=True)
    other = _train(frames, tmp_path / "rcut", share=True, r_cut=4.0)[0]
    b1 = _train(frames, tmp_path / "b1", share=True, descriptor="B1", l_max=0)[0]
    for model in (other, b1):
        assert model.info["descriptors"]["computed"] > 0
    # each model had its first training frame once more for the descriptor length
    assert other.info["descriptors"]["reused"] == b1.info["descriptors"]["reused"] == 1
    assert descriptor_cache().stats()["entries"] == 3 * (len(frames[0]) + len(frames[1]) + len(frames[2]))


def test_the_switch_follows_the_environment(frames, tmp_path, monkeypatch):
    monkeypatch.setenv("TM23_SHARE_WORK", "0")
    assert TrainContext().share_work is False
    monkeypatch.setenv("TM23_SHARE_WORK", "1")
    assert TrainContext().share_work is True
    monkeypatch.delenv("TM23_SHARE_WORK")
    assert TrainContext().share_work is True


def test_saved_info_records_prediction_structures_and_reloads(frames, tmp_path):
    model, _, _ = _train(frames, tmp_path / "m", share=True)
    model.save(tmp_path / "saved")
    loaded = flare_model.FlareModel.load(tmp_path / "saved")
    assert loaded.info == model.info
    assert loaded.info["prediction_descriptors"]["computed"] == len(frames[2])
    assert loaded.share_work is False  # a reloaded model keeps to itself


def test_cache_evicts_other_settings_first_and_never_exceeds_its_budget():
    cache = StructureCache(max_bytes=100)
    for i in range(4):
        assert cache.put(("a", i), "a", f"a{i}", 20, 0.1)
    assert cache.get(("a", 0)) is not None  # now the most recently used of group a
    assert cache.put(("b", 0), "b", "b0", 30, 0.1)  # evicts a1, the least recently used
    assert cache.get(("a", 1)) is None and cache.get(("a", 0)).value == "a0"
    assert cache.bytes <= 100 and cache.stats()["evictions"] == 1
    # group b needs room: group a is evicted, b's own entries never are
    assert cache.put(("b", 1), "b", "b1", 60, 0.1)
    assert cache.bytes <= 100 and cache.get(("b", 0)).value == "b0"
    assert not cache.put(("b", 2), "b", "b2", 30, 0.1)  # b fills the budget alone: refused, b0 and b1 kept
    assert cache.get(("b", 1)).value == "b1" and cache.stats()["refused"] == 1
    assert not cache.put(("c", 0), "c", "huge", 101, 0.1)


@pytest.mark.skipif(flare_parallel.unavailable() is not None, reason=f"MPI unavailable: {flare_parallel.unavailable()}")
def test_mpi_trainings_share_the_launching_process_structures(frames, tmp_path):
    """Ranks compute their own; the launching process reuses its structures for the model's predictions."""
    _train(frames, tmp_path / "first", share=True, num_cpus=2)
    shared = _train(frames, tmp_path / "shared", share=True, num_cpus=2, zeta=1)
    alone = _train(frames, tmp_path / "alone", share=False, num_cpus=2, zeta=1)
    assert shared[0].info["parallel"]["ranks"] == 2
    assert shared[0].info["descriptors"]["computed"] > 0  # rank 0, a fresh process
    assert shared[0].prediction_tally.computed == 0 and shared[0].prediction_tally.reused > len(frames[2])
    assert alone[0].prediction_tally.reused == 0
    _assert_same(shared, alone)
