"""The one trainer interface that every model family implements, and its registry.

A trainer turns typed hyperparameters and frames (ASE ``Atoms`` carrying energy,
forces and stress through a ``SinglePointCalculator``) into a :class:`TrainedModel`.
Trainers see frames, never files. A new model family (MACE, Allegro) is one module
that subclasses :class:`Trainer`, decorates it with :func:`register_trainer` and ships
a search space.
"""

from __future__ import annotations

import abc
import importlib
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


class TrainedModel(abc.ABC):
    """A trained force field: predicts, saves and reloads itself, exports native artifacts."""

    #: Facts worth logging: descriptor dimension, weight count, log-likelihood, epochs, ...
    info: dict[str, Any]

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
#: Built-in trainers, imported lazily so that ``import sweep`` stays light.
_BUILTIN_MODULES = {"flare": "sweep.trainers.flare", "nequip": "sweep.trainers.nequip"}


def register_trainer(cls: type[Trainer]) -> type[Trainer]:
    """Class decorator: make ``cls`` available as ``get_trainer(cls.name)``."""
    _REGISTRY[cls.name] = cls
    return cls


def get_trainer(name: str) -> type[Trainer]:
    """Return the trainer class registered as ``name`` (importing built-ins on demand)."""
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        known = sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))
        raise InputError(None, "model", f"unknown model {name!r}; known: {', '.join(known)}") from None


def available_trainers() -> list[str]:
    """Names of the built-in and registered trainers."""
    return sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))
