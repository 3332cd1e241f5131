"""The paper's splits: the one place that decides which frames train, validate and test.

Counts are the paper's for 1000-frame trajectories and scale down in proportion on a
smaller store (the embedded default has 100 frames per temperature):

- ``full``: per temperature the archive's train file (first 900) trains and its test file
  (last 100) tests; all three temperatures together make 2700/300. On the real archive
  this is exactly the archive's own files.
- ``grid``: 200 train / 100 test for the hyperparameter grid, spread evenly over the
  ``full`` train and test pools of all three temperatures.
- ``transfer-warm`` / ``transfer-melt``: train on all 1000 cold frames, test on all 1000
  warm or melt frames.
- ``learning-curve:N``: N of the 900 melt train frames (a seeded random subset, nested in
  N), tested on the 100 melt test frames.

Every task then carves a seeded 10% validation set out of its train frames (NequIP's
hold-out; the sweep's metric is the validation force MAE for every model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from ase import Atoms
from pydantic import BaseModel, ConfigDict, Field

from sweep.elements import TEMPERATURES
from sweep.errors import InputError

TRAJECTORY_FRAMES = 1000  # frames per temperature in the real archive
FULL_TRAIN_PER_TEMPERATURE = 900
GRID_TRAIN, GRID_TEST = 200, 100
LEARNING_CURVE_SIZES = (100, 300, 500, 700, 900)
VALIDATION_FRACTION = 0.1

TaskKind = Literal["full", "grid", "transfer-warm", "transfer-melt", "learning-curve"]


class Task(BaseModel):
    """A split of the paper's protocol; ``n`` is the training-set size of a learning curve."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: TaskKind
    n: int | None = Field(default=None, ge=1, le=FULL_TRAIN_PER_TEMPERATURE)

    @property
    def name(self) -> str:
        """The task as written on the command line and in search spaces."""
        return f"{self.kind}:{self.n}" if self.kind == "learning-curve" else self.kind


def parse_task(text: str, source: str = "task") -> Task:
    """Parse ``full``, ``grid``, ``transfer-warm``, ``transfer-melt`` or ``learning-curve:N``."""
    kind, _, n = str(text).partition(":")
    valid = "full, grid, transfer-warm, transfer-melt, learning-curve:N"
    if kind == "learning-curve":
        if not n.isdigit() or not 1 <= int(n) <= FULL_TRAIN_PER_TEMPERATURE:
            raise InputError(source, "task", f"learning-curve needs N in 1..{FULL_TRAIN_PER_TEMPERATURE}, got {text!r}")
        return Task(kind="learning-curve", n=int(n))
    if n or kind not in ("full", "grid", "transfer-warm", "transfer-melt"):
        raise InputError(source, "task", f"unknown task {text!r}; expected one of {valid}")
    return Task(kind=kind)


@dataclass
class SplitFrames:
    """The frames of one task for one element."""

    task: Task
    element: str
    train: list[Atoms]
    val: list[Atoms]
    test: list[Atoms]

    @property
    def train_temperature_K(self) -> float:
        """Mean trajectory temperature of the training frames (FLARE scales σ_f with it)."""
        return float(np.mean([f.info["temperature_K"] for f in self.train]))

    def counts(self) -> dict[str, int]:
        """Frame counts per part."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def scaled(count: int, trajectory_frames: int) -> int:
    """``count`` (a paper figure for 1000-frame trajectories) scaled to ``trajectory_frames``."""
    return max(1, int(round(count * trajectory_frames / TRAJECTORY_FRAMES)))


def evenly(frames: list[Atoms], n: int) -> list[Atoms]:
    """``n`` frames spread evenly over ``frames`` (all of them when ``n`` ≥ len)."""
    if n >= len(frames):
        return list(frames)
    return [frames[i] for i in np.linspace(0, len(frames) - 1, n).round().astype(int)]


def carve_validation(train: list[Atoms], fraction: float, seed: int) -> tuple[list[Atoms], list[Atoms]]:
    """Split a seeded ``fraction`` (at least one frame) off ``train``; returns (train, val)."""
    if fraction <= 0 or len(train) < 2:
        return list(train), []
    n_val = max(1, int(round(fraction * len(train))))
    order = np.random.default_rng(seed).permutation(len(train))
    val_idx = set(order[:n_val].tolist())
    return ([f for i, f in enumerate(train) if i not in val_idx], [f for i, f in enumerate(train) if i in val_idx])


def required_temperatures(task: Task | str) -> tuple[str, ...]:
    """The trajectories ``task`` reads: every one for ``full`` and ``grid``, cold plus the target for
    transfers, melt for learning curves."""
    task = parse_task(task) if isinstance(task, str) else task
    if task.kind in ("full", "grid"):
        return TEMPERATURES
    if task.kind in ("transfer-warm", "transfer-melt"):
        return ("cold", task.kind.removeprefix("transfer-"))
    return ("melt",)


def split_frames(store, element: str, task: Task | str, seed: int = 0,
                 val_fraction: float = VALIDATION_FRACTION) -> SplitFrames:
    """Select ``task``'s train, validation and test frames of ``element`` from a :class:`FrameStore`."""
    task = parse_task(task) if isinstance(task, str) else task
    entry = store.partition(element, "melt" if task.kind == "learning-curve" else "cold")
    length = entry.n_train + entry.n_test
    if task.kind == "full":
        train = store.frames(element, TEMPERATURES, "train")
        test = store.frames(element, TEMPERATURES, "test")
    elif task.kind == "grid":
        train = evenly(store.frames(element, TEMPERATURES, "train"), scaled(GRID_TRAIN, length))
        test = evenly(store.frames(element, TEMPERATURES, "test"), scaled(GRID_TEST, length))
    elif task.kind in ("transfer-warm", "transfer-melt"):
        train = store.frames(element, "cold")
        test = store.frames(element, task.kind.removeprefix("transfer-"))
    else:
        pool = store.frames(element, "melt", "train")
        n = scaled(task.n, length)
        order = np.random.default_rng(seed).permutation(len(pool))
        train = [pool[i] for i in sorted(order[:n])]
        test = store.frames(element, "melt", "test")
    train, val = carve_validation(train, val_fraction, seed)
    return SplitFrames(task=task, element=element, train=train, val=val, test=test)
