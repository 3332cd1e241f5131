"""FLARE on several CPUs: a data-parallel sparse GP over MPI ranks (mpi4py + the venv's mpiexec).

mir-flare 1.4.0 has no parallel SparseGP, so this module distributes the work that
dominates FLARE's training cost while keeping FLARE's C++ for every kernel:

* **Training data across ranks.** Frame i of the training set lives on rank i mod P. Each
  rank holds a FLARE ``SparseGP`` with its own frames and the *whole* sparse set, so FLARE
  computes the kernel blocks K(sparse, own frames) on each rank in parallel.
* **Sparse selection.** Each frame's owner computes its descriptors and scores its
  environments with FLARE's ``compute_cluster_uncertainties`` on a replicated
  sparse-set-only ``SparseGP``; the picks and the picked frames' descriptor rows (not their
  force derivatives) are all-gathered, and every rank adds the same environments in the
  same order (FLARE's ``add_specific_environments``).
* **Solve and likelihood** (:class:`LikelihoodSolver`). FLARE's ``update_matrices_QR``
  solves [Λ^½ K_fu ; Lᵀ] α = [Λ^½ y ; 0] by one Householder QR. Here each rank factors its
  own rows (LAPACK QR, the m·n² part), and rank 0 merges the triangles with Lᵀ (tall-skinny
  QR): the same R and α up to rounding. The log-likelihood and its gradient follow FLARE's
  ``compute_likelihood_gradient_stable`` term by term, with the label-sized sums reduced
  over ranks; rank 0 drives scipy's L-BFGS-B as FLARE's ``optimize_hyperparameters`` does
  (same bounds, gtol, maxiter). The serial trainer uses the same solver on one process.
* **Prediction across ranks.** Validation (and test) frames are split over ranks; each
  predicts kernel(sparse set, frame)ᵀ·α with FLARE's kernel.

Each rank runs one OpenMP/BLAS thread (ranks × threads = the trial's CPUs). Rank 0
reports each block's metrics as JSON lines on its stdout, which the launching trial turns
into reporter calls, and checkpoints in the same layout as the serial trainer, so either
path resumes the other's checkpoint.

Ranks share no descriptors with earlier trials: each is a fresh process and computes its own
frames' structures once (``info["descriptors"]`` is rank 0's tally). Shipping the parent's
cached structures would save little: rebuilding one from its values costs about a third to
a half of computing it (force derivatives are MBs per frame), and computing them is split
over the ranks anyway. The launching process, which predicts with the finished model (its
sparse set and the validation and test frames), does use its descriptor cache when
``TrainContext.share_work`` is on (:mod:`sweep.trainers.flare_descriptors`).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import scipy.linalg as sla
from ase import Atoms
from scipy.optimize import minimize

from sweep.io.atomic import atomic_write_bytes
from sweep.trainers.base import Prediction, Reporter, TrainContext
from sweep.trainers.flare import (
    ENERGY,
    FORCE,
    HYP_LOWER_BOUNDS,
    STRESS,
    DescriptorSpec,
    FlareModel,
    FlareParams,
    Progress,
    _flare,
    check_frames,
    close_block,
    frames_fingerprint,
    energy_noise_scale,
    initial_hyps,
    label_kinds,
    lbfgsb_options,
    load_checkpoint,
    mean_efs,
    model_info,
    n_sparse_to_add,
    optimisation_due,
    prediction_from_efs,
    report_metrics,
    select_uncertain,
    sgp_dict,
)
from sweep.trainers.flare_descriptors import Tally, get_structure

#: Prefix of the protocol lines rank 0 writes to its stdout.
EVENT_PREFIX = "@flare "


class ParallelRunError(RuntimeError):
    """The MPI run could not start or did not finish; the caller falls back to serial."""


def mpiexec_path() -> Path | None:
    """The ``mpiexec`` next to this interpreter (the mpich wheel's), or on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.is_file() and os.access(here, os.X_OK):
        return here
    found = shutil.which("mpiexec")
    return Path(found) if found else None


def unavailable() -> str | None:
    """Why the MPI path cannot run here, or ``None`` when it can."""
    if mpiexec_path() is None:
        return "no mpiexec next to the Python interpreter or on PATH"
    try:
        import mpi4py  # noqa: F401
    except ImportError as exc:
        return f"mpi4py not importable: {exc}"
    return None


def merge_triangles(parts: Sequence[tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """R and Qᵀb of the stacked least-squares blocks [R_i | c_i] (each upper triangular or trapezoidal).

    The tall-skinny QR reduction step: pairs of triangles are merged with LAPACK's
    triangular-pentagonal QR (``dtpqrt``), and ``dtpmqrt`` applies the same reflectors to
    the right-hand sides.
    """
    def square(r, c):
        rr, cc = np.zeros((n, n), order="F"), np.zeros(n)
        rr[: r.shape[0]] = np.triu(r[:n])
        cc[: len(c)] = c[:n]
        return rr, cc

    r_acc, c_acc = square(*parts[0])
    nb = max(1, min(64, n))
    for r, c in parts[1:]:
        r_b, c_b = square(r, c)
        r_acc, v, t, info = sla.lapack.dtpqrt(n, nb, r_acc, r_b, overwrite_a=1, overwrite_b=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"dtpqrt failed (info={info})")
        c_a, _, info = sla.lapack.dtpmqrt(n, v, t, c_acc[:, None], c_b[:, None], side="L", trans="T")
        if info != 0:
            raise np.linalg.LinAlgError(f"dtpmqrt failed (info={info})")
        r_acc, c_acc = np.asfortranarray(np.triu(r_acc)), c_a[:, 0]
    return r_acc, c_acc


def thin_values(dv) -> dict:
    """What ``add_specific_environments`` reads of a frame's ``DescriptorValues`` (no force derivatives)."""
    return {
        "n_types": int(dv.n_types), "n_descriptors": int(dv.n_descriptors), "n_atoms": int(dv.n_atoms),
        "volume": float(dv.volume), "descriptors": [np.asarray(a) for a in dv.descriptors],
        "descriptor_norms": [np.asarray(a) for a in dv.descriptor_norms],
        "cutoff_values": [np.asarray(a) for a in dv.cutoff_values],
        "n_clusters_by_type": list(dv.n_clusters_by_type), "cumulative_type_count": list(dv.cumulative_type_count),
        "atom_indices": [np.asarray(a) for a in dv.atom_indices],
    }


def thin_structure(frame: Atoms, spec: DescriptorSpec, values: dict):
    """A FLARE ``Structure`` carrying :func:`thin_values` instead of computed descriptors."""
    C, _ = _flare()
    struc = C.Structure(np.asarray(frame.cell.array, dtype=float), spec.codes(frame),
                        np.asarray(frame.positions, dtype=float))
    dv = C.DescriptorValues()
    for key, value in values.items():
        setattr(dv, key, value)
    struc.descriptors = [dv]
    return struc


class SelfComm:
    """A communicator of one process (rank 0 of 1), so that the serial trainer runs the same solver without MPI."""

    def Get_rank(self) -> int:  # noqa: N802 - mpi4py's names
        """0."""
        return 0

    def Get_size(self) -> int:  # noqa: N802
        """1."""
        return 1

    def gather(self, obj, root: int = 0):
        """[obj]."""
        return [obj]

    def allgather(self, obj):
        """[obj]."""
        return [obj]

    def bcast(self, obj, root: int = 0):
        """obj."""
        return obj

    def reduce(self, obj, root: int = 0):
        """obj."""
        return obj

    def Barrier(self) -> None:  # noqa: N802
        """Nothing to wait for."""


class LikelihoodSolver:
    """FLARE's SoR solve and log marginal likelihood over labels spread across ranks.

    FLARE's ``update_matrices_QR`` solves [Λ^½ K_fu ; Lᵀ] α = [Λ^½ y ; 0] (L = chol(K_uu + εI))
    by one Householder QR; here each rank factors its own rows and rank 0 merges the
    triangles with Lᵀ (:func:`merge_triangles`), which gives the same R and α up to
    rounding. The log-likelihood and its gradient follow FLARE's
    ``compute_likelihood_gradient_stable`` term by term with the label-sized sums reduced
    over ranks, except the K_uu part of the σ derivative when ``gradient="exact"`` (see
    :meth:`solve`). Inputs are at σ = 1 (K̂): K_uf = σ²·K̂_uf for FLARE's normalised dot
    product kernel.
    """

    def __init__(self, comm, kuf_hat: np.ndarray, y: np.ndarray, kinds: np.ndarray, weights: np.ndarray,
                 kuu_hat: np.ndarray | None, jitter: float, gradient: str = "exact", timers: dict | None = None):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.kuf, self.y, self.kinds, self.kuu = kuf_hat, y, kinds, kuu_hat
        #: FLARE's 1/rel_noise² per label (its e/f/s_noise_one): the noise is weights/σ_kind².
        self.weights = weights
        self.n = kuf_hat.shape[0]
        self.jitter = float(jitter)
        self.gradient = gradient
        self.timers = timers if timers is not None else {}
        self.grams: np.ndarray | None = None

    @classmethod
    def from_sgp(cls, comm, sgp, kinds: np.ndarray, gradient: str = "exact", timers: dict | None = None):
        """The solver over a FLARE ``SparseGP``'s K_uf, labels, noise weights and (on rank 0) K_uu."""
        hyps = np.asarray(sgp.hyperparameters, dtype=float).ravel()
        kuf = np.asarray(sgp.Kuf) / hyps[0] ** 2
        if kuf.shape[1] != len(kinds):  # a rank with no training frame
            kuf, kinds = np.zeros((int(sgp.n_sparse), 0)), np.zeros(0, dtype=np.int8)
        m = kuf.shape[1]
        weights = np.asarray(sgp.noise_vector, dtype=float).ravel()[:m] * hyps[1:][kinds] ** 2
        kuu = np.asarray(sgp.Kuu) / hyps[0] ** 2 if comm.Get_rank() == 0 else None
        return cls(comm, kuf, np.asarray(sgp.y, dtype=float).ravel()[:m], kinds, weights, kuu,
                   float(sgp.Kuu_jitter), gradient, timers)

    def _tick(self, key: str, t0: float) -> float:
        now = time.perf_counter()
        self.timers[key] = self.timers.get(key, 0.0) + now - t0
        return now

    def precompute_grams(self) -> None:
        """Σ_ranks K̂_uf diag(1_x) K̂_fu for x = energy, force, stress (FLARE's ``precompute_KnK``)."""
        t0 = time.perf_counter()
        local = []
        for x in (ENERGY, FORCE, STRESS):
            k = self.kuf[:, self.kinds == x]
            local.append((k * self.weights[self.kinds == x]) @ k.T)
        self.grams = self.comm.reduce(np.stack(local), root=0)
        self._tick("precompute_grams", t0)

    def solve(self, hyps: Sequence[float], grad: bool) -> tuple[float, np.ndarray | None, np.ndarray]:
        """(log-likelihood, gradient or None, α) at ``hyps``; collective. Values are on rank 0 (α everywhere)."""
        t0 = time.perf_counter()
        self.timers["n_solves"] = self.timers.get("n_solves", 0) + 1
        kuf, y, kinds, kuu, n, w = self.kuf, self.y, self.kinds, self.kuu, self.n, self.weights
        sig, se, sf, ss = (float(h) for h in hyps)
        noise = w / np.array([se, sf, ss])[kinds] ** 2
        sq = np.sqrt(noise)
        if len(y):
            a = kuf.T * (sig**2)
            a *= sq[:, None]
            cq, r = sla.qr_multiply(a, sq * y, mode="right", overwrite_a=True)
        else:
            cq, r = np.zeros(0), np.zeros((0, n))
        t0 = self._tick("solve_local_qr", t0)
        parts = self.comm.gather((r, np.ravel(cq)), root=0)
        alpha = None
        if self.rank == 0:
            try:
                lower = sla.cholesky(sig**2 * kuu + self.jitter * np.eye(n), lower=True)
            except np.linalg.LinAlgError:
                # K_uu + εI is not numerically positive definite at this σ (FLARE's Eigen LLT
                # would go on with NaNs): report an impossible point, which L-BFGS-B backs off.
                lower = None
            if lower is not None:
                r_top, c = merge_triangles(parts + [(lower.T, np.zeros(n))], n)
                alpha = sla.solve_triangular(r_top, c)
        alpha = self.comm.bcast(alpha, root=0)
        t0 = self._tick("solve_root_qr", t0)
        if alpha is None:
            return -math.inf, (np.zeros(4) if grad else None), None
        kfa = kuf.T @ alpha * sig**2 if len(y) else np.zeros(0)
        res = y - kfa
        sums = np.array([
            np.sum(y * noise * res), np.sum(kfa * noise * res),
            *(np.sum(w[kinds == x] * res[kinds == x] ** 2) for x in (ENERGY, FORCE, STRESS)),
            np.sum(np.log(noise)), np.sum(kinds == ENERGY), np.sum(kinds == FORCE), np.sum(kinds == STRESS),
        ])
        total = self.comm.reduce(sums, root=0)
        t0 = self._tick("solve_residuals", t0)
        if self.rank != 0:
            return float("nan"), None, alpha
        y_l_r, k_l_r, re2, rf2, rs2, log_noise, n_e, n_f, n_s = total
        n_labels = n_e + n_f + n_s
        kuu_inv_det = 2 * np.sum(np.log(np.abs(np.diag(lower))))  # FLARE's names for log det terms
        sigma_inv_det = -2 * np.sum(np.log(np.abs(np.diag(r_top))))
        complexity = 0.5 * (log_noise + kuu_inv_det + sigma_inv_det)
        loglik = float(complexity - 0.5 * y_l_r - 0.5 * n_labels * math.log(2 * math.pi))
        if not grad:
            return loglik, None, alpha
        g_e, g_f, g_s = self.grams
        r_inv = sla.solve_triangular(r_top, np.eye(n))
        cov = r_inv @ r_inv.T  # Σ = (K_uu + εI + K_uf Λ K_fu)⁻¹
        # tr(G Σ) for symmetric G and Σ is an elementwise sum.
        t_e, t_f, t_s, t_u = (float(np.sum(g * cov)) for g in (g_e, g_f, g_s, kuu))
        t_lam = t_e / se**2 + t_f / sf**2 + t_s / ss**2
        if self.gradient == "exact":
            # d/dσ of the ½ log det(K_uu + εI) in the likelihood: (n − ε·tr((K_uu + εI)⁻¹))/σ.
            l_inv = sla.solve_triangular(lower, np.eye(n), lower=True)
            kuu_term = (n - self.jitter * float(np.sum(l_inv * l_inv))) / sig
        else:
            # FLARE's ½·tr(K_uu⁻¹ dK_uu) with an explicit inverse and no jitter.
            kuu_term = 0.5 * float(np.trace(np.linalg.inv(sig**2 * kuu) @ (2 * sig * kuu)))
        # Π = dKnK + dKnKᵀ + dK_uu with dKnK = 2σ³ Σ_x G_x/σ_x²; dK_uu = 2σ K̂_uu.
        g_sig = (kuu_term - 0.5 * (4 * sig**3 * t_lam + 2 * sig * t_u)
                 + (2 / sig) * k_l_r - sig * float(alpha @ kuu @ alpha))
        g_noise = [-cnt / s + sig**4 * t / s**3 + rsq / s**3
                   for cnt, s, t, rsq in ((n_e, se, t_e, re2), (n_f, sf, t_f, rf2), (n_s, ss, t_s, rs2))]
        self._tick("solve_root_gradient", t0)
        return loglik, np.array([g_sig, *g_noise]), alpha


class DistributedSGP:
    """One rank's share of a sparse GP whose training frames are spread over an MPI communicator."""

    def __init__(self, comm, spec: DescriptorSpec, zeta: int, hyps: Sequence[float], gradient: str = "exact",
                 per_atom: bool = True):
        C, _ = _flare()
        self.per_atom = per_atom
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.spec = spec
        self.zeta = int(zeta)
        self.calc = spec.calculator()
        self.hyps = np.asarray(hyps, dtype=float)
        # The local model's kernel keeps σ0 for good: K_uf is read back and rescaled to σ.
        self.sigma0 = float(self.hyps[0])
        self.k_local = C.NormalizedDotProduct(self.sigma0, self.zeta)
        self.local = C.SparseGP([self.k_local], *map(float, self.hyps[1:]))
        # Sparse set only (no labels): its L⁻¹ scores uncertainties, as the serial model's does.
        self.k_sel = C.NormalizedDotProduct(self.sigma0, self.zeta)
        self.selector = C.SparseGP([self.k_sel], *map(float, self.hyps[1:]))
        self.k_pred = C.NormalizedDotProduct(self.sigma0, self.zeta)
        self.jitter = float(self.local.Kuu_jitter)
        self.kinds: list[np.ndarray] = []
        self.n_frames = 0
        self.sparse: list[list[int]] = []
        self.alpha: np.ndarray | None = None
        self.log_likelihood = float("nan")
        self.n_d: int | None = None
        self.gradient = gradient
        self._solver: LikelihoodSolver | None = None
        self._sparse_desc = None
        #: Seconds per phase and counts on this rank (for profiling and the benchmark).
        self.timers: dict[str, float] = {}
        #: Structures this rank computed (a rank is a fresh process: nothing to reuse).
        self.tally = Tally()

    def _tick(self, key: str, t0: float) -> float:
        now = time.perf_counter()
        self.timers[key] = self.timers.get(key, 0.0) + now - t0
        return now

    # ---- data ----------------------------------------------------------------------

    def owner(self, frame_index: int) -> int:
        """The rank that holds training frame ``frame_index``."""
        return frame_index % self.size

    def add_block(self, frames: Sequence[Atoms], start: int, params: FlareParams | None,
                  sparse: Sequence[Sequence[int]] | None = None) -> None:
        """Add frames ``start ..`` with sparse atoms picked by uncertainty (or given, on replay).

        Each frame's owner computes its descriptors, adds it to its local model and scores
        its environments; the other ranks receive only what adding its sparse
        environments needs (descriptor rows and norms, see :func:`thin_values`).
        """
        t0 = time.perf_counter()
        own = {}
        for j, f in enumerate(frames):
            if self.owner(start + j) == self.rank:
                struc = get_structure(self.spec, f, self.calc, labels=True, frame=start + j, tally=self.tally)
                self.local.add_training_structure(struc, [-1], energy_noise_scale(self.per_atom, len(f)), 1.0, 1.0)
                self.kinds.append(label_kinds(len(f)))
                own[j] = struc
                if self.n_d is None:
                    self.n_d = int(struc.descriptors[0].n_descriptors)
        t0 = self._tick("descriptors+own_kernels", t0)
        if sparse is None:
            counts, n_sparse = [], self.selector.n_sparse
            for f in frames:
                counts.append(n_sparse_to_add(params, n_sparse + sum(counts), len(f)))
            picks = {j: select_uncertain(self.selector, struc, counts[j]) for j, struc in own.items()}
        else:
            picks = {j: [int(a) for a in sparse[j]] for j in own}
        shared = {j: (atoms, thin_values(own[j].descriptors[0]) if atoms else None) for j, atoms in picks.items()}
        merged: dict[int, tuple] = {}
        for part in self.comm.allgather(shared):
            merged.update(part)
        sparse = [merged[j][0] for j in range(len(frames))]
        t0 = self._tick("select+exchange", t0)
        for j, atoms in enumerate(sparse):
            atoms = [int(a) for a in atoms]
            if atoms:
                struc = own[j] if j in own else thin_structure(frames[j], self.spec, merged[j][1])
                self.local.add_specific_environments(struc, atoms)
                self.selector.add_specific_environments(struc, atoms)
            self.sparse.append(atoms)
        self.n_frames += len(frames)
        if self.n_d is None:
            self.n_d = next((int(v[1]["n_descriptors"]) for v in merged.values() if v[1] is not None), None)
        t0 = self._tick("sparse_kernels", t0)
        self.selector.update_matrices_QR()
        self._solver = self._sparse_desc = None
        self._tick("selector_qr", t0)

    @property
    def n_sparse(self) -> int:
        """Number of sparse environments (the same on every rank)."""
        return int(self.selector.n_sparse)

    @property
    def solver(self) -> "LikelihoodSolver":
        """The likelihood over all ranks' labels, from this rank's K_uf (rebuilt after each block)."""
        if self._solver is None:
            self._solver = LikelihoodSolver.from_sgp(self.comm, self.local, np.concatenate(self.kinds)
                                                     if self.kinds else np.zeros(0, dtype=np.int8),
                                                     self.gradient, self.timers)
        return self._solver

    def _solve(self, hyps: np.ndarray, grad: bool) -> tuple[float, np.ndarray | None]:
        """α (kept), log-likelihood and (if asked) gradient at ``hyps``; collective over ranks."""
        loglik, g, self.alpha = self.solver.solve(hyps, grad)
        self.log_likelihood = loglik
        return loglik, g

    def _precompute_grams(self) -> None:
        self.solver.precompute_grams()

    def set_hyps(self, hyps: Sequence[float]) -> float:
        """Set (σ, σ_e, σ_f, σ_s), re-solve, and refresh the uncertainty model; collective."""
        self.hyps = np.asarray(self.comm.bcast(np.asarray(hyps, dtype=float), root=0))
        loglik, _ = self._solve(self.hyps, grad=False)
        if self.alpha is None:
            raise np.linalg.LinAlgError(f"K_uu + jitter is not positive definite at σ = {self.hyps[0]:g}")
        if not np.array_equal(np.asarray(self.selector.hyperparameters).ravel(), self.hyps):
            self.selector.set_hyperparameters(self.hyps)  # also refreshes its L⁻¹
        return loglik

    def optimise(self, params: FlareParams) -> tuple[float, dict]:
        """Maximum likelihood by L-BFGS-B driven from rank 0, as FLARE's optimize_hyperparameters."""
        self.solver.precompute_grams()
        if self.rank == 0:
            def fun(x):
                self.comm.bcast(("eval", x), root=0)
                ll, g = self._solve(np.asarray(x), grad=True)
                return -ll, -g  # -(-inf) = inf where K_uu is not positive definite

            try:
                res = minimize(fun, self.hyps, method="L-BFGS-B", jac=True,
                               bounds=[(b, None) for b in HYP_LOWER_BOUNDS],
                               options=lbfgsb_options(params))
            finally:
                self.comm.bcast(("stop", None), root=0)
            x, summary = res.x, {"nit": int(res.nit), "nfev": int(res.nfev), "success": bool(res.success)}
            self.timers["nfev"] = self.timers.get("nfev", 0) + int(res.nfev)
        else:
            while True:
                cmd, x = self.comm.bcast(None, root=0)
                if cmd == "stop":
                    break
                self._solve(np.asarray(x), grad=True)
            x, summary = None, {}
        self.solver.grams = None
        loglik = self.set_hyps(x)
        return loglik, summary

    # ---- prediction -----------------------------------------------------------------

    def mean_vectors(self, strucs: dict[int, Any]) -> dict[int, np.ndarray]:
        """FLARE mean vectors [E, F, S] of this rank's structures ``{index: Structure}``, gathered on rank 0."""
        t0 = time.perf_counter()
        if self._sparse_desc is None:
            self._sparse_desc = self.selector.sparse_descriptors[0]
        mine = {i: mean_efs(self.k_pred, self._sparse_desc, float(self.hyps[0]), self.alpha, s)
                for i, s in strucs.items()}
        merged: dict[int, np.ndarray] = {}
        for part in self.comm.gather(mine, root=0) or []:
            merged.update(part)
        self._tick("predict", t0)
        return merged

    def structures(self, frames: Sequence[Atoms]) -> dict[int, Any]:
        """This rank's share (round-robin) of ``frames`` as FLARE structures."""
        return {i: get_structure(self.spec, f, self.calc, frame=i, tally=self.tally)
                for i, f in enumerate(frames) if i % self.size == self.rank}

    def predict(self, frames: Sequence[Atoms]) -> list[Prediction] | None:
        """Predictions of ``frames`` computed across ranks; the list on rank 0, ``None`` elsewhere."""
        merged = self.mean_vectors(self.structures(frames))
        if self.rank != 0:
            return None
        return [prediction_from_efs(merged[i]) for i in range(len(frames))]


# --------------------------------------------------------------------------------------
# Rank-side driver
# --------------------------------------------------------------------------------------


def run_training(comm, job: dict, emit: Callable[[dict], None]) -> None:
    """Train on every rank of ``comm`` from a job written by :func:`train_parallel`."""
    params = FlareParams(**job["params"])
    train_frames, val_frames = job["train_frames"], job["val_frames"]
    checkpoint_dir = Path(job["checkpoint_dir"])
    context = TrainContext(temperature_K=job["temperature_K"], num_cpus=comm.Get_size())
    spec = DescriptorSpec.from_params(params, train_frames)
    hyps0 = initial_hyps(params, context)
    fingerprint = frames_fingerprint(params, train_frames)
    progress = load_checkpoint(checkpoint_dir, fingerprint) if comm.Get_rank() == 0 else None
    progress = comm.bcast(progress, root=0)
    rank0 = comm.Get_rank() == 0
    t_start = time.perf_counter()
    if progress is None:
        progress = Progress(fingerprint=fingerprint, hyps=list(hyps0))
        engine = DistributedSGP(comm, spec, params.zeta, hyps0, params.likelihood_gradient, params.sigma_e_per_atom)
    else:
        engine = DistributedSGP(comm, spec, params.zeta, progress.hyps, params.likelihood_gradient,
                                params.sigma_e_per_atom)
        done = progress.frames_added
        for start in range(0, done, params.block_size):
            stop = min(done, start + params.block_size)
            engine.add_block(train_frames[start:stop], start, None, progress.sparse[start:stop])
        engine.set_hyps(progress.hyps)
        if rank0:
            emit({"event": "resumed", "frames_added": done})
    val_strucs = engine.structures(val_frames)
    n = len(train_frames)
    while engine.n_frames < n:
        t0 = time.perf_counter()
        start, stop = engine.n_frames, min(n, engine.n_frames + params.block_size)
        engine.add_block(train_frames[start:stop], start, params)
        if optimisation_due(params, start, stop, stop == n):
            loglik, _ = engine.optimise(params)
            progress.n_optimizations += 1
        else:
            loglik = engine.set_hyps(engine.hyps)
        merged = engine.mean_vectors(val_strucs)
        if rank0:
            preds = [prediction_from_efs(merged[i]) for i in range(len(val_frames))]
            progress.frames_added = stop
            progress.sparse = engine.sparse
            progress.hyps = [float(h) for h in engine.hyps]
            progress.log_likelihood = loglik
            metrics = report_metrics(val_frames, preds, loglik, engine.n_sparse, progress.hyps)
            close_block(checkpoint_dir, progress, params, spec, train_frames, stop, metrics, engine.jitter, t0)
            emit({"event": "report", "step": stop, "metrics": metrics})
    if rank0:
        model = sgp_dict(spec, progress.hyps, params.zeta, train_frames, engine.sparse, engine.jitter,
                         params.sigma_e_per_atom)
        info = model_info(params, spec, engine.n_d, progress.hyps, progress.log_likelihood, engine.n_sparse,
                          progress, hyps0[2], {"parallel": {"ranks": comm.Get_size(), "threads": 1,
                                                            "wall_s": time.perf_counter() - t_start,
                                                            "timers": engine.timers},
                                                "descriptors": engine.tally.as_dict()})
        FlareModel(model, engine.alpha, info).save(Path(job["out_dir"]))
        emit({"event": "done", "info": info})
    comm.Barrier()


def run_prediction(comm, job: dict, emit: Callable[[dict], None]) -> None:
    """Predict ``job["frames"]`` across ranks with a saved model; rank 0 writes the results."""
    model = FlareModel.load(Path(job["model_dir"]))
    kernel, sparse, _ = model._sparse_set()
    frames = job["frames"]
    calc = model.spec.calculator()
    mine = {}
    for i in range(comm.Get_rank(), len(frames), comm.Get_size()):
        struc = model.spec.structure(frames[i], calc, frame=i)
        mine[i] = mean_efs(kernel, sparse, float(model.hyps[0]), model.alpha, struc)
    merged: dict[int, np.ndarray] = {}
    for part in comm.gather(mine, root=0) or []:
        merged.update(part)
    if comm.Get_rank() == 0:
        efs = [merged[i] for i in range(len(frames))]
        atomic_write_bytes(Path(job["out_file"]), pickle.dumps(efs))
        emit({"event": "done"})


# --------------------------------------------------------------------------------------
# Trial-side launcher
# --------------------------------------------------------------------------------------


def _launch(job: dict, job_dir: Path, ranks: int, on_event: Callable[[dict], None]) -> None:
    """Run the worker under ``mpiexec -n ranks`` and feed its events to ``on_event``."""
    job_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(job_dir / "job.pkl", pickle.dumps(job))
    cmd = [str(mpiexec_path()), "-n", str(ranks), sys.executable, "-m", "sweep.trainers.flare_worker",
           str(job_dir / "job.pkl")]
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    stderr_path = job_dir / "stderr.log"
    finished = False
    with open(stderr_path, "wb") as err:
        try:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, start_new_session=True)
        except OSError as exc:
            raise ParallelRunError(f"cannot start {cmd[0]}: {exc}") from None
        try:
            for raw in proc.stdout:
                line = raw.decode(errors="replace").strip()
                if line.startswith(EVENT_PREFIX):
                    event = json.loads(line[len(EVENT_PREFIX):])
                    finished |= event.get("event") == "done"
                    on_event(event)
            rc = proc.wait()
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
    if rc != 0 or not finished:
        tail = deque(stderr_path.read_text(errors="replace").splitlines(), maxlen=8)
        raise ParallelRunError(f"mpiexec -n {ranks} exited with status {rc}: " + " | ".join(tail))


def train_parallel(params: FlareParams, train_frames: Sequence[Atoms], val_frames: Sequence[Atoms],
                   reporter: Reporter, checkpoint_dir: Path, context: TrainContext) -> FlareModel:
    """Train on ``context.num_cpus`` MPI ranks; raises :class:`ParallelRunError` if MPI fails."""
    check_frames(params, train_frames, val_frames)
    ranks = int(context.num_cpus)
    job_dir = Path(checkpoint_dir) / "mpi_job"
    out_dir = job_dir / "model"
    job = {"mode": "train", "params": params.model_dump(), "train_frames": list(train_frames),
           "val_frames": list(val_frames), "temperature_K": context.temperature_K,
           "checkpoint_dir": str(checkpoint_dir), "out_dir": str(out_dir)}

    def on_event(event: dict) -> None:
        if event.get("event") == "report":
            reporter(int(event["step"]), event["metrics"])
        elif event.get("event") == "resumed":
            context.notes["flare_resumed_at_frame"] = int(event["frames_added"])

    _launch(job, job_dir, ranks, on_event)
    model = FlareModel.load(out_dir)
    # The ranks were fresh processes; this process predicts with the model (its sparse set
    # and the frames' structures), and may reuse structures from earlier trials for that.
    model.share_work = bool(context.share_work)
    context.notes["flare_parallel_ranks"] = ranks
    return model


def predict_parallel(model_dir: Path, frames: Sequence[Atoms], ranks: int, work_dir: Path) -> list[Prediction]:
    """Predict ``frames`` with a saved FLARE model on ``ranks`` MPI ranks."""
    out_file = Path(work_dir) / "predictions.pkl"
    job = {"mode": "predict", "model_dir": str(model_dir), "frames": list(frames), "out_file": str(out_file)}
    _launch(job, Path(work_dir), ranks, lambda event: None)
    return [prediction_from_efs(e) for e in pickle.loads(out_file.read_bytes())]

