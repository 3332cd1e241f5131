"""The FLARE trainer: a sparse Gaussian process on ACE B1/B2 descriptors (mir-flare 1.4.0).

The model is FLARE's own C++ ``SparseGP`` with a ``NormalizedDotProduct`` kernel of power
ζ on ``B2`` descriptors (FLARE's names), driven the way FLARE's on-the-fly code drives it
(:mod:`sweep.trainers.flare.loop`). A trial that owns one CPU trains in this process
(:class:`~sweep.trainers.flare.engines.SerialEngine`); one that owns more trains on that
many MPI ranks (:mod:`sweep.trainers.flare.parallel`) and falls back to the serial path when
MPI is unavailable or fails. Both run the same loop and checkpoint in the same layout.

σ_f and temperature: the paper scales the initial force noise with the trajectory
temperature. We use σ_f(T) = σ_f · √(T / T_ref) with T_ref = ``sigma_f_reference_K``
(1000 K by default), because thermal force magnitudes grow as √T (equipartition); set
``sigma_f_temperature_scaling: none`` to switch it off. No temperature in the context
means no scaling.

σ_e is per atom, as the paper gives it (eV/atom): FLARE's energy label is a frame's total
energy, so each frame enters with FLARE's relative energy noise ``rel_e_noise = N_atoms``
(noise σ_e·N on the total); ``sigma_e_per_atom: false`` applies σ_e to the total instead.

Work shared between trials: with ``TrainContext.share_work`` (default on, ``$TM23_SHARE_WORK``)
the FLARE structures of the frames (neighbour lists and descriptors, which depend only on
the frames and the descriptor settings, not on ζ or the σ's) come from a process-wide cache
(:mod:`sweep.trainers.flare.descriptors`), so that trials run one after another in one Tune
worker compute them once; results are bit-identical either way.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

from ase import Atoms

from sweep.trainers.base import Reporter, TrainContext, Trainer, register_trainer
from sweep.trainers.flare import parallel
from sweep.trainers.flare.descriptors import Tally
from sweep.trainers.flare.engines import SerialEngine
from sweep.trainers.flare.loop import (
    CHECKPOINT_NAME,
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
from sweep.trainers.flare.sgp import descriptor_length, read_sgp_json, thread_limits


def replay_unreported(checkpoint_dir: Path, fingerprint: str, reporter: Reporter, context: TrainContext) -> None:
    """Report again the checkpointed blocks after ``context.reported_up_to``.

    A block is checkpointed before it is reported; a training killed between the two resumes
    after that block, whose report would otherwise never arrive. ``None`` (the default) replays
    nothing: only a caller that knows what was delivered sets it.
    """
    if context.reported_up_to is None:
        return
    progress = load_checkpoint(checkpoint_dir, fingerprint)
    for entry in progress.history if progress is not None else []:
        if int(entry["step"]) > context.reported_up_to:
            reporter(int(entry["step"]), {k: v for k, v in entry.items() if k != "step"})


def train_serial(params: FlareParams, train_frames: Sequence[Atoms], val_frames: Sequence[Atoms],
                 reporter: Reporter, checkpoint_dir: Path, context: TrainContext) -> FlareModel:
    """Train in this process (FLARE's OpenMP threads limited to ``context.num_cpus``)."""
    spec = check_frames(params, train_frames, val_frames)
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    log = checkpoint_dir / "flare_stdout.log"
    hyps0 = initial_hyps(params, context)
    fingerprint = frames_fingerprint(params, train_frames)
    share = bool(context.share_work)
    tally = Tally(shared=share)
    with thread_limits(context.num_cpus):
        progress = load_checkpoint(checkpoint_dir, fingerprint)
        if progress is not None:
            model = read_sgp_json(checkpoint_dir / CHECKPOINT_NAME / "flare_sgp.json")
            engine = SerialEngine.resumed(model, progress.sparse, train_frames, params, share=share, tally=tally,
                                          log=log)
            context.notes["flare_resumed_at_frame"] = progress.frames_added
        else:
            progress = Progress(fingerprint=fingerprint, hyps=list(hyps0))
            engine = SerialEngine.fresh(spec, hyps0, params, share=share, tally=tally, log=log)
        run_blocks(engine, params, spec, train_frames, val_frames, progress, checkpoint_dir, reporter)
        model = final_model(engine, params, spec, train_frames, progress)
        n_d = descriptor_length(engine.live, train_frames[0], share, tally)
    info = model_info(params, spec, n_d, progress.hyps, progress.log_likelihood, engine.n_sparse, progress,
                      hyps0[2], {"parallel": {"ranks": 1, "threads": int(context.num_cpus), "timers": engine.timers},
                                 "descriptors": tally.as_dict()})
    return FlareModel(model, engine.alpha, info, live=engine.live, share_work=share)


@register_trainer
class FlareTrainer(Trainer):
    """FLARE's sparse GP on ACE B1/B2; MPI-parallel when the trial owns several CPUs."""

    name = "flare"
    Params = FlareParams
    Model = FlareModel

    def train(self, params: FlareParams, train_frames: Sequence[Atoms], val_frames: Sequence[Atoms],
              reporter: Reporter, checkpoint_dir: Path, context: TrainContext) -> FlareModel:
        """Train serially, or on ``context.num_cpus`` MPI ranks when ``mpiexec`` is available."""
        if not isinstance(params, FlareParams):
            params = self.parse_params(dict(params))
        check_frames(params, train_frames, val_frames)
        replay_unreported(Path(checkpoint_dir), frames_fingerprint(params, train_frames), reporter, context)
        if context.num_cpus > 1:
            why_not = parallel.unavailable()
            if why_not is None:
                try:
                    return parallel.train_parallel(params, train_frames, val_frames, reporter, Path(checkpoint_dir),
                                                   context)
                except parallel.ParallelRunError as exc:
                    why_not = str(exc)
            context.notes["flare_parallel_fallback"] = why_not
            warnings.warn(f"FLARE: parallel training unavailable ({why_not}); training serially")
        return train_serial(params, train_frames, val_frames, reporter, Path(checkpoint_dir), context)
