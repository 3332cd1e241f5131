"""Training drivers: one training of one model on one task, shared by the CLI and Ray Tune trials."""

from sweep.train.single import TrainingResult, run_training

__all__ = ["TrainingResult", "run_training"]
