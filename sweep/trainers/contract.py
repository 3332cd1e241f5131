"""The trainer contract: tests every model family passes, shipped with the package.

In the manner of nequip's ``BaseEnergyModelTests``: a family's test module subclasses
:class:`TrainerContract`, names the family and gives a small params fixture, and pytest
collects the contract's tests for it::

    from sweep.trainers.contract import TrainerContract

    class TestAllegroContract(TrainerContract):
        family = "allegro"
        params = {"num_layers": 1, "num_scalar_features": 8, "max_epochs": 3}
        bad_value = ("r_max", -1.0)

The contract trains on a handful of EMT-labelled Cu frames (real ASE, real trainer, CPU):

- bad keys and bad values are refused with a one-line :class:`~sweep.errors.InputError`
  naming the key;
- an unlabelled frame is refused naming the frame, before anything is trained;
- save/load is the identity: the reloaded model predicts bit for bit the same;
- an interrupted training resumes from its checkpoint: no report is repeated, and the
  reports of the two halves are those of an uninterrupted training;
- stress is ASE's: positive = tensile, Voigt order xx, yy, zz, yz, xz, xy (each component
  is the strain derivative of the model's own energy over the volume);
- the export writes every required native file of the family record, and the family's
  ASE calculator on the export folder predicts the model's forces;
- reporter steps increase and carry the family's selection metric;
- training twice at a fixed seed gives the same reports and the same predictions.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from sweep.errors import InputError
from sweep.trainers.base import TrainContext, get_trainer
from sweep.trainers.family import get_family


class Interrupt(Exception):
    """Raised by the contract's reporter to end a training mid-way, as a killed trial would end."""


class Recorder:
    """A reporter that keeps what it is told and may stop the training at a step."""

    def __init__(self, stop_at_first: bool = False):
        self.steps: list[int] = []
        self.metrics: list[dict[str, float]] = []
        self.stop_at_first = stop_at_first

    def __call__(self, step: int, metrics) -> None:
        self.steps.append(int(step))
        self.metrics.append({k: float(v) for k, v in metrics.items()})
        if self.stop_at_first:
            raise Interrupt(f"interrupted after step {step}")


def emt_cu_frames(n_frames: int, seed: int = 7, rattle: float = 0.1):
    """Rattled, strained 31-atom fcc Cu cells with a vacancy, labelled by ASE's EMT."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from sweep.data.frames import relabel

    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", cubic=True).repeat((2, 2, 2))
    del base[0]
    frames = []
    for _ in range(n_frames):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=rattle, size=atoms.positions.shape)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(scale=0.01, size=(3, 3))), scale_atoms=True)
        frames.append(relabel(atoms, EMT()))
    return frames


def _same_predictions(a, b) -> bool:
    return all(p.energy == q.energy and np.array_equal(p.forces, q.forces) and np.array_equal(p.stress, q.stress)
               for p, q in zip(a, b))


class TrainerContract:
    """The contract; subclass it in a test module (see the module docstring)."""

    #: The family's registry name.
    family: ClassVar[str]
    #: Small hyperparameters: a few seconds of CPU per training.
    params: ClassVar[dict[str, Any]]
    #: One hyperparameter and a value its validation refuses.
    bad_value: ClassVar[tuple[str, Any]]
    #: Frames: training, validation, test.
    n_train: ClassVar[int] = 8
    n_val: ClassVar[int] = 2
    n_test: ClassVar[int] = 2
    #: Whether a resumed training ends with the same model as an uninterrupted one (FLARE's does;
    #: Lightning's and MACE's restarts restore no data order, so theirs differ after the restart).
    resume_is_exact: ClassVar[bool] = True
    #: Relative tolerance of the finite-difference stress check.
    stress_rtol: ClassVar[float] = 2e-3

    # --- fixtures ---------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    def frames(self):
        """(train, val, test) EMT Cu frames."""
        frames = emt_cu_frames(self.n_train + self.n_val + self.n_test)
        return (frames[:self.n_train], frames[self.n_train:self.n_train + self.n_val],
                frames[self.n_train + self.n_val:])

    def context(self) -> TrainContext:
        """A one-CPU context at seed 0 on the CPU."""
        return TrainContext(device="cpu", num_cpus=1, seed=0, temperature_K=1000.0)

    def train(self, directory: Path, frames, reporter=None):
        """Train the family with :attr:`params` on ``frames`` (train, val) in ``directory``."""
        trainer = get_trainer(self.family)
        hyper = trainer.parse_params(self.params)
        return trainer().train(hyper, frames[0], frames[1], reporter or Recorder(), Path(directory), self.context())

    @pytest.fixture(scope="class")
    def trained(self, frames, tmp_path_factory):
        """One training, its reporter and its folder."""
        reporter = Recorder()
        directory = tmp_path_factory.mktemp(f"{self.family}-trained")
        return self.train(directory, frames, reporter), reporter, directory

    # --- hyperparameters ---------------------------------------------------------------------

    def test_unknown_key_is_refused_naming_it(self):
        trainer = get_trainer(self.family)
        with pytest.raises(InputError) as info:
            trainer.parse_params({**self.params, "no_such_knob": 1})
        assert info.value.field == "no_such_knob" and "\n" not in str(info.value)

    def test_bad_value_is_refused_naming_the_key(self):
        key, value = self.bad_value
        with pytest.raises(InputError) as info:
            get_trainer(self.family).parse_params({**self.params, key: value})
        assert info.value.field == key and "\n" not in str(info.value)

    def test_params_class_of_the_record_is_the_trainers(self):
        record = get_family(self.family)
        assert record.load_params() is get_trainer(self.family).Params

    # --- frames ---------------------------------------------------------------------------------

    def test_unlabelled_frame_is_refused_naming_it(self, frames, tmp_path):
        train = [f.copy() for f in frames[0]]
        for f, original in zip(train, frames[0]):
            f.calc = original.calc
        train[1].calc = None
        with pytest.raises(InputError) as info:
            self.train(tmp_path, (train, frames[1]))
        assert info.value.frame == 1

    # --- training ------------------------------------------------------------------------------

    def test_reporter_steps_increase_and_carry_the_selection_metric(self, trained):
        _, reporter, _ = trained
        metric = get_family(self.family).selection.metric
        assert reporter.steps and reporter.steps == sorted(set(reporter.steps)) and reporter.steps[0] >= 1
        for metrics in reporter.metrics:
            assert math.isfinite(metrics[metric]) and metrics[metric] > 0

    def test_save_and_load_is_the_identity(self, trained, frames, tmp_path):
        model, _, _ = trained
        model.save(tmp_path / "saved")
        loaded = type(model).load(tmp_path / "saved")
        assert _same_predictions(model.predict(frames[2]), loaded.predict(frames[2]))
        assert loaded.info == model.info
        assert loaded.model_info.model == self.family

    def test_stress_is_ases_sign_and_voigt_order(self, trained, frames):
        model, _, _ = trained
        atoms = frames[2][0]
        predicted = model.predict([atoms])[0]
        assert predicted.forces.shape == (len(atoms), 3) and predicted.stress.shape == (6,)
        eps, volume = 1e-4, atoms.get_volume()
        strained = []
        for i, j in ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)):
            for sign in (1, -1):
                x = np.eye(3)
                x[i, j] += sign * eps
                x[j, i] += sign * eps if i != j else 0.0
                frame = atoms.copy()
                frame.set_cell(atoms.cell.array @ x, scale_atoms=True)
                strained.append(frame)
        energies = [p.energy for p in model.predict(strained)]
        numerical = np.array([(energies[2 * k] - energies[2 * k + 1]) / (2 * eps * volume) * (1.0 if k < 3 else 0.5)
                              for k in range(6)])
        scale = np.abs(numerical).max()
        assert scale > 1e-5, "the model's stress is too small to check"
        np.testing.assert_allclose(predicted.stress, numerical, rtol=0, atol=self.stress_rtol * scale)

    def test_resume_from_a_checkpoint_repeats_no_step(self, frames, trained, tmp_path):
        fresh, fresh_reports, _ = trained
        first = Recorder(stop_at_first=True)
        with pytest.raises(Interrupt):
            self.train(tmp_path, frames, first)
        second = Recorder()
        resumed = self.train(tmp_path, frames, second)
        assert second.steps and min(second.steps) > max(first.steps)
        assert first.steps + second.steps == fresh_reports.steps
        predictions = resumed.predict(frames[2])
        assert all(np.isfinite(p.forces).all() for p in predictions)
        if self.resume_is_exact:
            for a, b in zip(predictions, fresh.predict(frames[2])):
                np.testing.assert_allclose(a.forces, b.forces, rtol=1e-6, atol=1e-9)

    def test_the_same_seed_trains_the_same_model(self, frames, trained, tmp_path):
        model, reporter, _ = trained
        again = Recorder()
        second = self.train(tmp_path, frames, again)
        assert again.steps == reporter.steps
        for a, b in zip(again.metrics, reporter.metrics):
            assert a.keys() == b.keys()
            np.testing.assert_allclose([a[k] for k in sorted(a) if "seconds" not in k and k != "lr_time"],
                                       [b[k] for k in sorted(b) if "seconds" not in k and k != "lr_time"],
                                       rtol=1e-9, atol=1e-12)
        for a, b in zip(second.predict(frames[2]), model.predict(frames[2])):
            np.testing.assert_allclose(a.forces, b.forces, rtol=1e-9, atol=1e-12)

    # --- export --------------------------------------------------------------------------------

    def test_export_writes_the_records_files_and_its_calculator_predicts_the_model(self, trained, frames, tmp_path):
        model, _, _ = trained
        out = tmp_path / "export"
        written = model.export(out)
        names = [p.name for p in out.rglob("*") if p.is_file()]
        assert all(Path(p).is_file() for p in written.values())
        for spec in get_family(self.family).exports:
            if spec.required:
                assert any(spec.matches(n) for n in names), (spec.pattern, names)
        calc = get_family(self.family).calculator_from_export(out)
        atoms = frames[2][0].copy()
        atoms.calc = calc
        expected = model.predict([frames[2][0]])[0].forces
        np.testing.assert_allclose(atoms.get_forces(), expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
