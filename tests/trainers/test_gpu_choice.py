"""Each family's trial asks for a GPU when the cluster has one (FLARE's never), on a real Ray with a fake GPU."""

from __future__ import annotations

import logging

import pytest

from sweep.trainers.family import families
from sweep.tune.resources import cluster_nodes, trial_device, trial_resources
from sweep.tune.space import parse_space

SPACE = "elements: [Cu]\nstudies:\n" + "".join(
    f"  - {{model: {name}, resources: {{cpus: 1, gpus: auto}}}}\n" for name in sorted(families()))


def _trials(requests: dict, storage) -> dict[str, dict]:
    """One Tune trial per family on its request: the GPUs Ray gave it and whether it would pick CUDA."""
    from ray import tune

    def trainable(config):
        import ray

        tune.report({"gpu_ids": len(ray.get_gpu_ids()),
                     "device_is_cuda": float(trial_device(requests[config["model"]].gpus) == "cuda")})

    tuner = tune.Tuner(tune.with_resources(trainable, lambda config: requests[config["model"]].factory()),
                       param_space={"model": tune.grid_search(sorted(requests))},
                       run_config=tune.RunConfig(verbose=0, storage_path=str(storage)))
    return {r.config["model"]: r.metrics for r in tuner.fit()}


@pytest.mark.parametrize("num_gpus", [1, 0])
def test_every_family_but_the_cpu_only_ones_gets_the_gpu(num_gpus, tmp_path):
    import ray

    loaded = parse_space(SPACE, "families.yaml")
    ray.init(address="local", num_cpus=2, num_gpus=num_gpus, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    try:
        nodes = cluster_nodes()
        requests = {study.model: trial_resources(study, nodes) for study in loaded.space.studies}
        got = _trials(requests, tmp_path)
    finally:
        ray.shutdown()
    assert set(got) == set(families()) >= {"flare", "nequip", "allegro", "mace"}
    for model, family in families().items():
        wants_gpu = num_gpus > 0 and family.accelerator != "cpu"
        assert requests[model].gpus == (1.0 if wants_gpu else 0.0), model
        assert got[model]["gpu_ids"] == (1 if wants_gpu else 0), model
        # the fake GPU is no CUDA device: the trial falls back to the CPU
        assert got[model]["device_is_cuda"] == 0.0, model
    assert families()["flare"].accelerator == "cpu"


PACKED = """elements: [Cu, Au]
studies:
  - {model: nequip, resources: {cpus: 1, gpus: 0.25}, params: {r_max: {grid: [4.0, 5.0]}}}
  - {model: flare, resources: {cpus: 1, gpus: auto}}
"""


def test_four_quarter_gpu_trials_share_one_gpu_and_flare_holds_none(tmp_path):
    """Ray runs four ``gpus: 0.25`` trials at once on one (fake) GPU; FLARE's trials get no GPU at all."""
    import ray
    from ray import tune

    loaded = parse_space(PACKED, "packed.yaml")
    marks = tmp_path / "running"
    marks.mkdir()
    ray.init(address="local", num_cpus=6, num_gpus=1, include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    try:
        nodes = cluster_nodes()
        requests = {study.model: trial_resources(study, nodes) for study in loaded.space.studies}

        def trainable(config):
            import time

            import ray

            mine = marks / f"{config['model']}-{config['element']}-{config['r_max']}"
            mine.touch()
            # each NequIP trial waits (up to 180 s: worker start-up on a loaded 2-core machine) until all
            # four are running: only packing lets them meet
            deadline = time.monotonic() + 180
            peers = 0
            while time.monotonic() < deadline:
                peers = len(list(marks.glob("nequip-*")))
                if config["model"] != "nequip" or peers == 4:
                    break
                time.sleep(0.1)
            assigned = ray.get_runtime_context().get_assigned_resources()
            tune.report({"peers": peers, "gpu_ids": len(ray.get_gpu_ids()), "gpu_share": assigned.get("GPU", 0.0)})

        space = {"model": tune.grid_search(["nequip", "flare"]), "element": tune.grid_search(["Cu", "Au"]),
                 "r_max": tune.grid_search([4.0, 5.0])}
        tuner = tune.Tuner(tune.with_resources(trainable, lambda config: requests[config["model"]].factory()),
                           param_space=space, run_config=tune.RunConfig(verbose=0, storage_path=str(tmp_path / "tune")))
        results = [r.metrics | {"model": r.config["model"]} for r in tuner.fit()]
    finally:
        ray.shutdown()
    assert requests["nequip"].gpus == 0.25 and requests["flare"].gpus == 0.0
    nequip = [r for r in results if r["model"] == "nequip"]
    flare = [r for r in results if r["model"] == "flare"]
    assert len(nequip) == 4 and len(flare) == 4
    assert [r["peers"] for r in nequip] == [4, 4, 4, 4]  # all four ran at once
    assert {(r["gpu_ids"], r["gpu_share"]) for r in nequip} == {(1, 0.25)}  # each on the one GPU, a quarter of it
    assert {(r["gpu_ids"], r["gpu_share"]) for r in flare} == {(0, 0.0)}


@pytest.mark.parametrize("value, ok", [(0.25, True), (0.5, True), (1, True), (2, True), (1.5, False), (-1, False)])
def test_gpu_shares_are_fractions_of_one_or_whole_gpus(value, ok):
    from sweep.errors import InputError

    text = f"elements: [Cu]\nstudies:\n  - {{model: nequip, resources: {{gpus: {value}}}}}\n"
    if ok:
        assert parse_space(text, "g.yaml").space.studies[0].resources.gpus == float(value)
    else:
        with pytest.raises(InputError, match="resources.gpus"):
            parse_space(text, "g.yaml")


def test_a_gpu_share_caps_the_trials_cuda_memory_only_on_a_gpu():
    from sweep.tune.resources import share_gpu_memory

    # on the CPU (and for whole GPUs) there is nothing to cap
    assert share_gpu_memory(0.25, "cpu") is None
    assert share_gpu_memory(1.0, "cuda") is None
