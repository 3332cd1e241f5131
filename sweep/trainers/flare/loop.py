"""FLARE's training loop, written once over an engine: the serial and the MPI paths run the same code.

Frames are added one block at a time; each frame adds the ``sparse_per_frame`` atomic
environments of largest predictive variance (FLARE's ``add_uncertain_environments`` rule),
scored against the model as it stood at the start of the block. Hyperparameters are fitted by
maximum likelihood (L-BFGS-B) every ``optimize_every`` frames and once at the end. After each
block the validation frames are predicted, the metrics reported, and the model so far
checkpointed; a checkpoint from either path resumes on either path.

An engine (:class:`~sweep.trainers.flare.engines.SerialEngine`,
:class:`~sweep.trainers.flare.engines.DistributedSGP`) provides ``add_block``, ``optimise``,
``likelihood``, ``predict_frames`` and the state ``n_frames``, ``hyps``, ``sparse``,
``n_sparse``, ``jitter``; on MPI ranks other than 0 its ``predict_frames`` returns ``None``
and the loop reports and checkpoints nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
from ase import Atoms

from sweep.errors import InputError
from sweep.io.atomic import atomic_directory, atomic_write_json
from sweep.metrics import score
from sweep.trainers.base import Prediction, Reporter, TrainContext
from sweep.trainers.flare.params import FlareParams, scaled_sigma_f
from sweep.trainers.flare.sgp import sgp_dict, write_sgp_json
from sweep.trainers.flare.structures import DescriptorSpec, frame_labels, hyperparameter_bounds

#: Checkpoint folder inside the trainer's checkpoint directory.
CHECKPOINT_NAME = "flare_ckpt"


def frames_fingerprint(params: FlareParams, frames: Sequence[Atoms]) -> str:
    """A hash of the hyperparameters and training frames, to tell whether a checkpoint fits."""
    h = hashlib.sha256(params.model_dump_json().encode())
    for f in frames:
        h.update(np.asarray(f.numbers, dtype=np.int64).tobytes())
        h.update(np.asarray(f.positions, dtype=float).tobytes())
        h.update(np.asarray(f.cell.array, dtype=float).tobytes())
    return h.hexdigest()



def initial_hyps(params: FlareParams, context: TrainContext) -> list[float]:
    """(σ, σ_e, σ_f(T), σ_s) to start from."""
    return [params.sigma, params.sigma_e, scaled_sigma_f(params, context.temperature_K), params.sigma_s]


def check_frames(params: FlareParams, train_frames: Sequence[Atoms], val_frames: Sequence[Atoms]) -> DescriptorSpec:
    """Refuse bad frames before any work starts; return the descriptor spec of the training set.

    No training frame, an unlabelled training frame or a validation frame with an element
    the training set lacks is an :class:`InputError`.
    """
    if not len(train_frames):
        raise InputError("train frames", "frames", "no training frames")
    for i, f in enumerate(train_frames):
        frame_labels(f, i)
    spec = DescriptorSpec.from_params(params, train_frames)
    for i, f in enumerate(val_frames):
        spec.codes(f, "validation frames", i)
    return spec


def n_sparse_to_add(params: FlareParams, n_sparse: int, n_atoms: int) -> int:
    """How many sparse environments the next frame adds, given the cap."""
    return max(0, min(params.sparse_per_frame, params.max_sparse - n_sparse, n_atoms))


def optimisation_due(params: FlareParams, before: int, after: int, last: bool) -> bool:
    """Whether hyperparameters are optimised after frames ``before`` .. ``after`` were added."""
    if params.maxiter == 0:
        return False
    if params.optimize_every and after // params.optimize_every > before // params.optimize_every:
        return True
    return last and params.optimize_final


@dataclass
class Progress:
    """What a checkpoint records besides the model: where training stands."""

    fingerprint: str
    frames_added: int = 0
    sparse: list[list[int]] = field(default_factory=list)
    hyps: list[float] = field(default_factory=list)
    log_likelihood: float = float("nan")
    n_optimizations: int = 0
    elapsed_s: float = 0.0
    history: list[dict] = field(default_factory=list)


def save_checkpoint(directory: Path, progress: Progress, model: dict) -> None:
    """Write the FLARE-layout model so far and the progress record, atomically."""
    with atomic_directory(Path(directory) / CHECKPOINT_NAME) as tmp:
        write_sgp_json(tmp / "flare_sgp.json", model)
        atomic_write_json(tmp / "progress.json", progress.__dict__)


def close_block(directory: Path, progress: Progress, params: FlareParams, spec: DescriptorSpec,
                train_frames: Sequence[Atoms], stop: int, metrics: dict[str, float], jitter: float,
                started: float) -> None:
    """Record a block of frames added up to ``stop`` (its metrics, its time) and checkpoint the model so far."""
    progress.history.append({"step": stop, **metrics})
    progress.elapsed_s += time.perf_counter() - started
    save_checkpoint(directory, progress, sgp_dict(spec, progress.hyps, params.zeta, train_frames[:stop],
                                                  progress.sparse, jitter, params.sigma_e_per_atom,
                                                  hyperparameter_bounds(params.sigma_e_max, params.sigma_s_max)))


def load_checkpoint(directory: Path, fingerprint: str) -> Progress | None:
    """The progress of a matching checkpoint in ``directory``, or ``None``."""
    path = Path(directory) / CHECKPOINT_NAME / "progress.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("fingerprint") != fingerprint:
        from sweep.errors import InputError

        raise InputError(path, "fingerprint", "this checkpoint is of other hyperparameters or frames and is kept; "
                         "remove it, or train into another folder")
    return Progress(**data)


def report_metrics(val_frames: Sequence[Atoms], predictions: Sequence[Prediction], log_likelihood: float,
                   n_sparse: int, hyps: Sequence[float]) -> dict[str, float]:
    """The per-block metrics: validation errors (meV units), log-likelihood, sparse count, σ's."""
    metrics: dict[str, float] = {}
    if len(val_frames):
        metrics.update(score(val_frames, predictions, prefix="val"))
    metrics.update({"log_likelihood": float(log_likelihood), "n_sparse": float(n_sparse),
                    "sigma": float(hyps[0]), "sigma_e": float(hyps[1]), "sigma_f": float(hyps[2]),
                    "sigma_s": float(hyps[3])})
    return metrics


def model_info(params: FlareParams, spec: DescriptorSpec, n_d_flare: int, hyps: Sequence[float],
               log_likelihood: float, n_sparse: int, progress: Progress, sigma_f0: float,
               extra: dict | None = None) -> dict[str, Any]:
    """The facts a FLARE training reports."""
    info = {
        "model": "flare", "descriptor": spec.kind, "n_species": spec.n_species,
        "n_descriptors": int(n_d_flare), "n_d": int(n_d_flare), "n_d_eq1": spec.dimension, "zeta": params.zeta,
        "log_likelihood": float(log_likelihood), "n_sparse": int(n_sparse),
        "n_train_frames": progress.frames_added, "n_optimizations": progress.n_optimizations,
        "hyperparameters": {"sigma": float(hyps[0]), "sigma_e": float(hyps[1]), "sigma_f": float(hyps[2]),
                            "sigma_s": float(hyps[3])},
        "sigma_f_initial": float(sigma_f0), "train_time_s": float(progress.elapsed_s),
    }
    info.update(extra or {})
    return info


def lbfgsb_options(params: FlareParams) -> dict:
    """scipy L-BFGS-B options from the hyperparameters (FLARE passes disp, gtol and maxiter)."""
    options = {"disp": False, "gtol": params.gtol, "maxiter": params.maxiter}
    if params.maxfun is not None:
        options["maxfun"] = params.maxfun
    return options




class Engine(Protocol):
    """What :func:`run_blocks` drives (see the module docstring)."""

    n_frames: int
    sparse: list[list[int]]
    timers: dict[str, float]

    @property
    def hyps(self) -> np.ndarray: ...  # noqa: D102

    @property
    def n_sparse(self) -> int: ...  # noqa: D102

    @property
    def jitter(self) -> float: ...  # noqa: D102

    def add_block(self, frames: Sequence[Atoms], start: int, params: FlareParams) -> None: ...  # noqa: D102

    def optimise(self, params: FlareParams) -> tuple[float, dict]: ...  # noqa: D102

    def likelihood(self) -> float: ...  # noqa: D102

    def predict_frames(self, frames: Sequence[Atoms]) -> list[Prediction] | None: ...  # noqa: D102


def run_blocks(engine: Engine, params: FlareParams, spec: DescriptorSpec, train_frames: Sequence[Atoms],
               val_frames: Sequence[Atoms], progress: Progress, checkpoint_dir: Path, reporter: Reporter) -> None:
    """Add the frames not yet in ``engine`` block by block: select, solve, optimise when due, report, checkpoint.

    On MPI ranks other than 0 (where ``engine.predict_frames`` returns ``None``) nothing is
    reported or written; ``progress`` follows the engine on every rank.
    """
    n = len(train_frames)
    while engine.n_frames < n:
        t0 = time.perf_counter()
        start, stop = engine.n_frames, min(n, engine.n_frames + params.block_size)
        engine.add_block(train_frames[start:stop], start, params)
        if optimisation_due(params, start, stop, stop == n):
            loglik, _ = engine.optimise(params)
            progress.n_optimizations += 1
        else:
            loglik = engine.likelihood()
        predictions = engine.predict_frames(val_frames)
        progress.frames_added = stop
        progress.sparse = engine.sparse
        progress.hyps = [float(h) for h in engine.hyps]
        progress.log_likelihood = loglik
        if predictions is None:
            continue
        metrics = report_metrics(val_frames, predictions, loglik, engine.n_sparse, progress.hyps)
        t = time.perf_counter()
        close_block(checkpoint_dir, progress, params, spec, train_frames, stop, metrics, engine.jitter, t0)
        engine.timers["checkpoint"] = engine.timers.get("checkpoint", 0.0) + time.perf_counter() - t
        reporter(stop, metrics)


def final_model(engine: Engine, params: FlareParams, spec: DescriptorSpec, train_frames: Sequence[Atoms],
                progress: Progress) -> dict:
    """The trained model in FLARE's layout: every frame added so far, with its sparse atoms."""
    return sgp_dict(spec, progress.hyps, params.zeta, train_frames[:progress.frames_added], engine.sparse,
                    engine.jitter, params.sigma_e_per_atom,
                    hyperparameter_bounds(params.sigma_e_max, params.sigma_s_max))
