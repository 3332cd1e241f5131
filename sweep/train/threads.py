"""How many CPU threads one training may use in its own process.

A training owns ``TrainContext.num_cpus`` CPUs. Inside a Ray actor, Ray already sets
``OMP_NUM_THREADS`` to the actor's CPUs; ``tm23-sweep train`` runs in a plain process, where
torch would otherwise start one intra-op thread per core. Two such trainings side by side on a
2-core machine then ran NequIP 4–15× slower than in a trial, their OpenMP threads spinning
against each other.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def cpu_threads(n: int) -> Iterator[int]:
    """Limit torch's intra-op pool and the BLAS/OpenMP pools to ``n`` threads, restoring them after."""
    import torch
    from threadpoolctl import threadpool_limits

    n = max(1, int(n))
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield n
    finally:
        torch.set_num_threads(before)
