"""MACE (mace-torch 0.3.16): higher-order equivariant message passing, trained by MACE's own script.

MACE trains in its own interpreter (``.venv-mace``: mace-torch pins e3nn 0.4.4, nequip 0.19
needs e3nn 0.6). :mod:`.params` (hyperparameters as MACE's arguments) and :mod:`.trainer`
(the launcher, the trained model and an ASE calculator over a pipe) import neither torch nor
MACE; :mod:`.worker` is the part that runs in MACE's interpreter. This ``__init__`` holds
only the family record.
"""

from sweep.trainers.family import ExportFile, Family, Interpreter

FAMILY = Family(
    name="mace",
    display_name="MACE",
    marker="v",
    accelerator="either",
    bundle="one-bundle",
    trainer="sweep.trainers.mace.trainer:MACETrainer",
    params="sweep.trainers.mace.params:MACEParams",
    exports=(
        ExportFile("config", "config.yaml", names_data_files=True,
                   description="MACE's arguments; mace_run_train --config config.yaml trains them"),
        ExportFile("model", "*.model", description="MACE's model (mace.calculators.MACECalculator loads it)"),
        ExportFile("train_data", "train.xyz", required=False, description="the frames it was trained on"),
        ExportFile("val_data", "val.xyz", required=False, description="its validation frames"),
    ),
    calculator="sweep.trainers.mace.trainer:calculator_from_export",
    interpreter=Interpreter(env="TM23_MACE_PYTHON", venv=".venv-mace", make_target=".stamps/mace"),
    description="higher-order equivariant message passing, in its own venv; one GPU when the cluster has one",
    size_note="Weights is the trainable parameter count",
)
