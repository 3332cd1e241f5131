"""The MACE trainer: MACE's own training (``mace_run_train``) in MACE's own interpreter, driven from here.

mace-torch 0.3.16 pins e3nn 0.4.4 while nequip 0.19 needs e3nn 0.6, and MACE's maintainers
keep the pin (training is not supported on newer e3nn), so MACE lives in a second venv
(``.venv-mace``, built by ``make``; ``$TM23_MACE_PYTHON`` points elsewhere). This module
imports neither torch nor MACE: it writes the frames and MACE's arguments, runs
:mod:`sweep.trainers.mace.worker` in that interpreter as a subprocess (the way FLARE's MPI
path runs ``mpiexec``), and turns MACE's own per-epoch log into reporter calls.

Checkpoint directory layout: ``run.json`` (hyperparameters, seed, frames' fingerprint),
``train.xyz``/``val.xyz`` (labels under MACE's ``REF_`` keys), ``config.yaml`` (the
arguments, as ``mace_run_train --config`` reads them), MACE's own ``checkpoints/``,
``results/`` and ``logs/``, ``mace.model`` (MACE's model of lowest validation loss),
``reported.json`` (the last epoch reported) and ``done.json`` once training has finished.

Reports: MACE logs each epoch's validation errors as a JSON line in
``results/<name>_run-<seed>_train.txt``; an epoch is reported once MACE has written that
epoch's checkpoint or moved on to the next epoch, so that a report never runs ahead of what a
restart can resume. Metrics are in meV units (energy per atom, forces per component); MACE's
stress errors average the 9 tensor entries, so the per-epoch reports carry no stress (the
final validation and test scores, from :mod:`sweep.metrics`, do).

Resume: MACE's own ``--restart_latest`` reloads its latest checkpoint (model, optimiser,
scheduler; it saves one whenever the validation loss improves) and goes on from that epoch;
epochs already reported are not reported again. MACE restores no data order, so a resumed
training is a valid MACE training but not bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Mapping, Sequence

import ase.data
import ase.io
import numpy as np
import yaml
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from sweep.errors import InputError
from sweep.io.atomic import atomic_write_json, atomic_write_text
from sweep.trainers.base import (Prediction, Reporter, TrainContext, TrainedModel, Trainer, predict_with_calculator,
                                 read_saved_run, register_trainer)
from sweep.trainers.labels import EV_TO_MEV, fingerprint, holdout_split, label_mav, labelled_copies
from sweep.trainers.mace.params import ENERGY_KEY, FORCES_KEY, STRESS_KEY, MACEParams

WORKER = Path(__file__).with_name("worker.py")
#: MACE's experiment name inside a checkpoint directory (its files are named after it).
RUN_NAME = "mace"
#: The model MACE saves at the end of training (``<model_dir>/<name>.model``).
MODEL_FILE = f"{RUN_NAME}.model"
_POLL_S = 0.25


def mace_python() -> Path:
    """MACE's interpreter (the family record says where); a missing one is a one-line InputError."""
    from sweep.trainers.family import get_family

    record = get_family("mace")
    python = record.python()
    if not python.is_file():
        where = record.interpreter
        raise InputError("environment", where.env, f"no MACE interpreter at {python}; run `make {where.make_target}` "
                                                   f"or set ${where.env}")
    return python


def write_mace_extxyz(path: Path, frames: Sequence[Atoms]) -> Path:
    """Frames with their labels under MACE's keys: ``REF_energy``, ``REF_forces``, ``REF_stress`` (ASE Voigt)."""
    out = []
    for frame in frames:
        atoms = Atoms(numbers=frame.numbers, positions=frame.positions, cell=frame.cell.array, pbc=frame.pbc)
        atoms.info[ENERGY_KEY] = float(frame.get_potential_energy())
        atoms.info[STRESS_KEY] = np.asarray(frame.get_stress(voigt=True), dtype=float)
        atoms.arrays[FORCES_KEY] = np.asarray(frame.get_forces(), dtype=float)
        out.append(atoms)
    buffer = io.StringIO()
    ase.io.write(buffer, out, format="extxyz")
    return atomic_write_text(path, buffer.getvalue())


def _yaml_arguments(arguments: Mapping[str, Any]) -> str:
    # MACE's parser reads the YAML through configargparse: None as "None" (clip_grad), the rest as is
    plain = {k: ("None" if v is None else v) for k, v in arguments.items()}
    return yaml.safe_dump(plain, sort_keys=False)


# --- the MACE interpreter as an ASE calculator ----------------------------------------------------


class MACEServer:
    """A MACE ``MACECalculator`` in MACE's interpreter, answering frames over a pipe (see worker ``serve``)."""

    def __init__(self, model: Path, device: str = "cpu", dtype: str = "float64"):
        self.model, self.device, self.dtype = Path(model), device, dtype
        self._proc: subprocess.Popen | None = None
        self._stderr: deque[str] = deque(maxlen=20)
        self._lock = threading.Lock()

    def _start(self) -> subprocess.Popen:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [str(mace_python()), str(WORKER), "serve", str(self.model), self.device, self.dtype],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                env=_worker_env(1), start_new_session=True)
            threading.Thread(target=self._drain, args=(self._proc,), daemon=True).start()
            self._read()  # the "ready" line
        return self._proc

    def _drain(self, proc: subprocess.Popen) -> None:
        for line in proc.stderr:
            self._stderr.append(line.rstrip())

    def _read(self) -> dict:
        line = self._proc.stdout.readline()
        if not line:
            self._proc.wait()
            raise RuntimeError(f"MACE worker exited ({self._proc.returncode}): " + " | ".join(self._stderr))
        return json.loads(line)

    def __call__(self, atoms: Atoms) -> dict:
        """Energy (eV), forces (eV/Å) and, for a periodic cell, stress (eV/Å³, ASE Voigt) of ``atoms``."""
        with self._lock:
            proc = self._start()
            frame = {"numbers": atoms.numbers.tolist(), "positions": atoms.positions.tolist(),
                     "cell": atoms.cell.array.tolist(), "pbc": [bool(p) for p in atoms.pbc]}
            proc.stdin.write(json.dumps(frame) + "\n")
            proc.stdin.flush()
            return self._read()

    def close(self) -> None:
        """Stop the worker."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.stdin.close()
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class MACEProcessCalculator(Calculator):
    """An ASE calculator on a MACE model file, computed by ``MACECalculator`` in MACE's interpreter."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: Path, device: str = "cpu", dtype: str = "float64", **kwargs):
        super().__init__(**kwargs)
        self.server = MACEServer(model, device, dtype)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        """Ask the MACE worker for this frame."""
        super().calculate(atoms, properties, system_changes)
        reply = self.server(self.atoms)
        self.results = {"energy": reply["energy"], "free_energy": reply["energy"],
                        "forces": np.asarray(reply["forces"], dtype=float)}
        if "stress" in reply:
            self.results["stress"] = np.asarray(reply["stress"], dtype=float)


def calculator_from_export(directory: Path, device: str = "cpu"):
    """MACE's ``MACECalculator`` on the exported ``*.model`` (run in MACE's interpreter)."""
    models = sorted(Path(directory).glob("*.model"))
    if not models:
        raise InputError(directory, "*.model", "missing: not a MACE export")
    return MACEProcessCalculator(models[0], device=device)


def _worker_env(num_cpus: int) -> dict[str, str]:
    threads = str(max(1, int(num_cpus)))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, PYTHONUNBUFFERED="1")
    return env


# --- trained model ------------------------------------------------------------------------------


class MACEModel(TrainedModel):
    """A trained MACE model: MACE's own model file plus the run record and the data it was trained on."""

    FILES = ("run.json", "config.yaml", "train.xyz", "val.xyz", MODEL_FILE)

    def __init__(self, directory: Path, run: Mapping[str, Any], info: Mapping[str, Any], device: str = "cpu"):
        self.directory = Path(directory)
        self.run = dict(run)
        self.info = dict(info)
        self.device = device
        self._calc: MACEProcessCalculator | None = None

    @property
    def params(self) -> MACEParams:
        """The hyperparameters this model was trained with."""
        return MACEParams(**self.run["params"])

    def calculator(self) -> MACEProcessCalculator:
        """MACE's ASE calculator on this model (in MACE's interpreter)."""
        if self._calc is None:
            self._calc = MACEProcessCalculator(self.directory / MODEL_FILE, device=self.device,
                                               dtype=self.params.default_dtype)
        return self._calc

    def predict(self, frames: Sequence[Atoms]) -> list[Prediction]:
        """Energy (eV), forces (eV/Å) and stress (eV/Å³, ASE Voigt and sign) of each frame."""
        return predict_with_calculator(self.calculator(), frames)

    def save(self, directory: Path) -> None:
        """Copy the model file, its run record, config and data into ``directory``, with ``done.json``."""
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        if directory != self.directory.resolve():
            for name in self.FILES:
                shutil.copyfile(self.directory / name, directory / f".{name}.tmp")
                os.replace(directory / f".{name}.tmp", directory / name)
        atomic_write_json(directory / "done.json", {"info": self.info})

    @classmethod
    def load(cls, directory: Path) -> "MACEModel":
        """Load a model written by :meth:`save` (or a finished checkpoint directory)."""
        directory = Path(directory).resolve()
        run, info = read_saved_run(directory, "MACE model")
        return cls(directory, run, info)

    def export(self, directory: Path) -> dict[str, Path]:
        """``config.yaml`` (``mace_run_train --config`` trains it), its data files, and ``mace.model``.

        The config names the copied data files by absolute path and keeps MACE's folders
        relative, so ``mace_run_train`` writes them where it is started.
        """
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        for role, name in (("train_data", "train.xyz"), ("val_data", "val.xyz"), ("model", MODEL_FILE)):
            shutil.copyfile(self.directory / name, directory / f".{name}.tmp")
            os.replace(directory / f".{name}.tmp", directory / name)
            paths[role] = directory / name
        arguments = self.params.arguments(name=RUN_NAME, train_file=str(paths["train_data"]),
                                          valid_file=str(paths["val_data"]), seed=self.run["seed"], device="cpu",
                                          restart=False)
        paths["config"] = atomic_write_text(directory / "config.yaml", _yaml_arguments(arguments))
        return paths


# --- training -----------------------------------------------------------------------------------


class _EpochLog:
    """MACE's per-epoch validation lines (``results/<name>_run-<seed>_train.txt``), read as they are appended."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self._partial = ""

    def new_epochs(self) -> list[dict]:
        """Validation records appended since the last call (MACE's 0-based ``epoch``; the initial one skipped)."""
        if not self.path.exists():
            return []
        with open(self.path) as handle:
            handle.seek(self.offset)
            text = handle.read()
            self.offset = handle.tell()
        text, self._partial = self._partial + text, ""
        lines = text.split("\n")
        if lines and lines[-1]:
            self._partial = lines.pop()
        out = []
        for line in lines:
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("mode") == "eval" and record.get("epoch") is not None:
                out.append(record)
        return out


def _epoch_metrics(record: Mapping[str, Any], mav: Mapping[str, float]) -> dict[str, float]:
    out = {"val_energy_mae": EV_TO_MEV * float(record["mae_e_per_atom"]),
           "val_energy_rmse": EV_TO_MEV * float(record["rmse_e_per_atom"]),
           "val_forces_mae": EV_TO_MEV * float(record["mae_f"]),
           "val_forces_rmse": EV_TO_MEV * float(record["rmse_f"]),
           "val_loss": float(record["loss"])}
    for label in ("energy", "forces"):
        scale = mav.get(label, 0.0)
        out[f"val_{label}_pct"] = 100.0 * out[f"val_{label}_mae"] / scale if scale > 0 else math.nan
    return out


def _checkpointed(checkpoints: Path, epoch: int) -> bool:
    return any(checkpoints.glob(f"{RUN_NAME}_run-*_epoch-{epoch}.pt")) or any(
        checkpoints.glob(f"{RUN_NAME}_run-*_epoch-{epoch}_swa.pt"))


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    interesting = [line for line in text if "Error" in line or "error" in line] or text
    return " | ".join(interesting[-lines:])


@register_trainer
class MACETrainer(Trainer):
    """MACE (higher-order equivariant message passing) through MACE's own training script."""

    name = "mace"
    Params = MACEParams
    Model = MACEModel

    def train(self, params, train_frames: Sequence[Atoms], val_frames: Sequence[Atoms], reporter: Reporter,
              checkpoint_dir: Path, context: TrainContext) -> MACEModel:
        """Train (or resume, or reload a finished run) in ``checkpoint_dir``; see the module doc."""
        if not isinstance(params, MACEParams):
            params = self.parse_params(params if isinstance(params, Mapping) else params.model_dump())
        checkpoint_dir = Path(checkpoint_dir).resolve()
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        seed = params.seed if params.seed is not None else int(context.seed)
        device = "cuda" if (context.device or "cpu").split(":")[0].lower() in ("cuda", "gpu") else "cpu"
        if not train_frames:
            raise InputError("train frames", "train_frames", "no training frames")
        train = labelled_copies(train_frames, "train frames")
        val = labelled_copies(val_frames, "val frames")
        if not val:
            train, val = holdout_split(train, params.valid_fraction, seed)
        type_names = sorted({a.symbol for f in train + val for a in f}, key=lambda s: ase.data.atomic_numbers[s])
        python = mace_python()

        run = {"params": params.model_dump(), "seed": seed, "type_names": type_names,
               "frames_sha256": fingerprint(train, val)}
        run_file = checkpoint_dir / "run.json"
        if run_file.exists():
            previous = json.loads(run_file.read_text())
            if {k: previous.get(k) for k in run} != run:
                raise InputError(checkpoint_dir, "checkpoint_dir", "holds a MACE run with other hyperparameters "
                                 "or frames; use a fresh directory")
        done_file = checkpoint_dir / "done.json"
        if done_file.exists():
            return MACEModel.load(checkpoint_dir)

        train_file, val_file = checkpoint_dir / "train.xyz", checkpoint_dir / "val.xyz"
        write_mace_extxyz(train_file, train)
        write_mace_extxyz(val_file, val)
        atomic_write_json(run_file, run)
        arguments = params.arguments(name=RUN_NAME, train_file=str(train_file), valid_file=str(val_file), seed=seed,
                                     device=device, work_dir=str(checkpoint_dir))
        config = atomic_write_text(checkpoint_dir / "config.yaml", _yaml_arguments(arguments))

        reported_file = checkpoint_dir / "reported.json"
        reported = json.loads(reported_file.read_text())["step"] if reported_file.exists() else 0
        resumed = any((checkpoint_dir / "checkpoints").glob("*.pt"))
        mav = label_mav(val)
        log = _EpochLog(checkpoint_dir / "results" / f"{RUN_NAME}_run-{seed}_train.txt")
        started = time.perf_counter()
        last_step = reported
        stdout = checkpoint_dir / "mace_stdout.log"
        with open(stdout, "ab") as out:
            proc = subprocess.Popen([str(python), str(WORKER), "train", str(config)], cwd=checkpoint_dir,
                                    stdout=out, stderr=subprocess.STDOUT, env=_worker_env(context.num_cpus),
                                    start_new_session=True)
            pending: list[dict] = []
            try:
                while True:
                    finished = proc.poll() is not None
                    pending += log.new_epochs()
                    while pending:
                        record = pending[0]
                        step = int(record["epoch"]) + 1
                        ready = finished or len(pending) > 1 or _checkpointed(checkpoint_dir / "checkpoints",
                                                                               int(record["epoch"]))
                        if not ready:
                            break
                        pending.pop(0)
                        last_step = max(last_step, step)
                        if step <= reported:
                            continue
                        reported = step
                        atomic_write_json(reported_file, {"step": step})
                        reporter(step, _epoch_metrics(record, mav))
                    if finished:
                        break
                    time.sleep(_POLL_S)
            except BaseException:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise
        if proc.returncode != 0 or not (checkpoint_dir / "info.json").exists():
            raise RuntimeError(f"MACE training failed ({proc.returncode}): {_tail(stdout)}")
        produced = json.loads((checkpoint_dir / "info.json").read_text())
        info = {
            "model": self.name,
            "n_weights": int(produced["n_weights"]),
            "epochs": int(last_step),
            "train_seconds": time.perf_counter() - started,
            "resumed": bool(resumed),
            "accelerator": "gpu" if device == "cuda" else "cpu",
            "type_names": type_names,
            "seed": seed,
            "interpreter": str(python),
        }
        atomic_write_json(done_file, {"info": info})
        return MACEModel(checkpoint_dir, run, info, device=device)
