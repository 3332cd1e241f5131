"""The one trainer interface that every model family implements, and its registry.

A trainer turns typed hyperparameters and frames (ASE ``Atoms`` carrying energy,
forces and stress through a ``SinglePointCalculator``) into a :class:`TrainedModel`.
Trainers see frames, never files. A model family is a package under ``sweep/trainers/``:
its ``__init__`` holds the light :class:`~sweep.trainers.family.Family` record, and a module
of it subclasses :class:`Trainer` and decorates it with :func:`register_trainer`; every
family passes the contract suite :mod:`sweep.trainers.contract`.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
from ase import Atoms
from pydantic import BaseModel, ConfigDict, ValidationError

from sweep.errors import InputError

#: Called by a trainer once per epoch (NequIP) or per block of added frames (FLARE):
#: ``reporter(step, {"val_forces_mae": ..., ...})``. Metric names are in :mod:`sweep.metrics`.
Reporter = Callable[[int, Mapping[str, float]], None]


def null_reporter(step: int, metrics: Mapping[str, float]) -> None:
    """A reporter that drops everything (for one-off training)."""


class HyperParams(BaseModel):
    """Base of every trainer's hyperparameters: typed, validated, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class TrainContext:
    """What a trainer may know about where it runs, beyond its hyperparameters."""

    #: Trajectory temperature(s) of the training frames in K (FLARE scales σ_f with it).
    temperature_K: float | None = None
    #: "cuda" or "cpu"; ``None`` lets the trainer pick (GPU when visible).
    device: str | None = None
    #: CPUs this trial owns (FLARE runs that many MPI ranks).
    num_cpus: int = 1
    seed: int = 0
    #: The last step the caller's tracking has received (``None``: unknown, replay nothing); a
    #: trainer resuming from a checkpoint reports its checkpointed steps after it again.
    reported_up_to: int | None = None
    #: Free-form notes a trainer may fill (e.g. what it fell back to).
    notes: dict[str, Any] = field(default_factory=dict)
    #: Whether the trainer may reuse work computed by earlier trials in the same worker
    #: (descriptors, neighbour lists); results must not depend on it.
    share_work: bool = field(default_factory=lambda: sharing_enabled())


#: Set to ``0`` to make every trial compute everything itself (for A/B measurements).
SHARE_ENV = "TM23_SHARE_WORK"


def sharing_enabled() -> bool:
    """Whether work shared between trials is allowed: ``$TM23_SHARE_WORK`` (default on)."""
    return os.environ.get(SHARE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@dataclass
class Prediction:
    """One frame's prediction in ASE units: eV, eV/Å, eV/Å³ (Voigt xx yy zz yz xz xy, ASE sign)."""

    energy: float
    forces: np.ndarray
    stress: np.ndarray


def predict_with_calculator(calculator, frames: Sequence[Atoms]) -> list[Prediction]:
    """Each frame's :class:`Prediction` by an ASE ``calculator`` (on a bare copy: positions, cell, pbc)."""
    out = []
    for frame in frames:
        atoms = Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell.array, pbc=frame.pbc)
        atoms.calc = calculator
        out.append(Prediction(energy=float(atoms.get_potential_energy()), forces=atoms.get_forces().copy(),
                              stress=atoms.get_stress(voigt=True).copy()))
    return out


def read_saved_run(directory: Path, kind: str) -> tuple[dict, dict]:
    """(run record, info) of a model folder that ``save`` wrote (``run.json``, ``done.json``).

    A missing file is a one-line :class:`InputError` naming it: the folder is "not a saved ``kind``".
    """
    import json

    from sweep.errors import InputError

    try:
        run = json.loads((directory / "run.json").read_text())
        info = json.loads((directory / "done.json").read_text())["info"]
    except FileNotFoundError as exc:
        raise InputError(directory, Path(exc.filename).name, f"missing: not a saved {kind}") from None
    return run, info


class TrainedModel(abc.ABC):
    """A trained force field: predicts, saves and reloads itself, exports native artifacts."""

    #: Facts worth logging: descriptor dimension, weight count, log-likelihood, epochs, ...
    #: (the keys code outside the family reads are typed by :class:`~sweep.trainers.family.ModelInfo`).
    info: dict[str, Any]

    @property
    def model_info(self):
        """The typed view of :attr:`info`."""
        from sweep.trainers.family import ModelInfo

        return ModelInfo.of(self.info)

    @abc.abstractmethod
    def predict(self, frames: Sequence[Atoms]) -> list[Prediction]:
        """Predict energy, forces and stress for each frame."""

    @abc.abstractmethod
    def save(self, directory: Path) -> None:
        """Write everything :meth:`load` needs into ``directory``."""

    @classmethod
    @abc.abstractmethod
    def load(cls, directory: Path) -> "TrainedModel":
        """Load a model written by :meth:`save`."""

    @abc.abstractmethod
    def export(self, directory: Path) -> dict[str, Path]:
        """Write the model family's native artifacts; return them by kind."""


class Trainer(abc.ABC):
    """A model family. Subclasses set ``name`` and ``Params`` and implement :meth:`train`."""

    name: ClassVar[str]
    Params: ClassVar[type[HyperParams]]
    Model: ClassVar[type[TrainedModel]]

    @classmethod
    def parse_params(cls, values: Mapping[str, Any], source: str = "hyperparameters") -> HyperParams:
        """Validate ``values`` into ``Params``; a bad key or value raises a one-line :class:`InputError`."""
        try:
            return cls.Params(**dict(values))
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "hyperparameters"
            reason = err["msg"]
            if err["type"] == "extra_forbidden":
                reason = f"unknown hyperparameter for {cls.name}; valid keys: {', '.join(cls.Params.model_fields)}"
            raise InputError(source, key, reason) from None

    @abc.abstractmethod
    def train(
        self,
        params: HyperParams,
        train_frames: Sequence[Atoms],
        val_frames: Sequence[Atoms],
        reporter: Reporter,
        checkpoint_dir: Path,
        context: TrainContext,
    ) -> TrainedModel:
        """Train on ``train_frames``, report on ``val_frames``, checkpoint into ``checkpoint_dir``.

        A trainer that finds a checkpoint in ``checkpoint_dir`` resumes from it.
        """


_REGISTRY: dict[str, type[Trainer]] = {}


def register_trainer(cls: type[Trainer]) -> type[Trainer]:
    """Class decorator: make ``cls`` available as ``get_trainer(cls.name)``."""
    _REGISTRY[cls.name] = cls
    return cls


def get_trainer(name: str) -> type[Trainer]:
    """Return the trainer class of family ``name`` (importing it on demand, see :mod:`sweep.trainers.family`)."""
    from sweep.trainers.family import families, get_family

    if name not in _REGISTRY and name in families():
        get_family(name).load_trainer()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = sorted(set(_REGISTRY) | set(families()))
        raise InputError(None, "model", f"unknown model {name!r}; known: {', '.join(known)}") from None


def available_trainers() -> list[str]:
    """Names of the known families and registered trainers."""
    from sweep.trainers.family import families

    return sorted(set(_REGISTRY) | set(families()))
