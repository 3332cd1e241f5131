"""Which failed trials the cluster, not the trial, is to blame for.

Tune retries a trial whose actor or node dies (``FailureConfig.max_failures``) only when
the trial is ``RUNNING``. A reused actor (``reuse_actors``) that dies while Tune resets it
for its next trial fails that trial while it is still ``PENDING``, and Tune then ends it
in ``ERROR`` with its retries unspent. The sweep's driver finds those trials here and
resumes them (see :func:`sweep.tune.runner.run_sweep`).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


def is_cluster_loss(error: BaseException | None) -> bool:
    """Whether ``error`` says the trial's actor or node went away, rather than its code failing.

    An actor error (died, unavailable, its node lost), directly or as the cause of a task
    error, counts; an exception raised by the trainer's own code does not.
    """
    from ray.exceptions import NodeDiedError, RayActorError, RayTaskError

    if isinstance(error, (RayActorError, NodeDiedError)):
        return True
    if isinstance(error, RayTaskError):
        return isinstance(error.as_instanceof_cause(), (RayActorError, NodeDiedError))
    return False


def retries_unspent(trial: Any) -> bool:
    """Whether Tune would still have retried ``trial`` (a ``ray.tune.experiment.Trial``)."""
    return trial.max_failures < 0 or trial.run_metadata.num_failures <= trial.max_failures


def lost_to_the_cluster(results: Any) -> tuple[list[str], list[str]]:
    """Trial ids of a ``ResultGrid``'s failed trials: (lost with retries unspent, all others).

    A sweep can resume the first list in the same driver; the second holds trials that
    failed in their own code or spent their retries.
    """
    from ray.tune import ExperimentAnalysis

    lost, failed = [], []
    for trial in ExperimentAnalysis(results.experiment_path).trials:
        if trial.status != "ERROR":
            continue
        if is_cluster_loss(trial.get_pickled_error() or trial.get_error()) and retries_unspent(trial):
            lost.append(trial.trial_id)
        else:
            failed.append(trial.trial_id)
    return lost, failed


def fit_resuming_lost(make_tuner: Callable[[], Any], rounds: int, interrupted: Callable[[], bool]) -> Any:
    """Fit the Tuner ``make_tuner()`` builds; while trials were lost to the cluster, fit it again.

    ``make_tuner`` must restore the experiment once it exists (with ``resume_errored``), so
    that a round resumes the lost trials and nothing else reruns. It stops after ``rounds``
    more fits, on ``interrupted()``, and as soon as any trial failed on its own account (those
    wait for the user's ``resume``). Returns the last ``ResultGrid``.
    """
    results = make_tuner().fit()
    for _ in range(rounds):
        lost, failed = lost_to_the_cluster(results)
        if interrupted() or not lost or failed:
            break
        log.warning("%d trials lost their actor before Tune could retry them (%s); resuming them",
                    len(lost), ", ".join(lost))
        results = make_tuner().fit()
    return results
