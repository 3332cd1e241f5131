"""The two engines the FLARE training loop (:func:`~sweep.trainers.flare.loop.run_blocks`) drives.

* :class:`SerialEngine`: FLARE's own ``SGP_Wrapper`` in this process.
* :class:`DistributedSGP`: a data-parallel sparse GP over MPI ranks. mir-flare 1.4.0 has no
  parallel SparseGP, so this distributes the work that dominates FLARE's training cost while
  keeping FLARE's C++ for every kernel:

  - **Training data across ranks.** Frame i of the training set lives on rank i mod P. Each
    rank holds a FLARE ``SparseGP`` with its own frames and the *whole* sparse set, so FLARE
    computes the kernel blocks K(sparse, own frames) on each rank in parallel.
  - **Sparse selection.** Each frame's owner computes its descriptors and scores its
    environments with FLARE's ``compute_cluster_uncertainties`` on a replicated
    sparse-set-only ``SparseGP``; the picks and the picked frames' descriptor rows (not their
    force derivatives) are all-gathered, and every rank adds the same environments in the
    same order (FLARE's ``add_specific_environments``).
  - **Solve and likelihood** (:class:`~sweep.trainers.flare.solver.LikelihoodSolver`), with
    rank 0 driving scipy's L-BFGS-B as FLARE's ``optimize_hyperparameters`` does.
  - **Prediction across ranks.** Validation frames are split over ranks; each predicts
    kernel(sparse set, frame)ᵀ·α with FLARE's kernel.

Hyperparameters are fitted with the same bounds, gtol and maxiter on both. The gradient is
FLARE's except for one term FLARE computes with an explicit K_uu⁻¹, which stalls the
optimiser on near-singular K_uu (``likelihood_gradient: flare`` restores FLARE's own on the
serial engine).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from ase import Atoms
from scipy.optimize import minimize

from sweep.trainers.base import Prediction
from sweep.trainers.flare.descriptors import Tally, get_structure
from sweep.trainers.flare.loop import lbfgsb_options, n_sparse_to_add
from sweep.trainers.flare.params import FlareParams
from sweep.trainers.flare.sgp import (
    LiveSGP,
    add_frame,
    energy_noise_scale,
    flare_kernel,
    mean_efs,
    new_live_sgp,
    prediction_from_efs,
    quiet_stdout,
    rebuild_sgp,
    select_uncertain,
)
from sweep.trainers.flare.solver import LikelihoodSolver, SelfComm
from sweep.trainers.flare.structures import DescriptorSpec, flare_modules, hyperparameter_bounds, label_kinds


def _tick(timers: dict, key: str, t0: float) -> float:
    now = time.perf_counter()
    timers[key] = timers.get(key, 0.0) + now - t0
    return now


class SerialEngine:
    """The model in this process: FLARE's ``SGP_Wrapper`` (frames, sparse set, QR solve, likelihood)."""

    def __init__(self, live: LiveSGP, params: FlareParams, share: bool = False, tally: Tally | None = None,
                 log: Path | None = None, n_frames: int = 0, sparse: list[list[int]] | None = None,
                 kinds: list[np.ndarray] | None = None):
        self.live = live
        self.sgp = live.sparse_gp
        self.zeta = int(params.zeta)
        self.per_atom = params.sigma_e_per_atom
        self.share = bool(share)
        self.tally = tally if tally is not None else Tally(shared=share)
        self.log = log
        self.n_frames = n_frames
        self.sparse: list[list[int]] = sparse if sparse is not None else []
        self.kinds: list[np.ndarray] = kinds if kinds is not None else []
        self.timers: dict[str, float] = {}
        self._predicting: tuple[Sequence[Atoms], list] | None = None

    @classmethod
    def fresh(cls, spec: DescriptorSpec, hyps: Sequence[float], params: FlareParams, **kwargs) -> "SerialEngine":
        """An empty model with initial hyperparameters ``hyps``."""
        return cls(new_live_sgp(spec, hyps, params.zeta, params.maxiter,
                                hyperparameter_bounds(params.sigma_e_max, params.sigma_s_max)), params, **kwargs)

    @classmethod
    def resumed(cls, model: dict, sparse: list[list[int]], train_frames: Sequence[Atoms], params: FlareParams,
                **kwargs) -> "SerialEngine":
        """The model of a checkpoint (FLARE layout) holding the first ``len(sparse)`` training frames."""
        n = len(sparse)
        return cls(rebuild_sgp(model), params, n_frames=n, sparse=sparse,
                   kinds=[label_kinds(len(f)) for f in train_frames[:n]], **kwargs)

    @property
    def hyps(self) -> np.ndarray:
        """(σ, σ_e, σ_f, σ_s) now."""
        return np.asarray(self.sgp.hyperparameters, dtype=float)

    @property
    def n_sparse(self) -> int:
        """Number of sparse environments."""
        return int(self.sgp.n_sparse)

    @property
    def jitter(self) -> float:
        """FLARE's K_uu jitter."""
        return float(self.sgp.Kuu_jitter)

    @property
    def alpha(self) -> np.ndarray:
        """α of the current solve."""
        return np.asarray(self.sgp.alpha).ravel()

    def add_block(self, frames: Sequence[Atoms], start: int, params: FlareParams) -> None:
        """Add frames ``start ..`` and each one's most uncertain environments, then re-solve (QR)."""
        t = time.perf_counter()
        strucs = [add_frame(self.live, f, None, start + j, energy_noise_scale(self.per_atom, len(f)), self.share,
                            self.tally) for j, f in enumerate(frames)]
        t = _tick(self.timers, "descriptors+own_kernels", t)
        chosen: list[list[int]] = []
        n_sparse = self.sgp.n_sparse
        for struc, frame in zip(strucs, frames):
            k = n_sparse_to_add(params, n_sparse + sum(map(len, chosen)), len(frame))
            chosen.append(select_uncertain(self.sgp, struc, k))
        t = _tick(self.timers, "select", t)
        for struc, atoms in zip(strucs, chosen):
            self.sgp.add_specific_environments(struc, atoms)  # also [] (see add_frame)
            self.sparse.append(atoms)
        t = _tick(self.timers, "sparse_kernels", t)
        self.sgp.update_matrices_QR()
        _tick(self.timers, "qr", t)
        self.kinds.extend(label_kinds(len(f)) for f in frames)
        self.n_frames = start + len(frames)

    def optimise(self, params: FlareParams) -> tuple[float, dict]:
        """Maximum likelihood by L-BFGS-B, as FLARE's ``optimize_hyperparameters``; returns (log-likelihood, summary).

        With ``likelihood_gradient: flare`` these are FLARE's own steps (``precompute_KnK``,
        scipy L-BFGS-B on ``compute_negative_likelihood_grad_stable``, ``set_hyperparameters``),
        spelled out so that ``maxfun`` can be passed. With ``exact`` (default) the objective is
        :class:`LikelihoodSolver` on this model's K_uf, the one the MPI engine uses: FLARE's
        formula except the σ derivative of ½ log det(K_uu + εI), which FLARE takes with an
        explicit K_uu⁻¹; on the near-singular K_uu of similar environments that term is
        rounding noise and L-BFGS-B stops after a few iterations. Its evaluations use the Gram
        matrices (:meth:`LikelihoodSolver.solve_from_grams`); the final α is FLARE's own.
        """
        t = time.perf_counter()
        _, sgp_py = flare_modules()
        sgp = self.sgp
        bounds = hyperparameter_bounds(params.sigma_e_max, params.sigma_s_max)
        with quiet_stdout(self.log):
            if params.likelihood_gradient == "flare":
                sgp.precompute_KnK()
                res = minimize(sgp_py.compute_negative_likelihood_grad_stable, sgp.hyperparameters, (sgp, True),
                               method=params.opt_method, jac=True, bounds=bounds, options=lbfgsb_options(params))
                sgp.likelihood_gradient = -res.jac
                sgp.set_hyperparameters(res.x)
                loglik = float(-res.fun)
            else:
                solver = LikelihoodSolver.from_sgp(SelfComm(), sgp, np.concatenate(self.kinds))
                solver.precompute_grams()

                def fun(x):
                    ll, g = solver.solve_from_grams(x, grad=True)
                    return -ll, -g

                res = minimize(fun, np.asarray(sgp.hyperparameters), method=params.opt_method, jac=True,
                               bounds=bounds, options=lbfgsb_options(params))
                loglik = solver.solve(res.x, grad=False)[0]
                sgp.set_hyperparameters(res.x)
            sgp.log_marginal_likelihood = loglik
        self.timers["nfev"] = self.timers.get("nfev", 0) + int(res.nfev)
        _tick(self.timers, "optimise", t)
        return loglik, {"nit": int(res.nit), "nfev": int(res.nfev), "success": bool(res.success)}

    def likelihood(self) -> float:
        """The log marginal likelihood at the current hyperparameters (FLARE's stable formula)."""
        t = time.perf_counter()
        with quiet_stdout(self.log):
            self.sgp.compute_likelihood_stable()
        _tick(self.timers, "likelihood", t)
        return float(self.sgp.log_marginal_likelihood)

    def predict_frames(self, frames: Sequence[Atoms]) -> list[Prediction]:
        """Predictions of ``frames`` with the model as it stands (their structures built once)."""
        t = time.perf_counter()
        if self._predicting is None or self._predicting[0] is not frames:
            strucs = [get_structure(self.live.spec, f, self.live.calcs[0], frame=i, share=self.share,
                                    tally=self.tally) for i, f in enumerate(frames)]
            self._predicting = (frames, strucs)
        sigma = float(self.hyps[0])
        kernel = flare_kernel(self.zeta, sigma)
        alpha = self.alpha
        sparse_desc = self.sgp.sparse_descriptors[0]
        out = [prediction_from_efs(mean_efs(kernel, sparse_desc, sigma, alpha, s), self.live.spec.reference_energy(f))
               for f, s in zip(frames, self._predicting[1])]
        _tick(self.timers, "predict", t)
        return out


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
    C, _ = flare_modules()
    struc = C.Structure(np.asarray(frame.cell.array, dtype=float), spec.codes(frame),
                        np.asarray(frame.positions, dtype=float))
    dv = C.DescriptorValues()
    for key, value in values.items():
        setattr(dv, key, value)
    struc.descriptors = [dv]
    return struc



class DistributedSGP:
    """One rank's share of a sparse GP whose training frames are spread over an MPI communicator (see the module doc)."""

    def __init__(self, comm, spec: DescriptorSpec, zeta: int, hyps: Sequence[float], gradient: str = "exact",
                 per_atom: bool = True):
        C, _ = flare_modules()
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
        self._predicting: tuple[Sequence[Atoms], dict[int, Any]] | None = None
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
        self.solver.precompute_grams()  # collective: the Gram matrices and moments reach rank 0
        if self.rank == 0:
            def fun(x):
                ll, g = self.solver.solve_from_grams(np.asarray(x), grad=True)
                return -ll, -g  # -(-inf) = inf where K_uu is not positive definite

            try:
                res = minimize(fun, self.hyps, method="L-BFGS-B", jac=True,
                               bounds=hyperparameter_bounds(params.sigma_e_max, params.sigma_s_max),
                               options=lbfgsb_options(params))
            finally:
                self.comm.bcast(("stop", None), root=0)
            x, summary = res.x, {"nit": int(res.nit), "nfev": int(res.nfev), "success": bool(res.success)}
            self.timers["nfev"] = self.timers.get("nfev", 0) + int(res.nfev)
        else:
            self.comm.bcast(None, root=0)  # rank 0's search is over
            x, summary = None, {}
        self.solver.grams = self.solver.triangles = None
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

    def predict_frames(self, frames: Sequence[Atoms]) -> list[Prediction] | None:
        """Predictions of ``frames`` computed across ranks (structures built once); the list on rank 0, ``None`` elsewhere."""
        if self._predicting is None or self._predicting[0] is not frames:
            self._predicting = (frames, self.structures(frames))
        merged = self.mean_vectors(self._predicting[1])
        if self.rank != 0:
            return None
        return [prediction_from_efs(merged[i], self.spec.reference_energy(f)) for i, f in enumerate(frames)]

    def likelihood(self) -> float:
        """Re-solve at the current hyperparameters; the log-likelihood on rank 0; collective."""
        return self.set_hyps(self.hyps)
