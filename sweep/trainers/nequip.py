"""The NequIP trainer (nequip 0.19): NequIP's own Hydra config, trained in-process through Lightning.

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
:class:`sweep.trainers.nequip_shared.SharedASEDataModule`: read frames and their neighbour
lists are kept in the process and reused by later epochs and by later trainings on the same
frames, ``r_max`` and type names (a reused Ray actor runs many), with identical results;
``info["data_cache"]`` counts what a training reused. The exported ``config.yaml`` keeps
nequip's own ``ASEDataModule``.

Checkpoint directory layout: ``run.json`` (hyperparameters, seed and a fingerprint of the
frames), ``train.xyz``/``val.xyz``, ``config.yaml`` (the config that ran), ``best.ckpt``
(lowest validation force MAE), ``last.ckpt`` (every epoch; a restart resumes from it),
``csv/`` (Lightning's CSV log) and ``done.json`` once training has finished.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
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
import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from nequip.data.modifier import BaseModifier
from omegaconf import OmegaConf

from sweep.errors import InputError
from sweep.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from sweep.trainers.base import (
    HyperParams,
    Prediction,
    Reporter,
    TrainContext,
    TrainedModel,
    Trainer,
    register_trainer,
)
from sweep.trainers.nequip_config import NequIPParams, build_config
from sweep.trainers.nequip_shared import cache_stats

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


class _EpochReporter(Checkpoint):
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


# --- frames <-> files --------------------------------------------------------------------------


def _labelled(frames: Sequence[Atoms], source: str) -> list[Atoms]:
    """Bare copies of ``frames`` carrying only energy, forces and stress; bad frames raise InputError."""
    out = []
    for index, frame in enumerate(frames):
        if frame.calc is None:
            raise InputError(source, "calculator", "frame has no labels (energy, forces, stress)", frame=index)
        try:
            energy = frame.get_potential_energy()
            forces = frame.get_forces()
            stress = frame.get_stress(voigt=True)
        except Exception as exc:  # ASE raises PropertyNotImplementedError and friends
            raise InputError(source, "labels", f"energy, forces and stress are required: {exc}", frame=index) from None
        atoms = Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell.array, pbc=frame.pbc)
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
        out.append(atoms)
    return out


def _write_extxyz(path: Path, frames: Sequence[Atoms]) -> Path:
    buffer = io.StringIO()
    ase.io.write(buffer, list(frames), format="extxyz")
    return atomic_write_text(path, buffer.getvalue())


def _fingerprint(*frame_sets: Sequence[Atoms]) -> str:
    digest = hashlib.sha256()
    for frames in frame_sets:
        digest.update(str(len(frames)).encode())
        for atoms in frames:
            for array in (atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc,
                          atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress(voigt=True)):
                digest.update(np.ascontiguousarray(array, dtype=float).tobytes())
    return digest.hexdigest()


def _label_mav(frames: Sequence[Atoms]) -> dict[str, float]:
    """Mean |label| of ``frames`` in meV units (the % error's denominator, Eq. 2)."""
    energy = np.array([f.get_potential_energy() / len(f) for f in frames])
    forces = np.concatenate([f.get_forces().ravel() for f in frames])
    stress = np.concatenate([f.get_stress(voigt=True) for f in frames])
    return {label: float(_EV_TO_MEV * np.mean(np.abs(values)))
            for label, values in (("energy", energy), ("forces", forces), ("stress", stress))}


def holdout_split(frames: Sequence[Atoms], fraction: float, seed: int) -> tuple[list[Atoms], list[Atoms]]:
    """Split ``frames`` into (train, val) with a seeded random ``fraction`` (at least one frame) held out."""
    if len(frames) < 2:
        raise InputError("train frames", "val_frames", "need at least 2 training frames to hold out validation frames")
    n_val = min(len(frames) - 1, max(1, round(fraction * len(frames))))
    order = np.random.default_rng(seed).permutation(len(frames))
    val_idx = set(order[:n_val].tolist())
    train = [f for i, f in enumerate(frames) if i not in val_idx]
    val = [f for i, f in enumerate(frames) if i in val_idx]
    return train, val


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
    """A trained NequIP model: its ``best.ckpt`` plus what is needed to rebuild its config."""

    def __init__(self, checkpoint: Path, run: Mapping[str, Any], info: Mapping[str, Any], device: str | None = None):
        self.checkpoint = Path(checkpoint)
        self.run = dict(run)
        self.info = dict(info)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._calculator = None

    @property
    def params(self) -> NequIPParams:
        """The hyperparameters this model was trained with."""
        return NequIPParams(**self.run["params"])

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
        calc = self.calculator()
        out = []
        for frame in frames:
            atoms = Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell.array, pbc=frame.pbc)
            atoms.calc = calc
            out.append(Prediction(energy=float(atoms.get_potential_energy()), forces=atoms.get_forces().copy(),
                                  stress=atoms.get_stress(voigt=True).copy()))
        return out

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
        try:
            run = json.loads((directory / "run.json").read_text())
            info = json.loads((directory / "done.json").read_text())["info"]
        except FileNotFoundError as exc:
            raise InputError(directory, Path(exc.filename).name, "missing: not a saved NequIP model") from None
        return cls(directory / "best.ckpt", run=run, info=info)

    def export(self, directory: Path) -> dict[str, Path]:
        """Write ``config.yaml`` (runs under ``nequip-train``), its data files and ``model.nequip.zip``."""
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for kind, source in self._data_files().items():
            paths[kind] = directory / source.name
            if source.resolve() != paths[kind]:
                _atomic_copy(source, paths[kind])
        config = build_config(self.params, type_names=self.run["type_names"], train_file=str(paths["train_data"]),
                              val_file=str(paths["val_data"]), seed=self.run["seed"])
        paths["config"] = atomic_write_text(directory / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))
        paths["package"] = package(self.checkpoint, directory / "model.nequip.zip")
        return paths


# --- trainer -------------------------------------------------------------------------------------


@register_trainer
class NequIPTrainer(Trainer):
    """NequIP (E(3)-equivariant message passing) through ``nequip-train``'s own route."""

    name = "nequip"
    Params = NequIPParams
    Model = NequIPModel

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
        if not isinstance(params, NequIPParams):
            params = self.parse_params(params if isinstance(params, Mapping) else params.model_dump())
        checkpoint_dir = Path(checkpoint_dir).resolve()
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        seed = params.seed if params.seed is not None else int(context.seed)
        accelerator = _accelerator(context.device)

        if not train_frames:
            raise InputError("train frames", "train_frames", "no training frames")
        train = _labelled(train_frames, "train frames")
        val = _labelled(val_frames, "val frames")
        if not val:
            train, val = holdout_split(train, params.val_fraction, seed)
        type_names = sorted({a.symbol for f in train + val for a in f}, key=lambda s: ase.data.atomic_numbers[s])

        run = {"params": params.model_dump(), "seed": seed, "type_names": type_names,
               "frames_sha256": _fingerprint(train, val)}
        run_file = checkpoint_dir / "run.json"
        if run_file.exists():
            previous = json.loads(run_file.read_text())
            if {k: previous.get(k) for k in run} != run:
                raise InputError(checkpoint_dir, "checkpoint_dir", "holds a NequIP run with other hyperparameters "
                                 "or frames; use a fresh directory")
        done_file = checkpoint_dir / "done.json"
        if done_file.exists():
            return NequIPModel.load(checkpoint_dir)

        train_file, val_file = checkpoint_dir / "train.xyz", checkpoint_dir / "val.xyz"
        _write_extxyz(train_file, train)
        _write_extxyz(val_file, val)
        atomic_write_json(run_file, run)
        config = build_config(params, type_names=type_names, train_file=str(train_file), val_file=str(val_file),
                              seed=seed, output_dir=str(checkpoint_dir), accelerator=accelerator,
                              share_data=context.share_work)
        atomic_write_text(checkpoint_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(config)))

        last = checkpoint_dir / "last.ckpt"
        resume_from = last if last.exists() else None
        epoch_reporter = _EpochReporter(reporter, _label_mav(val))
        cache_before = cache_stats()
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer, module, best_metrics = _run_nequip(config, resume_from=resume_from,
                                                    extra_callbacks=[epoch_reporter])
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        data_cache = cache_stats().minus(cache_before).as_dict()

        stopper = next((cb for cb in trainer.callbacks if isinstance(cb, StopBelowMinLR)), None)
        info = {
            "model": "nequip",
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
            # earlier epochs of this one (sweep.trainers.nequip_shared); zeros when not shared
            "data_cache": data_cache,
        }
        atomic_write_json(done_file, {"info": info})
        return NequIPModel(checkpoint_dir / "best.ckpt", run=run, info=info)





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
