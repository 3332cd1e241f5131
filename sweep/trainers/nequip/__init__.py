"""NequIP (nequip 0.19): E(3)-equivariant message passing, trained through ``nequip-train``'s own route.

Modules: :mod:`.config` (hyperparameters and NequIP's Hydra config; light),
:mod:`.callbacks` (stop rule, Voigt stress, per-epoch reports), :mod:`.shared` (frames and
neighbour lists shared between trainings), :mod:`.trainer` (the framework trainer, which
Allegro's reuses with its own model block). This ``__init__`` holds only the family record.
"""

from sweep.trainers.family import ExportFile, Family

#: The native files of a NequIP-framework export (Allegro's are the same).
FRAMEWORK_EXPORTS = (
    ExportFile("config", "config.yaml", names_data_files=True,
               description="the run's Hydra config; stock nequip-train trains it"),
    ExportFile("package", "*.nequip.zip", description="the packaged model (nequip-package build)"),
    ExportFile("train_data", "train.xyz", required=False, description="the frames the model was trained on"),
    ExportFile("val_data", "val.xyz", required=False, description="its validation frames"),
)

FAMILY = Family(
    name="nequip",
    display_name="NequIP",
    marker="o",
    accelerator="either",
    bundle="one-bundle",
    trainer="sweep.trainers.nequip.trainer:NequIPTrainer",
    params="sweep.trainers.nequip.config:NequIPParams",
    exports=FRAMEWORK_EXPORTS,
    calculator="sweep.trainers.nequip.trainer:calculator_from_export",
    description="E(3)-equivariant message passing (NequIPGNNModel); one GPU per trial when the cluster has one",
    size_note="Weights is the trainable parameter count",
)
