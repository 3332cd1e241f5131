"""FLARE passes the trainer contract (:mod:`sweep.trainers.contract`)."""

from sweep.trainers.contract import TrainerContract


class TestFlareContract(TrainerContract):
    family = "flare"
    params = {"r_cut": 4.5, "n_max": 4, "l_max": 2, "sparse_per_frame": 8, "block_size": 4, "optimize_every": 8}
    bad_value = ("r_cut", -1.0)
