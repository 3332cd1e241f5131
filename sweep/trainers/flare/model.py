"""A trained FLARE model: FLARE-layout model dict + α, predicting with FLARE's C++ kernel."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from sweep.errors import InputError
from sweep.io.atomic import atomic_directory, atomic_write_json
from sweep.trainers.base import Prediction, TrainedModel
from sweep.trainers.flare.descriptors import Tally, get_structure
from sweep.trainers.flare.sgp import (
    LiveSGP,
    frames_from_dict,
    mean_efs,
    prediction_from_efs,
    quiet_stdout,
    read_sgp_json,
    rebuild_sgp,
    spec_from_dict,
    write_sgp_json,
)
from sweep.trainers.flare.structures import flare_modules


class FlareModel(TrainedModel):
    """A trained FLARE sparse GP: FLARE-layout model dict + α, predicting with FLARE's kernel.

    Predictions are kernel(sparse set, structure)ᵀ·α with FLARE's C++ kernel, which is what
    ``SparseGP::predict_mean`` computes; a reloaded model rebuilds only the sparse set (not
    the training kernels), so save/load gives bit-identical predictions.
    """

    def __init__(self, model: dict, alpha: np.ndarray, info: dict[str, Any], live: LiveSGP | None = None,
                 share_work: bool = False):
        self.model = model
        self.alpha = np.asarray(alpha, dtype=float)
        self.info = dict(info)
        self.spec, self.zeta = spec_from_dict(model)
        self._live = live
        self._sparse = None  # (kernel, sparse ClusterDescriptor, owner objects)
        #: Whether predictions may use (and fill) the process's descriptor cache; a trained
        #: model inherits its training's ``TrainContext.share_work``, a loaded one does not share.
        self.share_work = share_work
        #: Structures this model built or reused for predictions (written into ``info`` by :meth:`save`).
        self.prediction_tally = Tally(shared=share_work)

    @property
    def hyps(self) -> np.ndarray:
        """(σ, σ_e, σ_f, σ_s)."""
        return np.asarray(self.model["hyps"], dtype=float)

    def sparse_set(self):
        """(kernel, sparse descriptors, objects that must outlive them): what predictions multiply α with."""
        if self._sparse is None:
            C, _ = flare_modules()
            if self._live is not None:
                sgp = self._live.sparse_gp
                owners = [self._live]
            else:
                # A U-only SparseGP: the sparse environments without their training kernels.
                kernel = C.NormalizedDotProduct(float(self.hyps[0]), self.zeta)
                calc = self.spec.calculator()
                sgp = C.SparseGP([kernel], *map(float, self.hyps[1:]))
                owners = [kernel, calc]
                for frame, atoms in zip(frames_from_dict(self.model), self.model["sparse_indice"][0]):
                    if atoms:
                        struc = get_structure(self.spec, frame, calc, share=self.share_work,
                                              tally=self.prediction_tally)
                        sgp.add_specific_environments(struc, list(atoms))
                owners.append(sgp)
            kernel = C.NormalizedDotProduct(float(self.hyps[0]), self.zeta)
            self._sparse = (kernel, sgp.sparse_descriptors[0], owners)
        return self._sparse

    def predict(self, frames: Sequence[Atoms]) -> list[Prediction]:
        """Energy, forces and stress of each frame (ASE units and sign)."""
        kernel, sparse, _ = self.sparse_set()
        calc = self.spec.calculator()
        out = []
        self.prediction_tally.shared = self.share_work
        for i, f in enumerate(frames):
            struc = get_structure(self.spec, f, calc, frame=i, share=self.share_work, tally=self.prediction_tally)
            out.append(prediction_from_efs(mean_efs(kernel, sparse, float(self.hyps[0]), self.alpha, struc),
                                           self.spec.reference_energy(f)))
        return out

    def live(self) -> LiveSGP:
        """The full FLARE model (rebuilt from the model dict by FLARE if not at hand)."""
        if self._live is None:
            self._live = rebuild_sgp(self.model)
        return self._live

    def save(self, directory: Path) -> None:
        """Write ``flare_sgp.json`` (FLARE layout), ``alpha.npy`` and ``info.json``.

        If this model has predicted, ``info["prediction_descriptors"]`` first records the
        structures its predictions built or reused so far (:attr:`prediction_tally`).
        """
        if self.prediction_tally.computed or self.prediction_tally.reused:
            self.info["prediction_descriptors"] = self.prediction_tally.as_dict()
        with atomic_directory(directory) as tmp:
            write_sgp_json(tmp / "flare_sgp.json", self.model)
            np.save(tmp / "alpha.npy", self.alpha)
            atomic_write_json(tmp / "info.json", self.info)

    @classmethod
    def load(cls, directory: Path) -> "FlareModel":
        """Load a model written by :meth:`save`."""
        directory = Path(directory)
        for name in ("flare_sgp.json", "alpha.npy", "info.json"):
            if not (directory / name).is_file():
                raise InputError(directory, name, "missing: not a saved FLARE model")
        info = json.loads((directory / "info.json").read_text())
        return cls(read_sgp_json(directory / "flare_sgp.json"), np.load(directory / "alpha.npy"), info)

    def export(self, directory: Path) -> dict[str, Path]:
        """FLARE's own artifacts: ``write_model`` JSON and, for B2, the LAMMPS ``pair_style flare`` file.

        The JSON holds the energy reference (``single_atom_energies``); the LAMMPS file cannot,
        so its energies lack that constant per atom (forces and stress are unaffected).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        live = self.live()
        out: dict[str, Path] = {}
        sgp_path = directory / "flare_sgp.json"
        if self.spec.kind == "B2":
            write_sgp_json(sgp_path, live.gp.as_dict())  # = write_model (see _NumpyEncoder)
        else:
            write_sgp_json(sgp_path, self.model)
        out["sgp_json"] = sgp_path
        if self.spec.kind == "B2":
            lmp = directory / "lmp.flare"
            tmp = directory / ".lmp.flare.tmp"
            with quiet_stdout():
                live.gp.write_mapping_coefficients(str(tmp), "tm23-sweep", 0)
            os.replace(tmp, lmp)
            out["lammps"] = lmp
        return out




def calculator_from_export(directory: Path, device: str = "cpu"):
    """FLARE's own ASE calculator (``SGP_Calculator``) on the exported ``flare_sgp.json``.

    FLARE's C++ objects keep raw pointers to the kernels, so the calculator holds on to them.
    """
    from flare.bffs.sgp.calculator import SGP_Calculator
    from flare.bffs.sgp.sparse_gp import SGP_Wrapper

    with quiet_stdout():
        gp, kernels = SGP_Wrapper.from_file(str(Path(directory) / "flare_sgp.json"))
    calc = SGP_Calculator(gp)
    calc.flare_kernels = kernels
    return calc
