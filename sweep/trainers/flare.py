"""FLARE trainer: a sparse Gaussian process on ACE B1/B2 descriptors (mir-flare 1.4.0).

The model is FLARE's own C++ ``SparseGP`` with a ``NormalizedDotProduct`` kernel of power
ζ on ``B2`` descriptors (FLARE's names), driven the way FLARE's on-the-fly code drives it:

* frames are added one block at a time; each frame adds the ``sparse_per_frame``
  atomic environments with the largest predictive variance, computed by FLARE's
  ``SparseGP.compute_cluster_uncertainties`` and picked with the same stable sort as
  FLARE's ``add_uncertain_environments``. All frames of a block are scored against the
  model as it stood at the start of the block;
* hyperparameters are fitted by maximum likelihood with L-BFGS-B (gradient tolerance ``gtol``,
  up to ``maxiter`` iterations, lower bounds that keep σ positive) every ``optimize_every``
  frames and once at the end, as FLARE's ``optimize_hyperparameters`` does; the gradient is
  FLARE's except for one term FLARE computes with an explicit K_uu⁻¹, which stalls the
  optimiser on near-singular K_uu (``likelihood_gradient: flare`` restores FLARE's own, see
  :func:`_optimise`);
* stress enters in FLARE's order and sign: ``-stress[[0, 5, 4, 1, 3, 2]]`` (xx, xy, xz,
  yy, yz, zz, negated), as FLARE's OTF code converts ASE stress.

``B1`` is the 2-body ACE descriptor: the l = 0 single-bond vector c_n, of length
n_max·n_species. mir-flare 1.4.0 does not bind a B1 calculator (it exists only on an
unreleased upstream branch), so it is derived exactly from FLARE's B2 with l_max = 0: that
descriptor holds the products c_a·c_b (a ≤ b); with the Chebyshev basis g_0 = 1 and the
quadratic cutoff, c_(s,0) = Y00·Σ_j (r_ij − r_cut)² > 0 for every atom that has a neighbour
of species s, so c_b = B2_(s0,b) / √B2_(s0,s0), and likewise for the force derivatives.
A B1 model saves and reloads, but has no LAMMPS export: FLARE's pair style reads B2 only.

σ_f and temperature: the paper scales the initial force noise with the trajectory
temperature. We use σ_f(T) = σ_f · √(T / T_ref) with T_ref = ``sigma_f_reference_K``
(1000 K by default), because thermal force magnitudes grow as √T (equipartition); set
``sigma_f_temperature_scaling: none`` to switch it off. No temperature in the context
means no scaling.

σ_e is per atom, as the paper gives it (eV/atom): FLARE's energy label is a frame's total
energy, so each frame enters with FLARE's relative energy noise ``rel_e_noise = N_atoms``
(noise σ_e·N on the total); ``sigma_e_per_atom: false`` applies σ_e to the total instead.

Persistence: a model is FLARE's ``SGP_Wrapper.as_dict`` layout (what ``write_model``
writes; ``SGP_Wrapper.from_file`` reloads it) plus α. FLARE 1.4.0's ``write_model`` itself
raises under numpy 2 (its encoder touches ``np.float_``), so the same JSON is written with a
numpy-2-safe encoder.

Work shared between trials: with ``TrainContext.share_work`` (default on, ``$TM23_SHARE_WORK``)
the FLARE structures of the frames (neighbour lists and descriptors, which depend only on
the frames and the descriptor settings, not on ζ or the σ's) come from a process-wide cache
(:mod:`sweep.trainers.flare_descriptors`), so that trials run one after another in one Tune
worker compute them once; results are bit-identical either way.

A trial that owns more than one CPU trains through :mod:`sweep.trainers.flare_parallel`
(MPI ranks under the venv's ``mpiexec``) and falls back to this serial path when MPI is
unavailable or fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
from ase import Atoms
from pydantic import Field, ValidationInfo, field_validator

from sweep.errors import InputError
from sweep.io.atomic import atomic_directory, atomic_write_json, atomic_write_text
from sweep.metrics import score
from sweep.trainers.base import (
    HyperParams,
    Prediction,
    Reporter,
    TrainContext,
    TrainedModel,
    Trainer,
    register_trainer,
)
from sweep.trainers.flare_descriptors import Tally, get_structure

#: ASE Voigt (xx, yy, zz, yz, xz, xy) -> FLARE (xx, xy, xz, yy, yz, zz), negated.
ASE_TO_FLARE_ORDER = (0, 5, 4, 1, 3, 2)
#: The inverse permutation: FLARE (xx, xy, xz, yy, yz, zz) -> ASE Voigt, negated.
FLARE_TO_ASE_ORDER = (0, 3, 5, 4, 2, 1)
#: Lower bounds for (σ, σ_e, σ_f, σ_s) in L-BFGS-B; without them σ_f goes negative.
HYP_LOWER_BOUNDS = (1e-3, 1e-4, 1e-4, 1e-5)
#: Checkpoint folder inside the trainer's checkpoint directory.
CHECKPOINT_NAME = "flare_ckpt"
#: Label kinds in FLARE's label vector: per frame [energy, forces (3N), stress (6)].
ENERGY, FORCE, STRESS = 0, 1, 2


def label_kinds(n_atoms: int) -> np.ndarray:
    """The kind of each of a frame's labels in FLARE's order: energy, 3N forces, 6 stresses."""
    return np.concatenate([[ENERGY], np.full(3 * n_atoms, FORCE), np.full(6, STRESS)]).astype(np.int8)


def ase_to_flare_stress(stress: Sequence[float]) -> np.ndarray:
    """ASE Voigt stress (positive = tensile) -> FLARE's (xx, xy, xz, yy, yz, zz), negated."""
    return -np.asarray(stress, dtype=float)[list(ASE_TO_FLARE_ORDER)]


def flare_to_ase_stress(stress: Sequence[float]) -> np.ndarray:
    """FLARE's (xx, xy, xz, yy, yz, zz) stress -> ASE Voigt (xx, yy, zz, yz, xz, xy), negated."""
    return -np.asarray(stress, dtype=float)[list(FLARE_TO_ASE_ORDER)]


class FlareParams(HyperParams):
    """FLARE's hyperparameters in its own vocabulary, with the paper's initial values."""

    descriptor: Literal["B1", "B2"] = "B2"
    radial_basis: Literal["chebyshev"] = "chebyshev"
    cutoff_function: Literal["quadratic"] = "quadratic"
    r_cut: float = Field(5.0, gt=0, le=15.0, description="descriptor cutoff in Å")
    n_max: int = Field(8, ge=1, le=20)
    l_max: int = Field(3, ge=0, le=10)
    zeta: Literal[1, 2] = Field(2, description="power of the NormalizedDotProduct kernel")
    sigma: float = Field(2.0, gt=0, description="signal σ (initial)")
    sigma_e: float = Field(0.001, gt=0, description="energy noise in eV/atom (initial)")
    sigma_e_per_atom: bool = Field(True, description="σ_e is per atom: a frame's total-energy noise is "
                                   "σ_e·N_atoms (FLARE's rel_e_noise); false: σ_e is the total-energy noise")
    sigma_f: float = Field(0.05, gt=0, description="force noise in eV/Å at sigma_f_reference_K (initial)")
    sigma_s: float = Field(0.005, gt=0, description="stress noise in eV/Å³ (initial)")
    sigma_f_temperature_scaling: Literal["sqrt", "none"] = "sqrt"
    sigma_f_reference_K: float = Field(1000.0, gt=0)
    sparse_per_frame: int = Field(10, ge=1, description="sparse environments added per frame")
    max_sparse: int = Field(3000, ge=1, description="cap on the total number of sparse environments")
    block_size: int = Field(5, ge=1, description="frames added between reports and checkpoints")
    optimize_every: int = Field(20, ge=0, description="re-optimise after this many frames (0: only at the end)")
    optimize_final: bool = True
    opt_method: Literal["L-BFGS-B"] = "L-BFGS-B"
    gtol: float = Field(1e-4, gt=0)
    maxiter: int = Field(200, ge=0)
    maxfun: int | None = Field(None, ge=1, description="cap on likelihood evaluations per optimisation "
                               "(L-BFGS-B maxfun; None: scipy's default)")
    likelihood_gradient: Literal["exact", "flare"] = Field(
        "exact", description="exact: the derivative of the likelihood as computed (K_uu jitter included); "
        "flare: FLARE 1.4.0's formula, whose σ term inverts K_uu explicitly")

    @field_validator("l_max")
    @classmethod
    def _b1_is_l0(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("descriptor") == "B1" and value != 0:
            raise ValueError("B1 is the l = 0 (2-body) descriptor: l_max must be 0")
        return value


def descriptor_dimension(descriptor: str, n_max: int, l_max: int, n_species: int) -> int:
    """n_d: the paper's Eq. 1 for B2, (n·s + 1)·n·s/2·(l_max + 1); n·s for B1."""
    ns = n_max * n_species
    if descriptor == "B1":
        return ns
    return (ns + 1) * ns // 2 * (l_max + 1)


def scaled_sigma_f(params: FlareParams, temperature_K: float | None) -> float:
    """Initial σ_f for a trajectory at ``temperature_K``: σ_f·√(T/T_ref), or σ_f unscaled."""
    if temperature_K is None or params.sigma_f_temperature_scaling == "none":
        return params.sigma_f
    if not temperature_K > 0:
        raise InputError(None, "temperature_K", f"must be > 0 K, got {temperature_K}")
    return params.sigma_f * math.sqrt(temperature_K / params.sigma_f_reference_K)


def _flare():
    """FLARE's C++ module and Python wrapper, imported on first use."""
    from flare.bffs.sgp import _C_flare
    from flare.bffs.sgp import sparse_gp as sgp_py

    return _C_flare, sgp_py


@dataclass(frozen=True)
class DescriptorSpec:
    """How to turn atoms into FLARE descriptors: kind, cutoff, basis sizes and species."""

    kind: str
    r_cut: float
    n_max: int
    l_max: int
    species: tuple[int, ...]

    @classmethod
    def from_params(cls, params: FlareParams, frames: Sequence[Atoms]) -> "DescriptorSpec":
        """The spec for ``params`` over the species present in ``frames``."""
        species = tuple(sorted({int(z) for f in frames for z in f.numbers}))
        return cls(params.descriptor, params.r_cut, params.n_max, params.l_max, species)

    @property
    def species_map(self) -> dict[int, int]:
        """Atomic number -> FLARE species code 0, 1, ..."""
        return {z: i for i, z in enumerate(self.species)}

    @property
    def n_species(self) -> int:
        """Number of species."""
        return len(self.species)

    @property
    def dimension(self) -> int:
        """Descriptor length by Eq. 1 (B2) or n_max·n_species (B1)."""
        return descriptor_dimension(self.kind, self.n_max, self.l_max, self.n_species)

    def calculator(self):
        """A FLARE B2 calculator (l_max 0 for B1, which is derived from it)."""
        C, _ = _flare()
        l_max = 0 if self.kind == "B1" else self.l_max
        return C.B2("chebyshev", "quadratic", [0.0, self.r_cut], [], [self.n_species, self.n_max, l_max])

    def codes(self, atoms: Atoms, source: str = "frames", frame: int | None = None) -> list[int]:
        """FLARE species codes of ``atoms``; an unknown element is an :class:`InputError`."""
        smap = self.species_map
        try:
            return [smap[int(z)] for z in atoms.numbers]
        except KeyError as exc:
            raise InputError(source, "species", f"element Z={exc.args[0]} is not in the model's species "
                             f"{list(self.species)}", frame=frame) from None

    def structure(self, atoms: Atoms, calculator, labels: bool = False, frame: int | None = None):
        """A FLARE ``Structure`` with descriptors (and energy/force/stress labels if asked).

        ``calculator`` must outlive the structure: the C++ side keeps a raw pointer to it.
        """
        C, _ = _flare()
        struc = C.Structure(np.asarray(atoms.cell.array, dtype=float), self.codes(atoms, frame=frame),
                            np.asarray(atoms.positions, dtype=float), self.r_cut, [calculator])
        if self.kind == "B1":
            dv = struc.descriptors[0]
            b1_from_b2(dv, self.n_species, self.n_max)
            struc.descriptors = [dv]
        if labels:
            energy, forces, stress = frame_labels(atoms, frame)
            struc.energy = np.array([[energy]])
            struc.forces = forces.reshape(-1)
            struc.stresses = ase_to_flare_stress(stress)
        return struc


def frame_labels(atoms: Atoms, frame: int | None = None) -> tuple[float, np.ndarray, np.ndarray]:
    """(energy eV, forces eV/Å, ASE Voigt stress eV/Å³) of a labelled frame."""
    try:
        return (float(atoms.get_potential_energy()), np.asarray(atoms.get_forces(), dtype=float),
                np.asarray(atoms.get_stress(voigt=True), dtype=float))
    except Exception as exc:  # noqa: BLE001 - any missing label is the same user error
        raise InputError("train frames", "labels", f"frame needs energy, forces and stress: {exc}",
                         frame=frame) from None


def _pair_column(a: int, b: int, n: int) -> int:
    """Column of the product (a, b), a ≤ b, in FLARE's B2 with l_max 0 over n radial channels."""
    return a * n - a * (a - 1) // 2 + (b - a)


def b1_from_b2(dv, n_species: int, n_max: int) -> None:
    """Turn FLARE ``DescriptorValues`` of B2 (l_max 0) into B1 in place (see module docstring)."""
    n_rad = n_species * n_max
    descs, dervs, norms, dots = [], [], [], []
    for t in range(dv.n_types):
        d2 = np.asarray(dv.descriptors[t])
        f2 = np.asarray(dv.descriptor_force_dervs[t])
        counts = np.asarray(dv.neighbor_counts[t]).ravel()
        row_atom = np.repeat(np.arange(len(counts)), 3 * counts)
        c = np.zeros((d2.shape[0], n_rad))
        dc = np.zeros((f2.shape[0], n_rad))
        for s in range(n_species):
            ref = s * n_max
            c2 = d2[:, _pair_column(ref, ref, n_rad)]
            present = c2 > 0
            c_ref = np.where(present, np.sqrt(np.where(present, c2, 1.0)), 0.0)
            inv = np.where(present, 1.0 / np.where(present, c_ref, 1.0), 0.0)
            inv_rows = inv[row_atom]
            dc_ref = 0.5 * f2[:, _pair_column(ref, ref, n_rad)] * inv_rows
            c[:, ref] = c_ref
            dc[:, ref] = dc_ref
            for b in range(ref + 1, ref + n_max):
                col = _pair_column(ref, b, n_rad)
                c[:, b] = d2[:, col] * inv
                dc[:, b] = (f2[:, col] - c[row_atom, b] * dc_ref) * inv_rows
        descs.append(c)
        dervs.append(dc)
        norms.append(np.sqrt(np.einsum("ij,ij->i", c, c)))
        dots.append(np.einsum("ij,ij->i", dc, c[row_atom]) if len(row_atom) else np.zeros(0))
    dv.descriptors = descs
    dv.descriptor_force_dervs = dervs
    dv.descriptor_norms = norms
    dv.descriptor_force_dots = dots
    dv.n_descriptors = n_rad


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


def prediction_from_efs(efs: np.ndarray) -> Prediction:
    """A :class:`Prediction` (ASE units and stress convention) from FLARE's mean vector."""
    efs = np.asarray(efs, dtype=float).ravel()
    return Prediction(energy=float(efs[0]), forces=efs[1:-6].reshape(-1, 3).copy(),
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
    _flare()
    return threadpool_limits(limits=max(1, int(n)))


def frames_fingerprint(params: FlareParams, frames: Sequence[Atoms]) -> str:
    """A hash of the hyperparameters and training frames, to tell whether a checkpoint fits."""
    h = hashlib.sha256(params.model_dump_json().encode())
    for f in frames:
        h.update(np.asarray(f.numbers, dtype=np.int64).tobytes())
        h.update(np.asarray(f.positions, dtype=float).tobytes())
        h.update(np.asarray(f.cell.array, dtype=float).tobytes())
    return h.hexdigest()


def energy_noise_scale(per_atom: bool, n_atoms: int) -> float:
    """FLARE's ``rel_e_noise`` for a frame: N_atoms when σ_e is per atom, else 1."""
    return float(n_atoms) if per_atom else 1.0


def sgp_dict(spec: DescriptorSpec, hyps: Sequence[float], zeta: int, frames: Sequence[Atoms],
             sparse: Sequence[Sequence[int]], jitter: float | None = None, per_atom: bool = True) -> dict:
    """The model in FLARE's ``SGP_Wrapper.as_dict`` layout (what ``write_model`` writes).

    Built from an empty wrapper's ``as_dict`` (FLARE's own settings, kernel and descriptor
    entries) plus the training frames and their sparse atoms. For B2 it reloads with
    ``SGP_Wrapper.from_file``; for B1 the descriptor entry says ``"B1"``, which FLARE
    1.4.0 refuses rather than misreads (:func:`rebuild_sgp` loads it).
    """
    C, sgp_py = _flare()
    from flare.atoms import FLARE_Atoms

    kernel = C.NormalizedDotProduct(float(hyps[0]), int(zeta))
    calc = spec.calculator()
    wrapper = _make_wrapper(spec, kernel, calc, hyps)
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


def _make_wrapper(spec: DescriptorSpec, kernel, calc, hyps: Sequence[float], maxiter: int = 200):
    """An empty FLARE ``SGP_Wrapper`` with our settings (the caller keeps kernel and calc alive)."""
    _, sgp_py = _flare()
    return sgp_py.SGP_Wrapper(
        [kernel], [calc], spec.r_cut, float(hyps[1]), float(hyps[2]), float(hyps[3]), spec.species_map,
        variance_type="local", max_iterations=maxiter, opt_method="L-BFGS-B",
        bounds=[(b, None) for b in HYP_LOWER_BOUNDS],
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
    return DescriptorSpec(kind, float(model["cutoff"]), n_max, l_max, species), int(model["kernels"][0][2])


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


def new_live_sgp(spec: DescriptorSpec, hyps: Sequence[float], zeta: int, maxiter: int = 200) -> LiveSGP:
    """An empty FLARE model with the given hyperparameters (σ, σ_e, σ_f, σ_s)."""
    C, _ = _flare()
    kernel = C.NormalizedDotProduct(float(hyps[0]), int(zeta))
    calc = spec.calculator()
    return LiveSGP(_make_wrapper(spec, kernel, calc, hyps, maxiter), [kernel], [calc], spec)


def rebuild_sgp(model: dict) -> LiveSGP:
    """A live FLARE model from a FLARE-layout dict: ``SGP_Wrapper.from_dict`` for B2.

    For B1 (which FLARE 1.4.0 cannot rebuild) the same steps as ``from_dict`` run with
    our B1 structures: each frame is added with its sparse atoms, then one QR update.
    """
    _, sgp_py = _flare()
    spec, zeta = spec_from_dict(model)
    if spec.kind == "B2":
        with quiet_stdout(), warnings.catch_warnings():
            # FLARE warns for each frame that added no sparse environment (past max_sparse).
            warnings.filterwarnings("ignore", message="The mode='specific' but no custom_range")
            gp, kernels = sgp_py.SGP_Wrapper.from_dict(json.loads(json.dumps(model)))
        return LiveSGP(gp, kernels, list(gp.descriptor_calculators), spec)
    live = new_live_sgp(spec, model["hyps"], zeta, int(model.get("max_iterations", 200)))
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
    descriptor cache (:mod:`sweep.trainers.flare_descriptors`).
    """
    struc = get_structure(live.spec, frame, live.calcs[0], labels=True, frame=index, share=share, tally=tally)
    live.sparse_gp.add_training_structure(struc, [-1], float(rel_e_noise), 1.0, 1.0)
    live.gp.atom_indices.append([-1])
    live.gp.rel_efs_noise.append([float(rel_e_noise), 1.0, 1.0])
    if sparse_atoms is not None:
        # Also with no atoms: FLARE's sparse_indices stay one entry per training structure.
        live.sparse_gp.add_specific_environments(struc, [int(a) for a in sparse_atoms])
    return struc


# --------------------------------------------------------------------------------------
# The trained model
# --------------------------------------------------------------------------------------


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

    def _sparse_set(self):
        if self._sparse is None:
            C, _ = _flare()
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
        kernel, sparse, _ = self._sparse_set()
        calc = self.spec.calculator()
        out = []
        self.prediction_tally.shared = self.share_work
        for i, f in enumerate(frames):
            struc = get_structure(self.spec, f, calc, frame=i, share=self.share_work, tally=self.prediction_tally)
            out.append(prediction_from_efs(mean_efs(kernel, sparse, float(self.hyps[0]), self.alpha, struc)))
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
        """FLARE's own artifacts: ``write_model`` JSON and, for B2, the LAMMPS ``pair_style flare`` file."""
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


# --------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------


def initial_hyps(params: FlareParams, context: TrainContext) -> list[float]:
    """(σ, σ_e, σ_f(T), σ_s) to start from."""
    return [params.sigma, params.sigma_e, scaled_sigma_f(params, context.temperature_K), params.sigma_s]


def check_frames(params: FlareParams, train_frames: Sequence[Atoms], val_frames: Sequence[Atoms]) -> DescriptorSpec:
    """Refuse bad frames before any work starts; return the descriptor spec of the training set.

    No training frame, an unlabelled training frame or a validation frame with an element
    the training set lacks is an :class:`InputError`.
    """
    if not len(train_frames):
        raise InputError("train frames", "frames", "no training frames")
    for i, f in enumerate(train_frames):
        frame_labels(f, i)
    spec = DescriptorSpec.from_params(params, train_frames)
    for i, f in enumerate(val_frames):
        spec.codes(f, "validation frames", i)
    return spec


def n_sparse_to_add(params: FlareParams, n_sparse: int, n_atoms: int) -> int:
    """How many sparse environments the next frame adds, given the cap."""
    return max(0, min(params.sparse_per_frame, params.max_sparse - n_sparse, n_atoms))


def optimisation_due(params: FlareParams, before: int, after: int, last: bool) -> bool:
    """Whether hyperparameters are optimised after frames ``before`` .. ``after`` were added."""
    if params.maxiter == 0:
        return False
    if params.optimize_every and after // params.optimize_every > before // params.optimize_every:
        return True
    return last and params.optimize_final


@dataclass
class Progress:
    """What a checkpoint records besides the model: where training stands."""

    fingerprint: str
    frames_added: int = 0
    sparse: list[list[int]] = field(default_factory=list)
    hyps: list[float] = field(default_factory=list)
    log_likelihood: float = float("nan")
    n_optimizations: int = 0
    elapsed_s: float = 0.0
    history: list[dict] = field(default_factory=list)


def save_checkpoint(directory: Path, progress: Progress, model: dict) -> None:
    """Write the FLARE-layout model so far and the progress record, atomically."""
    with atomic_directory(Path(directory) / CHECKPOINT_NAME) as tmp:
        write_sgp_json(tmp / "flare_sgp.json", model)
        atomic_write_json(tmp / "progress.json", progress.__dict__)


def close_block(directory: Path, progress: Progress, params: FlareParams, spec: DescriptorSpec,
                train_frames: Sequence[Atoms], stop: int, metrics: dict[str, float], jitter: float,
                started: float) -> None:
    """Record a block of frames added up to ``stop`` (its metrics, its time) and checkpoint the model so far."""
    progress.history.append({"step": stop, **metrics})
    progress.elapsed_s += time.perf_counter() - started
    save_checkpoint(directory, progress, sgp_dict(spec, progress.hyps, params.zeta, train_frames[:stop],
                                                  progress.sparse, jitter, params.sigma_e_per_atom))


def load_checkpoint(directory: Path, fingerprint: str) -> Progress | None:
    """The progress of a matching checkpoint in ``directory``, or ``None``."""
    path = Path(directory) / CHECKPOINT_NAME / "progress.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if data.get("fingerprint") != fingerprint:
        warnings.warn(f"{path}: checkpoint is for other hyperparameters or frames; starting afresh")
        return None
    return Progress(**data)


def report_metrics(val_frames: Sequence[Atoms], predictions: Sequence[Prediction], log_likelihood: float,
                   n_sparse: int, hyps: Sequence[float]) -> dict[str, float]:
    """The per-block metrics: validation errors (meV units), log-likelihood, sparse count, σ's."""
    metrics: dict[str, float] = {}
    if len(val_frames):
        metrics.update(score(val_frames, predictions, prefix="val"))
    metrics.update({"log_likelihood": float(log_likelihood), "n_sparse": float(n_sparse),
                    "sigma": float(hyps[0]), "sigma_e": float(hyps[1]), "sigma_f": float(hyps[2]),
                    "sigma_s": float(hyps[3])})
    return metrics


def model_info(params: FlareParams, spec: DescriptorSpec, n_d_flare: int, hyps: Sequence[float],
               log_likelihood: float, n_sparse: int, progress: Progress, sigma_f0: float,
               extra: dict | None = None) -> dict[str, Any]:
    """The facts a FLARE training reports."""
    info = {
        "model": "flare", "descriptor": spec.kind, "n_species": spec.n_species,
        "n_d": int(n_d_flare), "n_d_eq1": spec.dimension, "zeta": params.zeta,
        "log_likelihood": float(log_likelihood), "n_sparse": int(n_sparse),
        "n_train_frames": progress.frames_added, "n_optimizations": progress.n_optimizations,
        "hyperparameters": {"sigma": float(hyps[0]), "sigma_e": float(hyps[1]), "sigma_f": float(hyps[2]),
                            "sigma_s": float(hyps[3])},
        "sigma_f_initial": float(sigma_f0), "train_time_s": float(progress.elapsed_s),
    }
    info.update(extra or {})
    return info


def lbfgsb_options(params: FlareParams) -> dict:
    """scipy L-BFGS-B options from the hyperparameters (FLARE passes disp, gtol and maxiter)."""
    options = {"disp": False, "gtol": params.gtol, "maxiter": params.maxiter}
    if params.maxfun is not None:
        options["maxfun"] = params.maxfun
    return options


def _optimise(live: LiveSGP, params: FlareParams, kinds: np.ndarray, log: Path | None) -> tuple[float, dict]:
    """Maximum likelihood by L-BFGS-B, as FLARE's ``optimize_hyperparameters``; returns (log-likelihood, summary).

    With ``likelihood_gradient: flare`` these are FLARE's own steps (``precompute_KnK``,
    scipy L-BFGS-B on ``compute_negative_likelihood_grad_stable``, ``set_hyperparameters``),
    spelled out so that ``maxfun`` can be passed. With ``exact`` (default) the objective is
    :class:`~sweep.trainers.flare_parallel.LikelihoodSolver` on this model's K_uf, the one
    the MPI path uses: FLARE's formula except the σ derivative of ½ log det(K_uu + εI),
    which FLARE takes with an explicit K_uu⁻¹; on the near-singular K_uu of similar
    environments that term is rounding noise and L-BFGS-B stops after a few iterations.
    """
    from scipy.optimize import minimize

    _, sgp_py = _flare()
    sgp = live.sparse_gp
    bounds = [(b, None) for b in HYP_LOWER_BOUNDS]
    with quiet_stdout(log):
        if params.likelihood_gradient == "flare":
            sgp.precompute_KnK()
            res = minimize(sgp_py.compute_negative_likelihood_grad_stable, sgp.hyperparameters, (sgp, True),
                           method=params.opt_method, jac=True, bounds=bounds, options=lbfgsb_options(params))
            sgp.likelihood_gradient = -res.jac
            sgp.set_hyperparameters(res.x)
            loglik = float(-res.fun)
        else:
            from sweep.trainers.flare_parallel import LikelihoodSolver, SelfComm

            solver = LikelihoodSolver.from_sgp(SelfComm(), sgp, kinds)
            solver.precompute_grams()

            def fun(x):
                ll, g, _ = solver.solve(x, grad=True)
                return -ll, -g

            res = minimize(fun, np.asarray(sgp.hyperparameters), method=params.opt_method, jac=True, bounds=bounds,
                           options=lbfgsb_options(params))
            loglik = solver.solve(res.x, grad=False)[0]
            sgp.set_hyperparameters(res.x)
        sgp.log_marginal_likelihood = loglik
    return loglik, {"nit": int(res.nit), "nfev": int(res.nfev), "success": bool(res.success)}


def _likelihood(live: LiveSGP, log: Path | None) -> float:
    with quiet_stdout(log):
        live.sparse_gp.compute_likelihood_stable()
    return float(live.sparse_gp.log_marginal_likelihood)


def train_serial(params: FlareParams, train_frames: Sequence[Atoms], val_frames: Sequence[Atoms],
                 reporter: Reporter, checkpoint_dir: Path, context: TrainContext) -> FlareModel:
    """Train in this process (FLARE's OpenMP threads limited to ``context.num_cpus``)."""
    spec = check_frames(params, train_frames, val_frames)
    checkpoint_dir = Path(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    log = checkpoint_dir / "flare_stdout.log"
    hyps0 = initial_hyps(params, context)
    fingerprint = frames_fingerprint(params, train_frames)
    share = bool(context.share_work)
    tally = Tally(shared=share)
    with thread_limits(context.num_cpus):
        progress = load_checkpoint(checkpoint_dir, fingerprint)
        if progress is not None:
            model = read_sgp_json(checkpoint_dir / CHECKPOINT_NAME / "flare_sgp.json")
            live = rebuild_sgp(model)
            context.notes["flare_resumed_at_frame"] = progress.frames_added
        else:
            progress = Progress(fingerprint=fingerprint, hyps=list(hyps0))
            live = new_live_sgp(spec, hyps0, params.zeta, params.maxiter)
        sgp = live.sparse_gp
        val_strucs = None
        timers: dict[str, float] = {}
        n = len(train_frames)
        while progress.frames_added < n:
            t0 = t = time.perf_counter()
            start = progress.frames_added
            stop = min(n, start + params.block_size)
            strucs = [add_frame(live, train_frames[i], None, i,
                                energy_noise_scale(params.sigma_e_per_atom, len(train_frames[i])), share, tally)
                      for i in range(start, stop)]
            t = _tick(timers, "descriptors+own_kernels", t)
            chosen = []
            n_sparse = sgp.n_sparse
            for struc, i in zip(strucs, range(start, stop)):
                k = n_sparse_to_add(params, n_sparse + sum(map(len, chosen)), len(train_frames[i]))
                chosen.append(select_uncertain(sgp, struc, k))
            t = _tick(timers, "select", t)
            for struc, atoms in zip(strucs, chosen):
                sgp.add_specific_environments(struc, atoms)  # also [] (see add_frame)
                progress.sparse.append(atoms)
            t = _tick(timers, "sparse_kernels", t)
            sgp.update_matrices_QR()
            t = _tick(timers, "qr", t)
            if optimisation_due(params, start, stop, stop == n):
                kinds = np.concatenate([label_kinds(len(f)) for f in train_frames[:stop]])
                ll, summary = _optimise(live, params, kinds, log)
                timers["nfev"] = timers.get("nfev", 0) + summary["nfev"]
                progress.n_optimizations += 1
                t = _tick(timers, "optimise", t)
            else:
                ll = _likelihood(live, log)
                t = _tick(timers, "likelihood", t)
            progress.frames_added = stop
            progress.hyps = [float(h) for h in sgp.hyperparameters]
            progress.log_likelihood = ll
            kernel = flare_kernel(params.zeta, progress.hyps[0])
            alpha = np.asarray(sgp.alpha).ravel()
            if val_strucs is None:
                val_strucs = [get_structure(spec, f, live.calcs[0], frame=i, share=share, tally=tally)
                              for i, f in enumerate(val_frames)]
            sparse_desc = sgp.sparse_descriptors[0]
            preds = [prediction_from_efs(mean_efs(kernel, sparse_desc, progress.hyps[0], alpha, s))
                     for s in val_strucs]
            t = _tick(timers, "predict", t)
            metrics = report_metrics(val_frames, preds, ll, sgp.n_sparse, progress.hyps)
            close_block(checkpoint_dir, progress, params, spec, train_frames, stop, metrics, sgp.Kuu_jitter, t0)
            _tick(timers, "checkpoint", t)
            reporter(stop, metrics)
        model = sgp_dict(spec, progress.hyps, params.zeta, train_frames[:progress.frames_added], progress.sparse,
                         sgp.Kuu_jitter, params.sigma_e_per_atom)
        n_d = descriptor_length(live, train_frames[0], share, tally)
    info = model_info(params, spec, n_d, progress.hyps, progress.log_likelihood, sgp.n_sparse, progress,
                      hyps0[2], {"parallel": {"ranks": 1, "threads": int(context.num_cpus), "timers": timers},
                                 "descriptors": tally.as_dict()})
    return FlareModel(model, np.asarray(sgp.alpha).ravel(), info, live=live, share_work=share)


def _tick(timers: dict, key: str, t0: float) -> float:
    now = time.perf_counter()
    timers[key] = timers.get(key, 0.0) + now - t0
    return now


def flare_kernel(zeta: int, sigma: float):
    """A FLARE ``NormalizedDotProduct`` kernel (used with explicit hyperparameters)."""
    C, _ = _flare()
    return C.NormalizedDotProduct(float(sigma), int(zeta))


def descriptor_length(live: LiveSGP, frame: Atoms, share: bool = False, tally: Tally | None = None) -> int:
    """The descriptor length FLARE reports for ``frame``."""
    # Labelled, as training builds it, so that a shared structure is found in the cache.
    struc = get_structure(live.spec, frame, live.calcs[0], labels=True, share=share, tally=tally)
    return int(struc.descriptors[0].n_descriptors)


@register_trainer
class FlareTrainer(Trainer):
    """FLARE's sparse GP on ACE B1/B2; MPI-parallel when the trial owns several CPUs."""

    name = "flare"
    Params = FlareParams
    Model = FlareModel

    def train(self, params: FlareParams, train_frames: Sequence[Atoms], val_frames: Sequence[Atoms],
              reporter: Reporter, checkpoint_dir: Path, context: TrainContext) -> FlareModel:
        """Train serially, or on ``context.num_cpus`` MPI ranks when ``mpiexec`` is available."""
        if not isinstance(params, FlareParams):
            params = self.parse_params(dict(params))
        check_frames(params, train_frames, val_frames)
        if context.num_cpus > 1:
            from sweep.trainers import flare_parallel

            why_not = flare_parallel.unavailable()
            if why_not is None:
                try:
                    return flare_parallel.train_parallel(params, train_frames, val_frames, reporter,
                                                         Path(checkpoint_dir), context)
                except flare_parallel.ParallelRunError as exc:
                    why_not = str(exc)
            context.notes["flare_parallel_fallback"] = why_not
            warnings.warn(f"FLARE: parallel training unavailable ({why_not}); training serially")
        return train_serial(params, train_frames, val_frames, reporter, Path(checkpoint_dir), context)
