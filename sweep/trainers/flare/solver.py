"""FLARE's SoR solve and log marginal likelihood over labels that may be spread across MPI ranks.

The serial trainer runs it on one process (:class:`SelfComm`); the MPI engine on an mpi4py
communicator. Each rank factors its own rows by LAPACK QR and rank 0 merges the triangles
(tall-skinny QR, :func:`merge_triangles`).
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np
import scipy.linalg as sla

from sweep.trainers.flare.structures import ENERGY, FORCE, STRESS


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
        #: Per kind, R of [W_x^½ K̂_fu | W_x^½ y_x] over all ranks (rank 0; see precompute_grams).
        self.triangles: np.ndarray | None = None
        #: Σ log w over every label, then the energy, force and stress label counts (rank 0).
        self.label_stats: np.ndarray | None = None

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
        """Σ_ranks K̂_uf W_x K̂_fu for x = energy, force, stress (FLARE's ``precompute_KnK``), and each kind's triangle.

        The triangle of a kind is R of the QR of its rows [W_x^½ K̂_fu | W_x^½ y_x] over all ranks
        (``triangles[x]``, n+1 square on rank 0): with the Gram matrices it is all that
        :meth:`solve_from_grams` needs, at any hyperparameters.
        """
        t0 = time.perf_counter()
        grams, triangles = [], []
        for x in (ENERGY, FORCE, STRESS):
            mask = self.kinds == x
            k, w, y = self.kuf[:, mask], self.weights[mask], self.y[mask]
            grams.append((k * w) @ k.T)
            sw = np.sqrt(w)
            rows = np.column_stack([k.T * sw[:, None], sw * y])
            triangles.append(sla.qr(rows, mode="r")[0] if len(y) else np.zeros((0, self.n + 1)))
        self.grams = self.comm.reduce(np.stack(grams), root=0)
        counts = [np.sum(self.kinds == x) for x in (ENERGY, FORCE, STRESS)]
        self.label_stats = self.comm.reduce(np.array([np.sum(np.log(self.weights)), *counts], dtype=float), root=0)
        parts = self.comm.gather(triangles, root=0)
        if self.rank == 0:
            self.triangles = np.stack([merge_triangles([(p[x], np.zeros(0)) for p in parts], self.n + 1)[0]
                                       for x in range(3)])
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
        return self._assemble(hyps, total, lower, r_top, alpha, grad)

    def solve_from_grams(self, hyps: Sequence[float], grad: bool) -> tuple[float, np.ndarray | None]:
        """(log-likelihood, gradient or None) at ``hyps`` from :meth:`precompute_grams` alone; rank 0 only.

        The same quantities as :meth:`solve`, whose QR runs over every label, from each kind's
        (n+1)-square triangle [R_x c_x; 0 d_x] instead: the stacked rows σ²R_x/σ_x and Lᵀ are
        merged by the same tall-skinny QR, and each kind's weighted residual is
        ‖c_x − σ²R_x α‖² + d_x². Each evaluation costs O(n³) in the n sparse points instead of
        O(N n²) in the N labels, so the hyperparameter search uses it; the model's α comes
        from :meth:`solve`.
        """
        if self.grams is None or self.triangles is None:
            raise RuntimeError("precompute_grams() first")
        t0 = time.perf_counter()
        self.timers["n_grams_solves"] = self.timers.get("n_grams_solves", 0) + 1
        n = self.n
        sig, se, sf, ss = (float(h) for h in hyps)
        scale = 1.0 / np.array([se, sf, ss])  # Λ^½ per kind, over the weights
        r_x, c_x, d_x = self.triangles[:, :n, :n], self.triangles[:, :n, n], self.triangles[:, n, n]
        try:
            lower = sla.cholesky(sig**2 * self.kuu + self.jitter * np.eye(n), lower=True)
        except np.linalg.LinAlgError:
            return -math.inf, (np.zeros(4) if grad else None)
        parts = [(sig**2 * a * r, a * c) for a, r, c in zip(scale, r_x, c_x)]
        r_top, c = merge_triangles(parts + [(lower.T, np.zeros(n))], n)
        alpha = sla.solve_triangular(r_top, c)
        fit = sig**2 * (r_x @ alpha)  # σ² R_x α per kind
        rx2 = np.sum((c_x - fit) ** 2, axis=1) + d_x**2  # Σ w_x res_x²
        inv2 = scale**2
        y_l_r = float(inv2 @ (np.sum(c_x * (c_x - fit), axis=1) + d_x**2))
        k_l_r = float(inv2 @ np.sum(fit * (c_x - fit), axis=1))
        log_weights, counts = self.label_stats[0], self.label_stats[1:]
        log_noise = log_weights + float(counts @ np.log(inv2))
        total = np.array([y_l_r, k_l_r, *rx2, log_noise, *counts])
        loglik, g, _ = self._assemble(hyps, total, lower, r_top, alpha, grad)
        self._tick("solve_from_grams", t0)
        return loglik, g

    def _assemble(self, hyps, total, lower, r_top, alpha, grad):
        """Log-likelihood and gradient from the label sums ``total``, chol(K_uu + εI) and R (RᵀR = A); rank 0."""
        n = lower.shape[0]
        kuu = self.kuu
        sig, se, sf, ss = (float(h) for h in hyps)
        y_l_r, k_l_r, re2, rf2, rs2, log_noise, n_e, n_f, n_s = total
        n_labels = n_e + n_f + n_s
        kuu_inv_det = 2 * np.sum(np.log(np.abs(np.diag(lower))))  # FLARE's names for log det terms
        sigma_inv_det = -2 * np.sum(np.log(np.abs(np.diag(r_top))))  # −log det A
        complexity = 0.5 * (log_noise + kuu_inv_det + sigma_inv_det)
        loglik = float(complexity - 0.5 * y_l_r - 0.5 * n_labels * math.log(2 * math.pi))
        if not grad:
            return loglik, None, alpha
        t0 = time.perf_counter()
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


