"""Lightning and NequIP pieces of the sweep's NequIP-framework trainings: the stop rule, Voigt stress, reports."""

from __future__ import annotations

import math
from typing import Mapping

import lightning
import torch
from lightning.pytorch.callbacks import Callback, Checkpoint
from nequip.data.modifier import BaseModifier

from sweep.trainers.base import Reporter

#: Our metric labels -> NequIP's metric names (``val0_epoch/<name>_<stat>``).
_NEQUIP_LABELS = {"energy": "per_atom_energy", "forces": "forces", "stress": "stress_voigt"}
_EV_TO_MEV = 1e3
#: (row, column) of the Voigt order xx, yy, zz, yz, xz, xy.
_VOIGT_ROWS, _VOIGT_COLS = (0, 1, 2, 1, 0, 0), (0, 1, 2, 2, 2, 1)


class VoigtStress(BaseModifier):
    """NequIP metric field: stress as its 6 Voigt components (xx, yy, zz, yz, xz, xy).

    NequIP's own ``stress_mae`` averages all 9 entries of the symmetric tensor, which counts
    shear twice; :mod:`sweep.metrics` scores the 6 Voigt components, and so does this field.
    """

    def __init__(self) -> None:
        super().__init__("stress")

    def _func(self, data):
        return data["stress"].reshape(-1, 3, 3)[:, _VOIGT_ROWS, _VOIGT_COLS]

    def __str__(self) -> str:
        return "stress_voigt"


class StopBelowMinLR(Callback):
    """Stop training once the learning rate falls below ``min_lr`` (the paper's stopping rule).

    Lightning steps epoch-interval schedulers after every ``on_train_epoch_end`` hook, and
    no hook follows before the fit loop checks ``trainer.should_stop``. So at the end of each
    epoch this callback replays the coming ``ReduceLROnPlateau`` step on a throwaway copy
    (same state, same monitored value) and stops when the resulting rate is below ``min_lr``:
    no epoch is ever trained with a rate under the threshold.
    """

    def __init__(self, min_lr: float = 1e-5):
        super().__init__()
        self.min_lr = float(min_lr)
        self.stopped_epoch: int | None = None

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        """Set ``trainer.should_stop`` when this epoch's scheduler step takes the LR below ``min_lr``."""
        if trainer.sanity_checking:
            return
        if min(next_epoch_lrs(trainer)) < self.min_lr:
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch


def next_epoch_lrs(trainer: lightning.Trainer) -> list[float]:
    """The learning rates the optimizers will have after this epoch's scheduler steps."""
    lrs = [float(group["lr"]) for opt in trainer.optimizers for group in opt.param_groups]
    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) or config.interval != "epoch":
            continue
        value = trainer.callback_metrics.get(config.monitor)
        if value is None:
            continue
        groups = [{"params": [torch.zeros(1, requires_grad=True)], "lr": g["lr"]}
                  for g in scheduler.optimizer.param_groups]
        probe_optimizer = torch.optim.SGD(groups)
        probe = torch.optim.lr_scheduler.ReduceLROnPlateau(probe_optimizer)
        probe.load_state_dict(scheduler.state_dict())
        probe.step(float(value))
        lrs.extend(float(g["lr"]) for g in probe_optimizer.param_groups)
    return lrs


class EpochReporter(Checkpoint):
    """Report each epoch's validation metrics (meV units) to the trial's reporter.

    It subclasses ``Checkpoint`` only for its place in Lightning's call order: checkpoint
    callbacks run last, in their list order, so placed after ``ModelCheckpoint`` it reports
    once ``last.ckpt`` holds the epoch being reported.
    """

    def __init__(self, reporter: Reporter, label_mav: Mapping[str, float]):
        super().__init__()
        self.reporter = reporter
        self.label_mav = dict(label_mav)

    def on_train_epoch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        """Read ``val0_epoch/*`` from ``trainer.callback_metrics`` and call the reporter."""
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if f"val0_epoch/{_NEQUIP_LABELS['forces']}_mae" not in metrics:
            return
        out: dict[str, float] = {}
        for label, name in _NEQUIP_LABELS.items():
            mae = _EV_TO_MEV * float(metrics[f"val0_epoch/{name}_mae"])
            out[f"val_{label}_mae"] = mae
            out[f"val_{label}_rmse"] = _EV_TO_MEV * float(metrics[f"val0_epoch/{name}_rmse"])
            mav = self.label_mav.get(label, 0.0)
            out[f"val_{label}_pct"] = 100.0 * mae / mav if mav > 0 else math.nan
        out["val_loss"] = float(metrics["val0_epoch/weighted_sum"])
        out["lr"] = float(trainer.optimizers[0].param_groups[0]["lr"])
        self.reporter(trainer.current_epoch + 1, out)
