"""NequIP-framework trainers (nequip 0.19): NequIP's own Hydra config, trained in-process through Lightning.

:class:`FrameworkTrainer` is the whole route for any model block of the framework;
:class:`NequIPTrainer` is it with ``nequip.model.NequIPGNNModel`` (Allegro's trainer is it
with ``allegro.model.AllegroModel``, :mod:`sweep.trainers.allegro`).

The route mirrors ``nequip/scripts/train.py`` (``nequip-train``) step by step, so that a
run here and a run of the exported ``config.yaml`` under ``nequip-train`` are the same
training; it differs only in that it can be called many times in one process (a Ray actor
is reused), because the ``training_data_stats`` resolver is registered with ``replace=True``.

Trainers see frames, not files: the train and validation frames are written as extxyz into
the checkpoint directory, and NequIP's ``ASEDataModule`` reads them from there. Stress
needs no conversion: NequIP's ``stress`` is ASE's (eV/Å³, positive = tensile; the model
computes ``(1/V) ∂E/∂ε``, and ``nequip.data.from_ase`` reads ASE's Voigt 6-vector into
the full 3×3 tensor without a sign change).

With ``TrainContext.share_work`` (``$TM23_SHARE_WORK``, default on) the data module is
:class:`sweep.trainers.nequip.shared.SharedASEDataModule`: read frames and their neighbour
lists are kept in the process and reused by later epochs and by later trainings on the same
frames, ``r_max`` and type names (a reused Ray actor runs many), with identical results;
``info["data_cache"]`` counts what a training reused. The exported ``config.yaml`` is the
stock config (:mod:`sweep.trainers.nequip.config`): nequip's own ``ASEDataModule`` and no
class of this package, so that ``nequip-train`` and ``nequip-package`` run it without it.

Checkpoint directory layout: ``run.json`` (hyperparameters, seed and a fingerprint of the
frames), ``train.xyz``/``val.xyz``, ``config.yaml`` (the config that ran), ``best.ckpt``
(lowest validation force MAE), ``last.ckpt`` (every epoch; a restart resumes from it),
``csv/`` (Lightning's CSV log) and ``done.json`` once training has finished.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import ase.data
import ase.io
import lightning
import torch
from ase import Atoms
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from omegaconf import OmegaConf

from sweep.errors import InputError
from sweep.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from sweep.trainers.base import (
    HyperParams,
    Prediction,
    predict_with_calculator,
    read_saved_run,
    Reporter,
    TrainContext,
    TrainedModel,
    Trainer,
    register_trainer,
)
from sweep.trainers.labels import fingerprint, holdout_split, label_mav, labelled_copies, write_extxyz
from sweep.trainers.nequip.callbacks import _EV_TO_MEV, _NEQUIP_LABELS, EpochReporter, StopBelowMinLR
from sweep.trainers.nequip.config import FrameworkParams, NequIPParams, build_config
from sweep.trainers.nequip.shared import cache_stats

# --- frames <-> files --------------------------------------------------------------------------


def _accelerator(device: str | None) -> str:
    if device is None:
        return "gpu" if torch.cuda.is_available() else "cpu"
    kind = device.split(":")[0].lower()
    if kind in ("cuda", "gpu"):
        return "gpu"
    if kind == "cpu":
        return "cpu"
    raise InputError("context", "device", f"unknown device {device!r}; use 'cuda' or 'cpu'")


# --- the in-process nequip-train route ----------------------------------------------------------


def _run_nequip(config: dict, *, resume_from: Path | None, extra_callbacks: list[Callback]):
    """Train and then validate the best model, as ``nequip-train`` does with ``run: [train, val]``.

    Returns the Lightning trainer, the training module and the best model's validation metrics.
    """
    from nequip.data.datamodule import NequIPDataModule
    from nequip.scripts._workflow_utils import set_workflow_state
    from nequip.train import NequIPLightningModule
    from nequip.utils import get_current_code_versions
    from nequip.utils.global_state import get_latest_global_state, set_global_state

    cfg = OmegaConf.create(config)
    runs = list(cfg.run)
    set_workflow_state("train")
    try:
        set_global_state()
        data = OmegaConf.to_container(cfg.data, resolve=True)
        datamodule = instantiate(data, _recursive_=False)
        assert isinstance(datamodule, NequIPDataModule)

        trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
        callbacks = [instantiate(c) for c in trainer_cfg.get("callbacks", [])] + extra_callbacks
        trainer_kwargs = {k: v for k, v in trainer_cfg.items() if k != "callbacks"}
        trainer = instantiate(trainer_kwargs, inference_mode=False, callbacks=callbacks)

        # a restart recomputes the same statistics from the same files; the weights, optimizer,
        # EMA, scheduler and loop state then come from `last.ckpt` through `trainer.fit`
        stats = datamodule.get_statistics(dataset="train")

        def training_data_stats(name: str):
            if stats.get(name) is None:
                raise RuntimeError(f"data statistic {name!r} was requested but not computed")
            return stats[name]

        OmegaConf.register_new_resolver("training_data_stats", training_data_stats, use_cache=True, replace=True)
        module_cfg = OmegaConf.to_container(cfg.training_module, resolve=True)
        info_dict = {
            "versions": get_current_code_versions(verbose=False),
            "data": data,
            "trainer": trainer_cfg,
            "global_options": get_latest_global_state(),
            "runs": runs,
            "training_module": module_cfg,
        }
        module = instantiate(module_cfg, _recursive_=False, _convert_="all",
                             num_datasets=datamodule.num_datasets, info_dict=info_dict)
        assert isinstance(module, NequIPLightningModule)
        module.world_size = trainer.world_size

        with warnings.catch_warnings():
            # both harmless: our checkpoint folder also holds the data files and run records,
            # and the LeafSpec deprecation is the one nequip-train silences too
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated.*")
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None,
                        weights_only=True)
            module.run_stage[0] = 1
            best = _model_checkpoint(trainer).best_model_path
            best_metrics = trainer.validate(module, datamodule=datamodule, ckpt_path=best, weights_only=True,
                                            verbose=False)[0]
            module.run_stage[0] = 2
    finally:
        set_workflow_state(None)
    return trainer, module, best_metrics


def _model_checkpoint(trainer: lightning.Trainer) -> ModelCheckpoint:
    return next(cb for cb in trainer.callbacks if isinstance(cb, ModelCheckpoint))


# --- trained model -------------------------------------------------------------------------------


class NequIPModel(TrainedModel):
    """A trained NequIP-framework model: its ``best.ckpt`` plus what is needed to rebuild its config."""

    #: The hyperparameter class of the family (a subclass sets its own).
    Params: type[FrameworkParams] = NequIPParams

    def __init__(self, checkpoint: Path, run: Mapping[str, Any], info: Mapping[str, Any], device: str | None = None):
        self.checkpoint = Path(checkpoint)
        self.run = dict(run)
        self.info = dict(info)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._calculator = None

    @property
    def params(self) -> FrameworkParams:
        """The hyperparameters this model was trained with."""
        return self.Params(**self.run["params"])

    def calculator(self):
        """NequIP's ASE calculator (``nequip.integrations.ase.NequIPCalculator``) on this model."""
        if self._calculator is None:
            from nequip.integrations.ase import NequIPCalculator
            from nequip.integrations.utils import basic_transforms
            from nequip.model.saved_models import load_saved_model
            from nequip.nn import graph_model
            from nequip.utils.global_state import set_global_state

            set_global_state()
            model = load_saved_model(str(self.checkpoint), compile_mode="eager")
            model.eval()
            type_names = model.metadata[graph_model.TYPE_NAMES_KEY].split(" ")
            transforms = basic_transforms(model.metadata, float(model.metadata[graph_model.R_MAX_KEY]), type_names,
                                          {name: name for name in type_names})
            self._calculator = NequIPCalculator(model=model, device=self.device, transforms=transforms)
        return self._calculator

    def predict(self, frames: Sequence[Atoms]) -> list[Prediction]:
        """Energy (eV), forces (eV/Å) and stress (eV/Å³, Voigt, ASE sign) for each frame."""
        return predict_with_calculator(self.calculator(), frames)

    def _data_files(self) -> dict[str, Path]:
        return {"train_data": self.checkpoint.parent / "train.xyz", "val_data": self.checkpoint.parent / "val.xyz"}

    def save(self, directory: Path) -> None:
        """Write ``best.ckpt``, the data files, ``run.json`` and ``done.json`` into ``directory``.

        The checkpoint records its training files by absolute path (``nequip-package`` reads
        one example frame from them), so the copy is pointed at the copied files.
        """
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        if directory == self.checkpoint.parent.resolve():
            return
        copies = {}
        for kind, source in self._data_files().items():
            copies[kind] = _atomic_copy(source, directory / source.name)
        checkpoint = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        data = checkpoint["hyper_parameters"]["info_dict"]["data"]
        data["train_file_path"], data["val_file_path"] = str(copies["train_data"]), str(copies["val_data"])
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(directory / "best.ckpt", buffer.getvalue())
        atomic_write_json(directory / "run.json", self.run)
        atomic_write_json(directory / "done.json", {"info": self.info})

    @classmethod
    def load(cls, directory: Path) -> "NequIPModel":
        """Load a model written by :meth:`save` (or a finished checkpoint directory)."""
        directory = Path(directory).resolve()
        run, info = read_saved_run(directory, "NequIP model")
        return cls(directory / "best.ckpt", run=run, info=info)

    def export(self, directory: Path) -> dict[str, Path]:
        """Write ``config.yaml`` (runs under stock ``nequip-train``), its data files and ``model.nequip.zip``."""
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for kind, source in self._data_files().items():
            paths[kind] = directory / source.name
            if source.resolve() != paths[kind]:
                _atomic_copy(source, paths[kind])
        config = build_config(self.params, type_names=self.run["type_names"], train_file=str(paths["train_data"]),
                              val_file=str(paths["val_data"]), seed=self.run["seed"], stock=True,
                              epochs=self.info.get("epochs"))
        paths["config"] = atomic_write_text(directory / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))
        paths["package"] = package(self.checkpoint, directory / "model.nequip.zip")
        return paths


# --- trainer -------------------------------------------------------------------------------------


class FrameworkTrainer(Trainer):
    """A model block of the NequIP framework, trained through ``nequip-train``'s own route."""

    Params: type[FrameworkParams]
    Model: type[NequIPModel]

    def train(
        self,
        params: HyperParams,
        train_frames: Sequence[Atoms],
        val_frames: Sequence[Atoms],
        reporter: Reporter,
        checkpoint_dir: Path,
        context: TrainContext,
    ) -> NequIPModel:
        """Train (or resume, or reload a finished run) in ``checkpoint_dir``; see the module doc."""
        if not isinstance(params, self.Params):
            params = self.parse_params(params if isinstance(params, Mapping) else params.model_dump())
        checkpoint_dir = Path(checkpoint_dir).resolve()
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        seed = params.seed if params.seed is not None else int(context.seed)
        accelerator = _accelerator(context.device)

        if not train_frames:
            raise InputError("train frames", "train_frames", "no training frames")
        train = labelled_copies(train_frames, "train frames")
        val = labelled_copies(val_frames, "val frames")
        if not val:
            train, val = holdout_split(train, params.val_fraction, seed)
        type_names = sorted({a.symbol for f in train + val for a in f}, key=lambda s: ase.data.atomic_numbers[s])

        run = {"params": params.model_dump(), "seed": seed, "type_names": type_names,
               "frames_sha256": fingerprint(train, val)}
        run_file = checkpoint_dir / "run.json"
        if run_file.exists():
            previous = json.loads(run_file.read_text())
            if {k: previous.get(k) for k in run} != run:
                raise InputError(checkpoint_dir, "checkpoint_dir", f"holds a {self.name} run with other "
                                 "hyperparameters or frames; use a fresh directory")
        done_file = checkpoint_dir / "done.json"
        if done_file.exists():
            return self.Model.load(checkpoint_dir)

        train_file, val_file = checkpoint_dir / "train.xyz", checkpoint_dir / "val.xyz"
        write_extxyz(train_file, train)
        write_extxyz(val_file, val)
        atomic_write_json(run_file, run)
        config = build_config(params, type_names=type_names, train_file=str(train_file), val_file=str(val_file),
                              seed=seed, output_dir=str(checkpoint_dir), accelerator=accelerator,
                              share_data=context.share_work)
        atomic_write_text(checkpoint_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))

        last = checkpoint_dir / "last.ckpt"
        resume_from = last if last.exists() else None
        epoch_reporter = EpochReporter(reporter, label_mav(val))
        cache_before = cache_stats()
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer, module, best_metrics = _run_nequip(config, resume_from=resume_from,
                                                    extra_callbacks=[epoch_reporter])
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        data_cache = cache_stats().minus(cache_before).as_dict()

        stopper = next((cb for cb in trainer.callbacks if isinstance(cb, StopBelowMinLR)), None)
        info = {
            "model": self.name,
            "n_weights": int(sum(p.numel() for p in module.model.parameters())),
            "num_weights": int(sum(p.numel() for p in module.model.parameters())),
            "epochs": int(trainer.current_epoch),
            **{f"best_val_{label}_{stat}": _EV_TO_MEV * float(best_metrics[f"val0_epoch/{name}_{stat}"])
               for label, name in _NEQUIP_LABELS.items() for stat in ("mae", "rmse")},
            "train_seconds": seconds,
            # CPU time of this process (all threads): less sensitive than wall time to other load
            "train_cpu_seconds": cpu_seconds,
            "stop_reason": "min_lr" if stopper is not None and stopper.stopped_epoch is not None else "max_epochs",
            "final_lr": float(trainer.optimizers[0].param_groups[0]["lr"]),
            "resumed": resume_from is not None,
            "accelerator": accelerator,
            "type_names": type_names,
            "seed": seed,
            "share_work": bool(context.share_work),
            # frames and neighbour lists reused from earlier trainings in this process, and from
            # earlier epochs of this one (sweep.trainers.nequip.shared); zeros when not shared
            "data_cache": data_cache,
        }
        atomic_write_json(done_file, {"info": info})
        return self.Model(checkpoint_dir / "best.ckpt", run=run, info=info)


def _atomic_copy(source: Path, target: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def package(checkpoint: Path, output: Path) -> Path:
    """``nequip-package build checkpoint output`` (output must end in ``.nequip.zip``), atomically.

    It runs as a subprocess: importing ``nequip.scripts.package`` reconfigures the root logger
    of the importing process. The checkpoint's training data files must still exist, since
    ``nequip-package`` stores one example frame from them.
    """
    output = Path(output)
    tmp = output.with_name(f".{output.name[:-len('.nequip.zip')]}.{os.getpid()}.tmp.nequip.zip")
    cmd = [sys.executable, "-m", "nequip.scripts.package", "build", str(checkpoint), str(tmp)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"nequip-package build failed ({result.returncode}): {tail[0]}")
    os.replace(tmp, output)
    return output


@register_trainer
class NequIPTrainer(FrameworkTrainer):
    """NequIP (E(3)-equivariant message passing) through ``nequip-train``'s own route."""

    name = "nequip"
    Params = NequIPParams
    Model = NequIPModel


def calculator_from_export(directory: Path, device: str = "cpu"):
    """NequIP's ASE calculator on the exported ``*.nequip.zip`` in ``directory`` (any NequIP-framework model)."""
    from nequip.integrations.ase import NequIPCalculator
    from nequip.integrations.utils import basic_transforms
    from nequip.model.saved_models import load_saved_model
    from nequip.nn import graph_model
    from nequip.utils.global_state import set_global_state

    packages = sorted(Path(directory).glob("*.nequip.zip"))
    if not packages:
        raise InputError(directory, "*.nequip.zip", "missing: not a NequIP-framework export")
    set_global_state()
    model = load_saved_model(str(packages[0]), compile_mode="eager").eval()
    type_names = model.metadata[graph_model.TYPE_NAMES_KEY].split(" ")
    transforms = basic_transforms(model.metadata, float(model.metadata[graph_model.R_MAX_KEY]), type_names,
                                  {name: name for name in type_names})
    return NequIPCalculator(model=model, device=device, transforms=transforms)
