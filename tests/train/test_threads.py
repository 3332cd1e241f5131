"""A training uses as many CPU threads as it owns (``TrainContext.num_cpus``), inside Ray or not."""

from __future__ import annotations

import pytest
import torch

from sweep.data.splits import SplitFrames, parse_task
from sweep.train import run_training
from sweep.train.threads import cpu_threads
from sweep.trainers.base import TrainContext


def test_cpu_threads_limits_torch_and_restores_it():
    torch.set_num_threads(2)
    with cpu_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("num_cpus", [1, 3])
def test_nequip_trains_on_the_cpus_it_owns(emt_cu_frames, tmp_path, num_cpus):
    pytest.importorskip("sweep.trainers.nequip.trainer")
    train, test = emt_cu_frames
    split = SplitFrames(task=parse_task("grid"), element="Cu", train=train[:6], val=train[6:9], test=test[:2])
    seen: list[int] = []
    torch.set_num_threads(2)
    run_training("nequip", {"num_layers": 1, "num_features": 4, "l_max": 0, "radial_mlp_width": 4,
                            "batch_size": 3, "max_epochs": 2},
                 split, tmp_path, reporter=lambda step, metrics: seen.append(torch.get_num_threads()),
                 context=TrainContext(device="cpu", num_cpus=num_cpus, temperature_K=300.0), export=False)
    assert seen == [num_cpus, num_cpus]
    assert torch.get_num_threads() == 2
