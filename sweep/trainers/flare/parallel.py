"""FLARE on several CPUs: the training loop on MPI ranks (mpi4py + the venv's ``mpiexec``).

The trial writes a job file and runs ``mpiexec -n N python -m sweep.trainers.flare.worker``;
every rank runs :func:`run_training`, the shared loop (:func:`~sweep.trainers.flare.loop.run_blocks`)
over a :class:`~sweep.trainers.flare.engines.DistributedSGP`. Each rank runs one
OpenMP/BLAS thread (ranks × threads = the trial's CPUs). Rank 0 reports each block's
metrics as JSON lines on its stdout, which the launching trial turns into reporter calls,
and checkpoints in the same layout as the serial trainer, so either path resumes the other's
checkpoint.

Ranks share no descriptors with earlier trials: each is a fresh process and computes its own
frames' structures once (``info["descriptors"]`` is rank 0's tally). Shipping the parent's
cached structures would save little: rebuilding one from its values costs about a third to
a half of computing it (force derivatives are MBs per frame), and computing them is split
over the ranks anyway. The launching process, which predicts with the finished model (its
sparse set and the validation and test frames), does use its descriptor cache when
``TrainContext.share_work`` is on (:mod:`sweep.trainers.flare.descriptors`).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

from ase import Atoms

from sweep.io.atomic import atomic_write_bytes
from sweep.trainers.base import Reporter, TrainContext
from sweep.trainers.flare.engines import DistributedSGP
from sweep.trainers.flare.loop import (
    Progress,
    check_frames,
    final_model,
    frames_fingerprint,
    initial_hyps,
    load_checkpoint,
    model_info,
    run_blocks,
)
from sweep.trainers.flare.model import FlareModel
from sweep.trainers.flare.params import FlareParams
from sweep.trainers.flare.structures import DescriptorSpec

EVENT_PREFIX = "@flare "


class ParallelRunError(RuntimeError):
    """The MPI run could not start or did not finish; the caller falls back to serial."""


def mpiexec_path() -> Path | None:
    """The ``mpiexec`` next to this interpreter (the mpich wheel's), or on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.is_file() and os.access(here, os.X_OK):
        return here
    found = shutil.which("mpiexec")
    return Path(found) if found else None


def unavailable() -> str | None:
    """Why the MPI path cannot run here, or ``None`` when it can."""
    if mpiexec_path() is None:
        return "no mpiexec next to the Python interpreter or on PATH"
    try:
        import mpi4py  # noqa: F401
    except ImportError as exc:
        return f"mpi4py not importable: {exc}"
    return None




# --------------------------------------------------------------------------------------
# Rank-side driver
# --------------------------------------------------------------------------------------


def run_training(comm, job: dict, emit: Callable[[dict], None]) -> None:
    """Train on every rank of ``comm`` from a job written by :func:`train_parallel`."""
    params = FlareParams(**job["params"])
    train_frames, val_frames = job["train_frames"], job["val_frames"]
    checkpoint_dir = Path(job["checkpoint_dir"])
    context = TrainContext(temperature_K=job["temperature_K"], num_cpus=comm.Get_size())
    spec = DescriptorSpec.from_params(params, train_frames)
    hyps0 = initial_hyps(params, context)
    fingerprint = frames_fingerprint(params, train_frames)
    progress = load_checkpoint(checkpoint_dir, fingerprint) if comm.Get_rank() == 0 else None
    progress = comm.bcast(progress, root=0)
    rank0 = comm.Get_rank() == 0
    t_start = time.perf_counter()
    if progress is None:
        progress = Progress(fingerprint=fingerprint, hyps=list(hyps0))
        engine = DistributedSGP(comm, spec, params.zeta, hyps0, params.likelihood_gradient, params.sigma_e_per_atom)
    else:
        engine = DistributedSGP(comm, spec, params.zeta, progress.hyps, params.likelihood_gradient,
                                params.sigma_e_per_atom)
        done = progress.frames_added
        for start in range(0, done, params.block_size):
            stop = min(done, start + params.block_size)
            engine.add_block(train_frames[start:stop], start, None, progress.sparse[start:stop])
        engine.set_hyps(progress.hyps)
        if rank0:
            emit({"event": "resumed", "frames_added": done})

    def report(step: int, metrics: dict) -> None:
        emit({"event": "report", "step": step, "metrics": metrics})

    run_blocks(engine, params, spec, train_frames, val_frames, progress, checkpoint_dir, report)
    if rank0:
        model = final_model(engine, params, spec, train_frames, progress)
        info = model_info(params, spec, engine.n_d, progress.hyps, progress.log_likelihood, engine.n_sparse,
                          progress, hyps0[2], {"parallel": {"ranks": comm.Get_size(), "threads": 1,
                                                            "wall_s": time.perf_counter() - t_start,
                                                            "timers": engine.timers},
                                                "descriptors": engine.tally.as_dict()})
        FlareModel(model, engine.alpha, info).save(Path(job["out_dir"]))
        emit({"event": "done", "info": info})
    comm.Barrier()


# --------------------------------------------------------------------------------------
# Trial-side launcher
# --------------------------------------------------------------------------------------


def _launch(job: dict, job_dir: Path, ranks: int, on_event: Callable[[dict], None]) -> None:
    """Run the worker under ``mpiexec -n ranks`` and feed its events to ``on_event``."""
    job_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(job_dir / "job.pkl", pickle.dumps(job))
    cmd = [str(mpiexec_path()), "-n", str(ranks), sys.executable, "-m", "sweep.trainers.flare.worker",
           str(job_dir / "job.pkl")]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    stderr_path = job_dir / "stderr.log"
    finished = False
    with open(stderr_path, "wb") as err:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
        except OSError as exc:
            raise ParallelRunError(f"cannot start {cmd[0]}: {exc}") from None
        try:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").strip()
                if line.startswith(EVENT_PREFIX):
                    event = json.loads(line[len(EVENT_PREFIX):])
                    finished |= event.get("event") == "done"
                    on_event(event)
            rc = proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
    if rc != 0 or not finished:
        tail = deque(stderr_path.read_text(errors="replace").splitlines(), maxlen=8)
        raise ParallelRunError(f"mpiexec -n {ranks} exited with status {rc}: " + " | ".join(tail))


def train_parallel(params: FlareParams, train_frames: Sequence[Atoms], val_frames: Sequence[Atoms],
                   reporter: Reporter, checkpoint_dir: Path, context: TrainContext) -> FlareModel:
    """Train on ``context.num_cpus`` MPI ranks; raises :class:`ParallelRunError` if MPI fails."""
    check_frames(params, train_frames, val_frames)
    ranks = int(context.num_cpus)
    job_dir = Path(checkpoint_dir) / "mpi_job"
    out_dir = job_dir / "model"
    job = {"mode": "train", "params": params.model_dump(), "train_frames": list(train_frames),
           "val_frames": list(val_frames), "temperature_K": context.temperature_K,
           "checkpoint_dir": str(checkpoint_dir), "out_dir": str(out_dir)}

    def on_event(event: dict) -> None:
        if event.get("event") == "report":
            reporter(int(event["step"]), event["metrics"])
        elif event.get("event") == "resumed":
            context.notes["flare_resumed_at_frame"] = int(event["frames_added"])

    _launch(job, job_dir, ranks, on_event)
    model = FlareModel.load(out_dir)
    # The ranks were fresh processes; this process predicts with the model (its sparse set
    # and the frames' structures), and may reuse structures from earlier trials for that.
    model.share_work = bool(context.share_work)
    context.notes["flare_parallel_ranks"] = ranks
    return model


