"""NequIP's own Hydra configuration, built from typed hyperparameters.

In NequIP's design a model is one block of the config (``training_module.model``); the data
module, loss, metrics, optimiser and schedule around it are the framework's. So
:class:`FrameworkParams` holds the framework's knobs, each family's params class adds its
model's and says how to write its block (:meth:`FrameworkParams.model_block`):
:class:`NequIPParams` writes ``nequip.model.NequIPGNNModel``; Allegro's writes
``allegro.model.AllegroModel`` (:mod:`sweep.trainers.allegro`).

:func:`build_config` turns them into the nested dict that ``nequip-train`` reads as
``config.yaml``: an ``ASEDataModule`` over extxyz files, the model inside an
``EMALightningModule`` with Adam, ``EnergyForceStressLoss`` (per-atom energy),
``EnergyForceStressMetrics`` for validation, and the paper's schedule (learning rate × 0.2
when the validation force MAE stalls for ``patience`` epochs, stop once it falls below
``min_lr``).

A ``stock`` config (what an export writes) names only nequip's, Lightning's and torch's
classes, so that it runs where this package is not installed. Two things of the sweep's
config have no stock counterpart and are left out of it:

- the stop below ``min_lr`` (:class:`~sweep.trainers.nequip.callbacks.StopBelowMinLR`):
  Lightning's ``EarlyStopping`` watches only metrics the module logs, and NequIP logs no
  learning rate. The stock config sets ``trainer.max_epochs`` to the epochs the training
  actually ran, so the same schedule stops at the same epoch;
- the Voigt stress metrics (:class:`~sweep.trainers.nequip.callbacks.VoigtStress`), which
  are reported but steer nothing (neither the loss, nor the monitored metric, nor
  ``best.ckpt``); NequIP's own ``stress_mae`` averages the 9 tensor entries.

This module imports neither torch nor nequip, so that hyperparameters can be checked cheaply.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from sweep.trainers.base import HyperParams

#: The validation metric the schedule, the early stop and the ``best.ckpt`` follow.
MONITOR = "val0_epoch/forces_mae"
#: Lightning callback that stops training once the LR < ``min_lr`` (:mod:`sweep.trainers.nequip.callbacks`).
STOP_CALLBACK_TARGET = "sweep.trainers.nequip.callbacks.StopBelowMinLR"
#: NequIP field modifier giving stress as the Voigt 6-vector (:mod:`sweep.trainers.nequip.callbacks`).
VOIGT_STRESS_TARGET = "sweep.trainers.nequip.callbacks.VoigtStress"
#: Data module that reuses frames and neighbour lists across trainings (:mod:`sweep.trainers.nequip.shared`).
SHARED_DATAMODULE_TARGET = "sweep.trainers.nequip.shared.SharedASEDataModule"
#: Where ``nequip-train`` puts its outputs when the YAML is run by Hydra.
HYDRA_OUTPUT_DIR = "${hydra:runtime.output_dir}"


class FrameworkParams(HyperParams):
    """The NequIP framework's knobs around a model block: cutoff, loss, optimisation, schedule, data."""

    r_max: float = Field(4.0, gt=0, description="cutoff radius in Å (NequIP's r_max / cutoff_radius)")
    model_dtype: Literal["float32", "float64"] = "float64"
    # --- loss (nequip.train.EnergyForceStressLoss, per-atom energy) ---
    energy_weight: float = Field(1.0, ge=0)
    forces_weight: float = Field(1.0, ge=0)
    # The paper's coefficients are 1, 1, 1. Stress in eV/Å³ is about a hundred times smaller than
    # forces in eV/Å, so at 1 its squared error hardly enters the loss of a short training, and since
    # energies and forces at one volume do not fix a model's pressure, the fitted pressure then sits
    # GPa off the labels. The short spaces (demo, Allegro, MACE) use 100: an error of 0.01 eV/Å³
    # (1.6 GPa) then weighs as much as a force error of 0.1 eV/Å.
    stress_weight: float = Field(1.0, ge=0)
    # --- optimisation (EMALightningModule + Adam + ReduceLROnPlateau) ---
    learning_rate: float = Field(0.01, gt=0)
    batch_size: int = Field(4, ge=1)
    max_epochs: int = Field(50, ge=1)
    patience: int = Field(100, ge=0, description="epochs without a better val force MAE before the LR cut")
    lr_factor: float = Field(0.2, gt=0, lt=1, description="LR multiplier at a cut (0.2 = cut by 80%)")
    min_lr: float = Field(1e-5, gt=0, description="training stops once the LR falls below this")
    ema_decay: float = Field(0.99, ge=0, le=1)
    # --- data ---
    val_fraction: float = Field(0.1, gt=0, lt=1, description="share of train held out when no val frames are given")
    seed: int | None = Field(None, ge=0, description="None: the trial's seed (TrainContext.seed)")

    @field_validator("stress_weight")
    @classmethod
    def _some_loss(cls, value: float, info: ValidationInfo) -> float:
        # the last of the three weights, so that the error names a key
        if value + info.data.get("energy_weight", 1.0) + info.data.get("forces_weight", 1.0) <= 0:
            raise ValueError("energy_weight, forces_weight and stress_weight are all 0: nothing to fit")
        return value

    def model_block(self) -> dict[str, Any]:
        """The ``training_module.model`` block of the config (each family's own)."""
        raise NotImplementedError

    @staticmethod
    def data_statistics() -> dict[str, str]:
        """The model keys NequIP fills from the training data's statistics."""
        return {"avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
                "per_type_energy_shifts": "${training_data_stats:per_atom_energy_mean}",
                "per_type_energy_scales": "${training_data_stats:forces_rms}"}


class NequIPParams(FrameworkParams):
    """NequIP hyperparameters, named as NequIP names them; defaults are sized for tiny CPU runs."""

    # --- model (nequip.model.NequIPGNNModel) ---
    num_layers: int = Field(2, ge=1, description="interaction blocks")
    l_max: int = Field(1, ge=0, le=6, description="maximum rotation order of the features")
    num_features: int = Field(8, ge=1, description="feature multiplicity per irrep")
    parity: bool = Field(True, description="include odd-parity features")
    radial_mlp_depth: int = Field(1, ge=1)
    radial_mlp_width: int = Field(16, ge=1)
    num_bessels: int = Field(8, ge=1)
    polynomial_cutoff_p: int = Field(6, ge=1)

    def model_block(self) -> dict[str, Any]:
        """``nequip.model.NequIPGNNModel`` with these hyperparameters."""
        return {
            "_target_": "nequip.model.NequIPGNNModel",
            "seed": "${seed}",
            "model_dtype": self.model_dtype,
            "type_names": "${model_type_names}",
            "r_max": "${cutoff_radius}",
            "l_max": self.l_max,
            "parity": self.parity,
            "num_layers": self.num_layers,
            "num_features": self.num_features,
            "radial_mlp_depth": self.radial_mlp_depth,
            "radial_mlp_width": self.radial_mlp_width,
            "num_bessels": self.num_bessels,
            "polynomial_cutoff_p": self.polynomial_cutoff_p,
            **self.data_statistics(),
        }


def build_config(
    params: FrameworkParams,
    *,
    type_names: list[str],
    train_file: str,
    val_file: str,
    seed: int,
    output_dir: str = HYDRA_OUTPUT_DIR,
    accelerator: str = "auto",
    progress_bar: bool = False,
    share_data: bool = False,
    stock: bool = False,
    epochs: int | None = None,
) -> dict[str, Any]:
    """The ``nequip-train`` config for ``params``, as a plain dict (dump it with OmegaConf).

    ``output_dir`` receives ``best.ckpt``, ``last.ckpt`` and the CSV log; the default is
    Hydra's run directory, which is what an exported YAML should use. The config keeps
    NequIP's interpolations (``${seed}``, ``${training_data_stats:...}``) unresolved.
    ``share_data`` swaps nequip's ``ASEDataModule`` for ours with the same arguments, which
    caches read frames and neighbour lists in the process (same results, less work).
    ``stock`` leaves out what needs this package (see the module docstring) and trains
    ``epochs`` epochs (default ``max_epochs``).
    """
    loss_coeffs = {"total_energy": params.energy_weight, "forces": params.forces_weight,
                   "stress": params.stress_weight}
    dataloader = {"_target_": "torch.utils.data.DataLoader", "batch_size": params.batch_size}
    return {
        "run": ["train", "val"],
        "seed": seed,
        "cutoff_radius": params.r_max,
        "model_type_names": list(type_names),
        "chemical_species_to_atom_type_map": {name: name for name in type_names},
        "data": {
            "_target_": SHARED_DATAMODULE_TARGET if share_data else "nequip.data.datamodule.ASEDataModule",
            "seed": "${seed}",
            "train_file_path": str(train_file),
            "val_file_path": str(val_file),
            "ase_args": {"format": "extxyz"},
            # stress in the files is ASE's (eV/Å³, Voigt, positive = tensile), which is NequIP's
            # own sign convention: no StressSignFlipTransform
            "transforms": [
                {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
                 "model_type_names": "${model_type_names}",
                 "chemical_species_to_atom_type_map": "${chemical_species_to_atom_type_map}"},
                {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": "${cutoff_radius}"},
            ],
            "train_dataloader": {**dataloader, "shuffle": True},
            "val_dataloader": dataloader,
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager",
                              "type_names": "${model_type_names}"},
        },
        "trainer": {
            "_target_": "lightning.Trainer",
            "max_epochs": epochs if stock and epochs is not None else params.max_epochs,
            "check_val_every_n_epoch": 1,
            "log_every_n_steps": 1,
            "num_sanity_val_steps": 0,
            "accelerator": accelerator,
            "devices": 1,
            "enable_progress_bar": progress_bar,
            "enable_model_summary": False,
            "default_root_dir": output_dir,
            "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": output_dir, "name": "csv"},
            "callbacks": [
                # best.ckpt follows the val force MAE (the paper's model choice); last.ckpt is
                # rewritten every epoch and is what a restarted run resumes from
                {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "dirpath": output_dir,
                 "filename": "best", "monitor": MONITOR, "mode": "min", "save_top_k": 1,
                 "save_last": True, "enable_version_counter": False},
                *([] if stock else [{"_target_": STOP_CALLBACK_TARGET, "min_lr": params.min_lr}]),
            ],
        },
        "training_module": {
            "_target_": "nequip.train.EMALightningModule",
            "ema_decay": params.ema_decay,
            "loss": {"_target_": "nequip.train.EnergyForceStressLoss", "per_atom_energy": True,
                     "coeffs": loss_coeffs},
            # weighted_sum of the val RMSEs with the loss weights: the validation "loss"
            "val_metrics": {"_target_": "nequip.train.EnergyForceStressMetrics",
                            "coeffs": {"per_atom_energy_rmse": params.energy_weight,
                                       "forces_rmse": params.forces_weight,
                                       "stress_rmse": params.stress_weight},
                            # NequIP's stress metrics average the 9 components of the 3x3
                            # tensor; ours (sweep.metrics) the 6 Voigt components
                            "extra_metrics": [] if stock else [
                                {"name": f"stress_voigt_{stat}", "field": {"_target_": VOIGT_STRESS_TARGET},
                                 "metric": {"_target_": f"nequip.train.{metric}"}}
                                for stat, metric in (("mae", "MeanAbsoluteError"),
                                                     ("rmse", "RootMeanSquaredError"))]},
            "optimizer": {"_target_": "torch.optim.Adam", "lr": params.learning_rate},
            "lr_scheduler": {
                "scheduler": {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau", "mode": "min",
                              "factor": params.lr_factor, "patience": params.patience, "min_lr": 0.0},
                "monitor": MONITOR,
                "interval": "epoch",
                "frequency": 1,
            },
            "model": params.model_block(),
        },
    }
