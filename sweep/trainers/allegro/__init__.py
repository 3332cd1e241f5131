"""Allegro (nequip-allegro 0.8): strictly local equivariant potentials, a model block of the NequIP framework.

Everything but the model block is NequIP's (:mod:`sweep.trainers.nequip`): data module, loss,
metrics, schedule, checkpoints, export and ASE calculator. :mod:`.params` holds the model's
hyperparameters (light), :mod:`.trainer` the trainer. This ``__init__`` holds only the family record.
"""

from sweep.trainers.family import Family
from sweep.trainers.nequip import FRAMEWORK_EXPORTS

FAMILY = Family(
    name="allegro",
    display_name="Allegro",
    marker="^",
    accelerator="either",
    bundle="one-bundle",
    trainer="sweep.trainers.allegro.trainer:AllegroTrainer",
    params="sweep.trainers.allegro.params:AllegroParams",
    exports=FRAMEWORK_EXPORTS,
    calculator="sweep.trainers.nequip.trainer:calculator_from_export",
    description="strictly local equivariant (AllegroModel on the NequIP framework); one GPU when the cluster has one",
    size_note="Weights is the trainable parameter count",
)
