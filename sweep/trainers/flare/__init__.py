"""FLARE (mir-flare 1.4.0): a sparse Gaussian process on ACE B1/B2 descriptors.

Modules: :mod:`.params` (hyperparameters), :mod:`.structures` (descriptors, labels, stress
order), :mod:`.descriptors` (structures shared between trials), :mod:`.sgp` (live FLARE
models), :mod:`.model` (the trained model), :mod:`.solver` (likelihood over MPI ranks),
:mod:`.loop` (the training loop), :mod:`.engines` (serial and MPI engines), :mod:`.parallel`
and :mod:`.worker` (the MPI launcher and ranks), :mod:`.trainer`, :mod:`.settings` (the
export's settings.yaml). This ``__init__`` holds only the family record.
"""

from sweep.trainers.family import ExportFile, Family, Selection

FAMILY = Family(
    name="flare",
    display_name="FLARE",
    marker="s",
    accelerator="cpu",
    bundle="mpi-ranks",
    trainer="sweep.trainers.flare.trainer:FlareTrainer",
    params="sweep.trainers.flare.params:FlareParams",
    exports=(
        ExportFile("sgp", "*.json", description="the trained SGP (FLARE's SGP_Wrapper.from_file reloads it)"),
        ExportFile("lammps", "*.flare", required=False,
                   description="LAMMPS pair_style flare coefficients (B2 models only)"),
    ),
    calculator="sweep.trainers.flare.model:calculator_from_export",
    # the paper: lowest validation force MAE; near-ties go to the highest log-likelihood
    selection=Selection(metric="val_forces_mae", tie_break="log_likelihood"),
    export_extras="sweep.trainers.flare.settings:settings_file",
    description="sparse GP on ACE descriptors; MPI ranks on one node",
    size_note="Descriptor dim. is FLARE's n_d (Eq. 1)",
)
