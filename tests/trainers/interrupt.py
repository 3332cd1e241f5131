"""A training stopped by its reporter after the first block: the shared set-up of the resume tests."""

from __future__ import annotations

import pytest

from sweep.trainers import TrainContext, get_trainer


class Stop(Exception):
    """Raised by the reporter to stop a training mid-way."""


def train_until_interrupted(model: str, params: dict, frames, checkpoint_dir, context: TrainContext,
                            stop_at_step: int = 4) -> None:
    """Train ``model`` on ``frames`` and stop it once the reporter sees ``stop_at_step``."""

    def reporter(step, metrics):
        if step >= stop_at_step:
            raise Stop

    trainer = get_trainer(model)
    with pytest.raises(Stop):
        trainer().train(trainer.parse_params(params), frames, [], reporter, checkpoint_dir, context)
