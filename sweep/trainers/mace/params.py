"""MACE's hyperparameters, named as ``mace_run_train`` names its arguments (light: no torch, no mace).

:meth:`MACEParams.arguments` turns them, with the data files, folders, device and seed of
one training, into the argument dict that MACE's own parser reads (as ``mace_run_train
--config config.yaml``). Loss: MACE's ``stress`` loss (weighted energy, forces and stress);
energies are referenced to per-element averages (``E0s: average``); MACE's
``ReduceLROnPlateau`` schedule and its own patience stop the training.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from sweep.trainers.base import HyperParams

#: The label keys of the extxyz files a MACE training reads (MACE's own ``REF_`` convention).
ENERGY_KEY, FORCES_KEY, STRESS_KEY = "REF_energy", "REF_forces", "REF_stress"


class MACEParams(HyperParams):
    """MACE hyperparameters; defaults are sized for tiny CPU runs."""

    # --- model (mace.modules.ScaleShiftMACE) ---
    r_max: float = Field(4.0, gt=0, description="cutoff radius in Å")
    max_L: int = Field(1, ge=0, le=3, description="highest symmetry order of the hidden features")
    num_channels: int = Field(8, ge=1, description="channels (multiplicity) of the hidden features")
    correlation: int = Field(2, ge=1, le=4, description="body order of the ACE product basis minus one")
    num_interactions: int = Field(2, ge=1, le=4, description="message-passing layers")
    max_ell: int = Field(3, ge=1, description="highest ℓ of the edge spherical harmonics")
    num_radial_basis: int = Field(8, ge=1)
    num_cutoff_basis: int = Field(5, ge=1)
    MLP_irreps: str = Field("16x0e", description="hidden irreps of the readout MLP")
    default_dtype: Literal["float32", "float64"] = "float64"
    # --- loss (MACE's `stress` loss) ---
    energy_weight: float = Field(1.0, ge=0)
    forces_weight: float = Field(100.0, ge=0)
    stress_weight: float = Field(1.0, ge=0)
    # --- optimisation (Adam, amsgrad, ReduceLROnPlateau) ---
    lr: float = Field(0.01, gt=0)
    batch_size: int = Field(4, ge=1)
    valid_batch_size: int = Field(4, ge=1)
    max_num_epochs: int = Field(50, ge=1)
    patience: int = Field(2048, ge=1, description="epochs without a better validation loss before stopping")
    scheduler_patience: int = Field(50, ge=0)
    lr_factor: float = Field(0.8, gt=0, lt=1)
    ema: bool = False
    ema_decay: float = Field(0.99, gt=0, lt=1)
    clip_grad: float | None = Field(10.0, gt=0)
    # --- data ---
    valid_fraction: float = Field(0.1, gt=0, lt=1, description="held out of train when no val frames are given")
    seed: int | None = Field(None, ge=0, description="None: the trial's seed (TrainContext.seed)")

    def arguments(self, *, name: str, train_file: str, valid_file: str, seed: int, device: str,
                  work_dir: str = ".", restart: bool = True) -> dict[str, Any]:
        """The ``mace_run_train`` arguments of one training (keys are MACE's argument names)."""
        args = {k: v for k, v in self.model_dump().items() if k not in ("seed", "ema", "clip_grad", "valid_fraction")}
        args.update({
            "name": name, "seed": seed, "device": device, "model": "MACE",
            "train_file": train_file, "valid_file": valid_file, "valid_fraction": self.valid_fraction,
            "energy_key": ENERGY_KEY, "forces_key": FORCES_KEY, "stress_key": STRESS_KEY,
            "E0s": "average", "loss": "stress", "compute_stress": True, "error_table": "PerAtomMAE",
            "eval_interval": 1, "scheduler": "ReduceLROnPlateau", "clip_grad": self.clip_grad,
            "work_dir": work_dir, "model_dir": work_dir, "checkpoints_dir": f"{work_dir}/checkpoints",
            "results_dir": f"{work_dir}/results", "log_dir": f"{work_dir}/logs",
            "restart_latest": restart, "save_cpu": True, "plot": False, "enable_cueq": False,
            "num_workers": 0, "pin_memory": False,
        })
        if self.ema:
            args.update({"ema": True, "ema_decay": self.ema_decay})
        return args
