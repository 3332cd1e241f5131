"""One MPI rank of a parallel FLARE job: ``mpiexec -n N python -m sweep.trainers.flare.worker JOB.pkl``.

Rank 0 writes protocol events (``@flare {json}``) to the real stdout; FLARE's own chatter
(C++ ``std::cout`` and Python prints) from every rank goes to ``rank<R>.log`` beside the
job file. Any exception aborts the whole communicator, so no rank is left waiting.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import traceback
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the job in ``argv[0]`` on this rank; the exit status is the job's."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    job_file = Path((argv if argv is not None else sys.argv[1:])[0])
    events = os.fdopen(os.dup(1), "w", buffering=1) if rank == 0 else None
    log_fd = os.open(job_file.parent / f"rank{rank}.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log_fd, 1)
    os.close(log_fd)
    sys.stdout = os.fdopen(1, "w", buffering=1)

    def emit(event: dict) -> None:
        if events is not None:
            events.write("@flare " + json.dumps(event, default=float) + "\n")
            events.flush()

    try:
        from sweep.trainers.flare.parallel import run_training

        job = pickle.loads(job_file.read_bytes())  # our own job file, written by the launching trial
        if job["mode"] != "train":
            raise ValueError(f"unknown job mode {job['mode']!r}")
        run_training(comm, job, emit)
    except BaseException:  # noqa: BLE001 - report, then take every rank down
        sys.stderr.write(f"rank {rank}: " + traceback.format_exc())
        sys.stderr.flush()
        comm.Abort(1)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
