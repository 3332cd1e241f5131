"""Model families behind one interface (:mod:`sweep.trainers.base`)."""

from sweep.trainers.base import (
    HyperParams,
    Prediction,
    Reporter,
    TrainContext,
    TrainedModel,
    Trainer,
    available_trainers,
    get_trainer,
    null_reporter,
    register_trainer,
)

__all__ = [
    "HyperParams", "Prediction", "Reporter", "TrainContext", "TrainedModel", "Trainer",
    "available_trainers", "get_trainer", "null_reporter", "register_trainer",
]
