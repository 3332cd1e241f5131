"""Model families behind one interface (:mod:`sweep.trainers.base`), each described by its record (:mod:`sweep.trainers.family`)."""

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
from sweep.trainers.family import Family, ModelInfo, families, get_family

__all__ = [
    "Family", "HyperParams", "ModelInfo", "Prediction", "Reporter", "TrainContext", "TrainedModel", "Trainer",
    "available_trainers", "families", "get_family", "get_trainer", "null_reporter", "register_trainer",
]
