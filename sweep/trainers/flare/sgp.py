"""Live FLARE models: building, adding frames and sparse environments, predicting, (de)serialising.

Persistence: a model is FLARE's ``SGP_Wrapper.as_dict`` layout (what ``write_model``
writes; ``SGP_Wrapper.from_file`` reloads it) plus α. FLARE 1.4.0's ``write_model`` itself
raises under numpy 2 (its encoder touches ``np.float_``), so the same JSON is written with a
numpy-2-safe encoder. A B1 model saves and reloads, but FLARE 1.4.0 cannot rebuild it
(:func:`rebuild_sgp` adds its frames itself).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms

from sweep.io.atomic import atomic_write_text
from sweep.trainers.base import Prediction
from sweep.trainers.flare.descriptors import Tally, get_structure
from sweep.trainers.flare.structures import (
    HYP_LOWER_BOUNDS,
    DescriptorSpec,
    ase_to_flare_stress,
    flare_modules,
    flare_to_ase_stress,
    frame_labels,
)


def select_uncertain(sgp, struc, n_add: int) -> list[int]:
    """Atoms of ``struc`` whose environments have the largest predictive variance (FLARE's rule).

    Mirrors ``SparseGP::add_uncertain_environments``: variances from
    ``compute_cluster_uncertainties``, stable sort by decreasing variance, first ``n_add``.
    With no sparse environment yet every environment has the prior variance, so the stable
    sort keeps cluster order (made explicit here, not left to rounding).
    """
    dv = struc.descriptors[0]
    cum = list(dv.cumulative_type_count)
    n_clusters = cum[-1]
    if n_add <= 0 or n_clusters == 0:
        return []
    if sgp.n_sparse == 0:
        order = np.arange(n_clusters)
    else:
        var = np.asarray(sgp.compute_cluster_uncertainties(struc)[0]).ravel()
        order = np.argsort(-var, kind="stable")
    atoms = []
    for cluster in order[:n_add]:
        t = int(np.searchsorted(cum, cluster, side="right") - 1)
        atoms.append(int(np.asarray(dv.atom_indices[t]).ravel()[cluster - cum[t]]))
    return atoms


def mean_efs(kernel, sparse_descriptor, sigma: float, alpha: np.ndarray, struc) -> np.ndarray:
    """FLARE's mean prediction [E, F(3N), S(6)] of ``struc``: kernel(sparse, struc)ᵀ·α.

    The same product as ``SparseGP::predict_mean``, with FLARE's C++ kernel, for an α that
    may come from the parallel solver or from a saved model.
    """
    kmat = kernel.envs_struc(sparse_descriptor, struc.descriptors[0], np.array([sigma]))
    return np.asarray(kmat).T @ alpha


def prediction_from_efs(efs: np.ndarray, reference_energy: float = 0.0) -> Prediction:
    """A :class:`Prediction` (ASE units and stress convention) from FLARE's mean vector.

    ``reference_energy`` (the structure's share of the per-species reference, see
    ``DescriptorSpec.reference_energy``) is added back to the energy.
    """
    efs = np.asarray(efs, dtype=float).ravel()
    return Prediction(energy=float(efs[0]) + float(reference_energy), forces=efs[1:-6].reshape(-1, 3).copy(),
                      stress=flare_to_ase_stress(efs[-6:]))


@contextlib.contextmanager
def quiet_stdout(log_path: Path | None = None):
    """Send FLARE's chatter (C++ ``std::cout`` and Python ``print``) to ``log_path`` or nowhere."""
    sys.stdout.flush()
    target = os.open(str(log_path) if log_path else os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = os.dup(1)
    os.dup2(target, 1)
    os.close(target)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def thread_limits(n: int):
    """Limit OpenMP (FLARE's loops) and BLAS threads to ``n`` for the enclosed work."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with the venv
        return contextlib.nullcontext()
    # threadpoolctl limits only the libraries loaded when it is entered: without this, the
    # first training in a process ran FLARE's OpenMP loops on every core, and its kernel
    # sums came out in another order (predictions ~1e-6 off the later, limited runs).
    flare_modules()
    return threadpool_limits(limits=max(1, int(n)))


def energy_noise_scale(per_atom: bool, n_atoms: int) -> float:
    """FLARE's ``rel_e_noise`` for a frame: N_atoms when σ_e is per atom, else 1."""
    return float(n_atoms) if per_atom else 1.0


def sgp_dict(spec: DescriptorSpec, hyps: Sequence[float], zeta: int, frames: Sequence[Atoms],
             sparse: Sequence[Sequence[int]], jitter: float | None = None, per_atom: bool = True,
             bounds: Sequence[tuple[float, float | None]] | None = None) -> dict:
    """The model in FLARE's ``SGP_Wrapper.as_dict`` layout (what ``write_model`` writes).

    Built from an empty wrapper's ``as_dict`` (FLARE's own settings, kernel and descriptor
    entries) plus the training frames and their sparse atoms. For B2 it reloads with
    ``SGP_Wrapper.from_file``; for B1 the descriptor entry says ``"B1"``, which FLARE
    1.4.0 refuses rather than misreads (:func:`rebuild_sgp` loads it).
    """
    C, sgp_py = flare_modules()
    from flare.atoms import FLARE_Atoms

    kernel = C.NormalizedDotProduct(float(hyps[0]), int(zeta))
    calc = spec.calculator()
    wrapper = _make_wrapper(spec, kernel, calc, hyps, bounds=bounds)
    if jitter is not None:
        wrapper.sparse_gp.Kuu_jitter = jitter
    out = wrapper.as_dict()
    out["descriptor_calculators"][0]["type"] = spec.kind
    structures = []
    for f in frames:
        energy, forces, stress = frame_labels(f)
        s = FLARE_Atoms(cell=np.asarray(f.cell.array), symbols=f.get_chemical_symbols(),
                        positions=np.asarray(f.positions))
        s.forces = forces
        s.stress = ase_to_flare_stress(stress)
        s.info["rel_efs_noise"] = np.array([energy_noise_scale(per_atom, len(f)), 1.0, 1.0])
        s.energy = np.array([energy])
        structures.append(s.as_dict())
    out["training_structures"] = structures
    out["sparse_indice"] = [[list(map(int, a)) for a in sparse]]
    out["atom_indices"] = [[-1] for _ in frames]
    out["rel_efs_noise"] = [[energy_noise_scale(per_atom, len(f)), 1.0, 1.0] for f in frames]
    return out


def _make_wrapper(spec: DescriptorSpec, kernel, calc, hyps: Sequence[float], maxiter: int = 200,
                  bounds: Sequence[tuple[float, float | None]] | None = None):
    """An empty FLARE ``SGP_Wrapper`` with our settings (the caller keeps kernel and calc alive).

    ``bounds`` are the L-BFGS-B bounds of (σ, σ_e, σ_f, σ_s) that the training used
    (:func:`~sweep.trainers.flare.structures.hyperparameter_bounds`), recorded in the model;
    by default the lower bounds alone.
    """
    _, sgp_py = flare_modules()
    bounds = [tuple(b) for b in bounds] if bounds is not None else [(b, None) for b in HYP_LOWER_BOUNDS]
    return sgp_py.SGP_Wrapper(
        [kernel], [calc], spec.r_cut, float(hyps[1]), float(hyps[2]), float(hyps[3]), spec.species_map,
        variance_type="local", max_iterations=maxiter, opt_method="L-BFGS-B",
        bounds=bounds, single_atom_energies=spec.single_atom_energies,
    )


class _NumpyEncoder(json.JSONEncoder):
    """JSON for numpy scalars and arrays.

    FLARE 1.4.0's own ``flare.utils.NumpyEncoder`` touches ``np.float_``, which numpy 2
    removed, so ``SGP_Wrapper.write_model`` raises AttributeError on any array; this encoder
    writes the same JSON.
    """

    def default(self, obj):
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        return super().default(obj)


def write_sgp_json(path: Path, model: dict) -> Path:
    """Write a FLARE-layout model dict as the one-line JSON ``SGP_Wrapper.from_file`` reads.

    This is what ``SGP_Wrapper.write_model`` does (``json.dump(self.as_dict())``), with a
    numpy-2-safe encoder.
    """
    return atomic_write_text(path, json.dumps(model, cls=_NumpyEncoder) + "\n")


def read_sgp_json(path: Path) -> dict:
    """Read a FLARE-layout model JSON."""
    with open(path) as fh:
        return json.loads(fh.readline())


def spec_from_dict(model: dict) -> tuple[DescriptorSpec, int]:
    """The descriptor spec and kernel power stored in a FLARE-layout model dict."""
    desc = model["descriptor_calculators"][0]
    n_species, n_max, l_max = (int(v) for v in desc["descriptor_settings"])
    inv = {int(v): int(k) for k, v in model["species_map"].items()}
    species = tuple(inv[i] for i in range(n_species))
    kind = desc.get("type", "B2")
    single = model.get("single_atom_energies") or {}
    reference = tuple(float(single[k]) for k in sorted(single, key=int))
    return (DescriptorSpec(kind, float(model["cutoff"]), n_max, l_max, species, reference),
            int(model["kernels"][0][2]))


@dataclass
class LiveSGP:
    """A FLARE ``SGP_Wrapper`` together with the C++ objects it points to (kept alive)."""

    gp: Any
    kernels: list
    calcs: list
    spec: DescriptorSpec

    @property
    def sparse_gp(self):
        """The C++ ``SparseGP``."""
        return self.gp.sparse_gp


def new_live_sgp(spec: DescriptorSpec, hyps: Sequence[float], zeta: int, maxiter: int = 200,
                 bounds: Sequence[tuple[float, float | None]] | None = None) -> LiveSGP:
    """An empty FLARE model with the given hyperparameters (σ, σ_e, σ_f, σ_s) and their ``bounds``."""
    C, _ = flare_modules()
    kernel = C.NormalizedDotProduct(float(hyps[0]), int(zeta))
    calc = spec.calculator()
    return LiveSGP(_make_wrapper(spec, kernel, calc, hyps, maxiter, bounds), [kernel], [calc], spec)


def rebuild_sgp(model: dict) -> LiveSGP:
    """A live FLARE model from a FLARE-layout dict: ``SGP_Wrapper.from_dict`` for B2.

    For B1 (which FLARE 1.4.0 cannot rebuild) the same steps as ``from_dict`` run with
    our B1 structures: each frame is added with its sparse atoms, then one QR update.
    """
    _, sgp_py = flare_modules()
    spec, zeta = spec_from_dict(model)
    if spec.kind == "B2":
        with quiet_stdout(), warnings.catch_warnings():
            # FLARE warns for each frame that added no sparse environment (past max_sparse).
            warnings.filterwarnings("ignore", message="The mode='specific' but no custom_range")
            gp, kernels = sgp_py.SGP_Wrapper.from_dict(json.loads(json.dumps(model)))
        return LiveSGP(gp, kernels, list(gp.descriptor_calculators), spec)
    live = new_live_sgp(spec, model["hyps"], zeta, int(model.get("max_iterations", 200)), model.get("bounds"))
    live.sparse_gp.Kuu_jitter = model["Kuu_jitter"]
    rel = model.get("rel_efs_noise") or [[1.0, 1.0, 1.0]] * len(model["training_structures"])
    for frame, atoms, rel_efs in zip(frames_from_dict(model), model["sparse_indice"][0], rel):
        add_frame(live, frame, list(atoms), rel_e_noise=rel_efs[0])
    live.sparse_gp.update_matrices_QR()
    return live


def frames_from_dict(model: dict) -> list[Atoms]:
    """The training frames of a FLARE-layout dict as labelled ASE frames (ASE stress convention)."""
    from flare.atoms import FLARE_Atoms

    from sweep.data.frames import make_frame

    frames = []
    for d in model["training_structures"]:
        s = FLARE_Atoms.from_dict(json.loads(json.dumps(d)))
        res = s.calc.results
        frames.append(make_frame(s.numbers, s.positions, s.cell.array, [True] * 3, float(np.ravel(res["energy"])[0]),
                                 np.asarray(res["forces"]), flare_to_ase_stress(res["stress"])))
    return frames


def add_frame(live: LiveSGP, frame: Atoms, sparse_atoms: Sequence[int] | None, index: int | None = None,
              rel_e_noise: float = 1.0, share: bool = False, tally: Tally | None = None):
    """Add one labelled frame (and, if given, its sparse atoms) to a live model, as ``update_db`` does.

    With ``share`` the frame's structure may come from (and goes into) the process's
    descriptor cache (:mod:`sweep.trainers.flare.descriptors`).
    """
    struc = get_structure(live.spec, frame, live.calcs[0], labels=True, frame=index, share=share, tally=tally)
    live.sparse_gp.add_training_structure(struc, [-1], float(rel_e_noise), 1.0, 1.0)
    live.gp.atom_indices.append([-1])
    live.gp.rel_efs_noise.append([float(rel_e_noise), 1.0, 1.0])
    if sparse_atoms is not None:
        # Also with no atoms: FLARE's sparse_indices stay one entry per training structure.
        live.sparse_gp.add_specific_environments(struc, [int(a) for a in sparse_atoms])
    return struc



def flare_kernel(zeta: int, sigma: float):
    """A FLARE ``NormalizedDotProduct`` kernel (used with explicit hyperparameters)."""
    C, _ = flare_modules()
    return C.NormalizedDotProduct(float(sigma), int(zeta))


def descriptor_length(live: LiveSGP, frame: Atoms, share: bool = False, tally: Tally | None = None) -> int:
    """The descriptor length FLARE reports for ``frame``."""
    # Labelled, as training builds it, so that a shared structure is found in the cache.
    struc = get_structure(live.spec, frame, live.calcs[0], labels=True, share=share, tally=tally)
    return int(struc.descriptors[0].n_descriptors)


