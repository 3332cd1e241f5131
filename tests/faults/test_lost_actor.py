"""A reused actor that dies while Tune resets it for its next trial.

Tune ends that trial in ERROR without using its retries (the trial is still PENDING);
``fit_resuming_lost`` resumes it in the same driver. Real Ray and real Tune: the actor
really dies (``os._exit``) inside Tune's own ``reset_config`` call.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from sweep.tune.failures import fit_resuming_lost, is_cluster_loss, lost_to_the_cluster

pytestmark = pytest.mark.timeout(300)


def _tuner(storage: Path, marker: Path, restore: bool):
    from ray import tune

    class DiesOnFirstReset(tune.Trainable):
        def setup(self, config):
            self.x = config["x"]

        def step(self):
            return {"score": self.x, "done": True, "pid": os.getpid()}

        def reset_config(self, new_config):
            if not marker.exists():  # the first reuse only: the actor dies mid-reset
                marker.write_text("died")
                os._exit(1)
            self.x = new_config["x"]
            return True

        def save_checkpoint(self, checkpoint_dir):
            return None

        def load_checkpoint(self, checkpoint):
            pass

    trainable = tune.with_resources(DiesOnFirstReset, {"cpu": 1})
    if restore:
        return tune.Tuner.restore(str(storage / "lost"), trainable, resume_errored=True)
    return tune.Tuner(
        trainable,
        param_space={"x": tune.grid_search([1, 2, 3])},
        tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=1),
        run_config=tune.RunConfig(name="lost", storage_path=str(storage), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=2)),
    )


@pytest.fixture
def local_ray():
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    try:
        yield
    finally:
        ray.shutdown()


def test_tune_leaves_a_trial_whose_reused_actor_died_in_error_and_the_sweep_resumes_it(local_ray, tmp_path):
    marker = tmp_path / "died"
    first = _tuner(tmp_path, marker, restore=False).fit()
    # Tune's own behaviour, which the sweep works around: one trial errored, retries unspent
    assert marker.exists()
    lost, failed = lost_to_the_cluster(first)
    assert len(lost) == 1 and failed == [], (lost, failed)
    assert sum(1 for r in first if r.error is None) == 2

    results = fit_resuming_lost(lambda: _tuner(tmp_path, marker, restore=True), rounds=2,
                                interrupted=lambda: False)
    assert [r.error for r in results] == [None, None, None]
    assert sorted(r.metrics["score"] for r in results) == [1, 2, 3]


def test_a_trial_that_failed_in_its_own_code_is_not_resumed(local_ray, tmp_path):
    from ray import tune

    calls = []

    def fails(config):
        raise ValueError("a bad setting")

    def make():
        calls.append(1)
        return tune.Tuner(fails, param_space={"x": tune.grid_search([1])},
                          run_config=tune.RunConfig(name="own", storage_path=str(tmp_path), verbose=0,
                                                    failure_config=tune.FailureConfig(max_failures=1)))

    results = fit_resuming_lost(make, rounds=2, interrupted=lambda: False)
    assert len(calls) == 1
    lost, failed = lost_to_the_cluster(results)
    assert lost == [] and len(failed) == 1
    assert not is_cluster_loss(results[0].error)


def test_cluster_losses_are_told_from_the_trainers_own_errors(local_ray):
    import ray
    from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

    @ray.remote(max_restarts=0)
    class Worker:
        def ping(self):
            return os.getpid()

        def die(self):
            os._exit(1)

    worker = Worker.remote()
    ray.get(worker.ping.remote())
    # The actor's process exits inside the call, so its death is known before the next
    # call (ray.kill is asynchronous: a call made just after it can still be answered).
    with pytest.raises(RayActorError) as dying:
        ray.get(worker.die.remote())
    assert is_cluster_loss(dying.value)
    with pytest.raises(ActorDiedError) as died:
        ray.get(worker.ping.remote())
    assert is_cluster_loss(died.value)

    @ray.remote
    def calls_the_dead(handle):
        return ray.get(handle.ping.remote())

    with pytest.raises(RayTaskError) as wrapped:
        ray.get(calls_the_dead.remote(worker))
    assert is_cluster_loss(wrapped.value)

    @ray.remote
    def bad():
        raise ValueError("r_cut must be positive")

    with pytest.raises(RayTaskError) as own:
        ray.get(bad.remote())
    assert not is_cluster_loss(own.value)
    assert not is_cluster_loss(None)
