"""The NequIP trainer on real nequip 0.19 (tiny models, EMT Cu frames, CPU); what every family does is in test_contract_nequip."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import ase.io
import numpy as np
import pytest

from sweep.errors import InputError
from sweep.metrics import score
from sweep.trainers.base import TrainContext, get_trainer

nequip_trainer = pytest.importorskip("sweep.trainers.nequip.trainer")
NequIPModel = nequip_trainer.NequIPModel

TINY = {"num_layers": 2, "num_features": 8, "l_max": 1, "radial_mlp_width": 8, "batch_size": 3}
CPU = TrainContext(device="cpu", seed=0)


class SimulatedCrash(Exception):
    """Raised by a reporter to end a training mid-way, as a killed trial would."""


class Recorder:
    """A reporter that keeps what it is told."""

    def __init__(self, stop_at: int | None = None):
        self.steps: list[int] = []
        self.metrics: list[dict[str, float]] = []
        self.stop_at = stop_at

    def __call__(self, step, metrics):
        self.steps.append(step)
        self.metrics.append(dict(metrics))
        if step == self.stop_at:
            raise SimulatedCrash(f"crash after epoch {step}")


def _train(directory, train, val, reporter=None, **overrides):
    trainer = get_trainer("nequip")
    params = trainer.parse_params({**TINY, **overrides})
    return trainer().train(params, train, val, reporter or Recorder(), Path(directory), CPU)


@pytest.fixture(scope="module")
def trained(emt_cu_frames, tmp_path_factory):
    """One 8-epoch training on 9 frames with 3 explicit validation frames."""
    train, _ = emt_cu_frames
    reporter = Recorder()
    directory = tmp_path_factory.mktemp("nequip_run")
    model = _train(directory, train[:9], train[9:], reporter, max_epochs=8)
    return model, reporter, directory


# --- hyperparameters --------------------------------------------------------------------------


@pytest.mark.parametrize("values, key", [
    ({"cutoff": 5.0}, "cutoff"),
    ({"l_max": -1}, "l_max"),
    ({"r_max": 0.0}, "r_max"),
    ({"r_max": -2.0}, "r_max"),
    ({"num_layers": 0}, "num_layers"),
    ({"lr_factor": 1.0}, "lr_factor"),
    ({"energy_weight": 0, "forces_weight": 0, "stress_weight": 0}, "stress_weight"),
])
def test_bad_params_name_the_key(values, key):
    with pytest.raises(InputError) as info:
        get_trainer("nequip").parse_params(values)
    assert info.value.field == key
    assert "\n" not in str(info.value)
    assert f": {key}: " in str(info.value)


def test_device_choice():
    assert nequip_trainer._accelerator("cpu") == "cpu"
    assert nequip_trainer._accelerator("cuda:0") == "gpu"
    with pytest.raises(InputError, match="device"):
        nequip_trainer._accelerator("tpu")


def test_stress_labels_enter_nequip_unchanged(emt_cu_frames):
    """NequIP reads ASE's Voigt stress into its 3x3 tensor with no sign flip."""
    from ase.stress import voigt_6_to_full_3x3_stress
    from nequip.data import from_ase

    frame = emt_cu_frames[0][0]
    data = from_ase(frame)
    expected = voigt_6_to_full_3x3_stress(frame.get_stress(voigt=True))
    np.testing.assert_allclose(data["stress"].numpy().reshape(3, 3), expected, rtol=1e-6)


# --- training ---------------------------------------------------------------------------------


def test_validation_error_falls_and_is_reported_in_mev(trained):
    model, reporter, directory = trained
    assert reporter.steps == list(range(1, 9))
    first, last = reporter.metrics[0], reporter.metrics[-1]
    for label in ("energy", "forces", "stress"):
        for stat in ("mae", "rmse", "pct"):
            assert np.isfinite(first[f"val_{label}_{stat}"])
    assert first["val_forces_mae"] > 1.5 * last["val_forces_mae"]
    assert first["val_loss"] > 1.15 * last["val_loss"]
    # meV/Å, not eV/Å: EMT Cu forces here are ~0.8 eV/Å, an untrained model is off by hundreds of meV/Å
    assert 50 < first["val_forces_mae"] < 5000
    assert all(m["lr"] == pytest.approx(0.01) for m in reporter.metrics)
    assert model.info["epochs"] == 8
    assert model.info["stop_reason"] == "max_epochs"
    assert model.info["num_weights"] > 100
    assert model.info["best_val_forces_mae"] == pytest.approx(min(m["val_forces_mae"] for m in reporter.metrics))
    assert {"best.ckpt", "last.ckpt", "config.yaml", "train.xyz", "val.xyz", "done.json"} <= set(os.listdir(directory))


def test_predictions_reproduce_nequip_validation_metrics(trained, emt_cu_frames):
    """The ASE-calculator predictions of best.ckpt score exactly what Lightning validated (units, EMA, sign)."""
    model, reporter, _ = trained
    val = emt_cu_frames[0][9:]
    ours = score(val, model.predict(val), prefix="val")
    best = min(reporter.metrics, key=lambda m: m["val_forces_mae"])
    for key in ("val_energy_mae", "val_forces_mae", "val_forces_rmse", "val_stress_mae", "val_stress_rmse"):
        assert ours[key] == pytest.approx(best[key], rel=1e-6), key


def test_load_of_a_non_model_directory_names_the_missing_file(tmp_path):
    with pytest.raises(InputError, match="run.json"):
        NequIPModel.load(tmp_path)


def test_restart_resumes_from_last_checkpoint(emt_cu_frames, tmp_path):
    train, _ = emt_cu_frames
    killed = Recorder(stop_at=2)
    with pytest.raises(SimulatedCrash):
        _train(tmp_path, train[:9], train[9:], killed, max_epochs=4)
    assert killed.steps == [1, 2]
    assert (tmp_path / "last.ckpt").exists() and not (tmp_path / "done.json").exists()

    resumed = Recorder()
    model = _train(tmp_path, train[:9], train[9:], resumed, max_epochs=4)
    assert resumed.steps == [3, 4]
    assert model.info["epochs"] == 4 and model.info["resumed"] is True

    again = Recorder()
    finished = _train(tmp_path, train[:9], train[9:], again, max_epochs=4)
    assert again.steps == []
    assert finished.info == model.info

    with pytest.raises(InputError) as info:
        _train(tmp_path, train[:9], train[9:], Recorder(), max_epochs=5)
    assert info.value.field == "checkpoint_dir"


def test_training_stops_once_the_learning_rate_falls_below_min_lr(emt_cu_frames, tmp_path):
    train, _ = emt_cu_frames
    reporter = Recorder()
    model = _train(tmp_path, train[:9], train[9:], reporter, max_epochs=40, patience=0, min_lr=5e-3)
    assert model.info["stop_reason"] == "min_lr"
    assert reporter.steps == list(range(1, model.info["epochs"] + 1))
    assert model.info["epochs"] < 40
    # every trained epoch ran at or above min_lr; the cut that ended training went below it
    assert all(m["lr"] >= 5e-3 for m in reporter.metrics)
    assert model.info["final_lr"] == pytest.approx(0.01 * 0.2)


def test_two_trainings_in_one_process_and_seeded_holdout(emt_cu_frames, tmp_path):
    train, test = emt_cu_frames
    first = _train(tmp_path / "a", train, [], max_epochs=2, l_max=0)
    second = _train(tmp_path / "b", train, [], max_epochs=2, l_max=1)
    assert first.info["num_weights"] != second.info["num_weights"]
    for model in (first, second):
        predictions = model.predict(test)
        assert all(np.isfinite(p.energy) and p.forces.shape == (31, 3) for p in predictions)
    # 10% of 12 frames held out, the same ones for the same seed
    for run in ("a", "b"):
        assert len(ase.io.read(tmp_path / run / "train.xyz", ":")) == 11
        assert len(ase.io.read(tmp_path / run / "val.xyz", ":")) == 1
    val_a = ase.io.read(tmp_path / "a" / "val.xyz")
    val_b = ase.io.read(tmp_path / "b" / "val.xyz")
    assert np.array_equal(val_a.positions, val_b.positions)


# --- export -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_export_trains_under_stock_nequip_train_and_packages(trained, emt_cu_frames, tmp_path):
    """Stock nequip-train (tm23-sweep not importable) trains the exported config: epoch 1 is the sweep's epoch 1."""
    from tests.trainers.stock import nequip_package, nequip_train_one_epoch, stock_python

    model, reporter, _ = trained
    paths = model.export(tmp_path / "export")
    assert set(paths) == {"config", "package", "train_data", "val_data"}
    config = paths["config"].read_text()
    assert "sweep." not in config  # only nequip's, Lightning's and torch's classes
    assert "max_epochs: 8" in config  # the epochs the sweep trained (its stop rule has no stock counterpart)
    with zipfile.ZipFile(paths["package"]) as archive:
        assert any(name.endswith("model/config.yaml") for name in archive.namelist())

    python = stock_python(tmp_path / "stock-venv")
    out = tmp_path / "cli"
    rows = nequip_train_one_epoch(python, paths["config"].parent, out)
    val_mae = [float(r["val0_epoch/forces_mae"]) for r in rows if r.get("val0_epoch/forces_mae")]
    # the same config, seed and data: nequip-train's first epoch is our first epoch
    assert 1e3 * val_mae[0] == pytest.approx(reporter.metrics[0]["val_forces_mae"], rel=1e-6)
    repackaged = nequip_package(python, out / "best.ckpt", tmp_path / "stock.nequip.zip")
    assert repackaged.stat().st_size > 1000

    # the packaged model predicts what the checkpoint predicts
    from nequip.integrations.ase import NequIPCalculator
    from nequip.integrations.utils import basic_transforms
    from nequip.model.saved_models import load_saved_model

    packaged = load_saved_model(str(paths["package"]), compile_mode="eager").eval()
    calc = NequIPCalculator(model=packaged, device="cpu",
                            transforms=basic_transforms(packaged.metadata, model.params.r_max, ["Cu"], {"Cu": "Cu"}))
    atoms = emt_cu_frames[1][0].copy()
    atoms.calc = calc
    expected = model.predict([atoms])[0]
    np.testing.assert_allclose(atoms.get_forces(), expected.forces, rtol=0, atol=1e-10)
    assert atoms.get_potential_energy() == pytest.approx(expected.energy, abs=1e-8)
