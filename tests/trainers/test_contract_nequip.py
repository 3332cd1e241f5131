"""NequIP passes the trainer contract (:mod:`sweep.trainers.contract`)."""

import pytest

from sweep.trainers.contract import TrainerContract

pytest.importorskip("nequip")


class TestNequIPContract(TrainerContract):
    family = "nequip"
    params = {"num_layers": 2, "num_features": 8, "l_max": 1, "radial_mlp_width": 8, "batch_size": 3,
              "max_epochs": 3}
    bad_value = ("r_max", -2.0)
    #: Lightning's resume restores weights, optimiser, EMA, scheduler and loop, not the shuffle order
    resume_is_exact = False
