"""FLARE across MPI ranks (mpi4py under the venv's mpiexec) equals the serial FLARE model."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla

from sweep.trainers import TrainContext, get_trainer
from sweep.trainers.flare import engines as flare_engines
from sweep.trainers.flare import parallel as flare_parallel
from sweep.trainers.flare import params as flare_params
from sweep.trainers.flare import sgp as flare_sgp
from sweep.trainers.flare import solver as flare_solver
from sweep.trainers.flare import structures as flare_structures
from tests.trainers.interrupt import train_until_interrupted

pytestmark = pytest.mark.skipif(flare_parallel.unavailable() is not None, reason=f"MPI unavailable: {flare_parallel.unavailable()}")

SMALL = dict(r_cut=4.5, n_max=6, l_max=2, sparse_per_frame=10, block_size=4)
NO_OPT = dict(optimize_every=0, optimize_final=False)


def _train(frames, val, path, num_cpus, reports=None, **overrides):
    trainer = get_trainer("flare")
    params = trainer.parse_params({**SMALL, **overrides})
    context = TrainContext(temperature_K=1000.0, num_cpus=num_cpus)
    reporter = (lambda step, m: reports.append((step, dict(m)))) if reports is not None else (lambda s, m: None)
    return trainer().train(params, frames, val, reporter, path, context), context


def _max_rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


def test_mpiexec_n2_run_equals_the_serial_run(emt_cu_frames, tmp_path):
    """Same frames, same hyperparameters: the same sparse set and predictions within 1e-6."""
    train, test = emt_cu_frames
    rep_serial, rep_mpi = [], []
    serial, _ = _train(train, test[:2], tmp_path / "serial", 1, rep_serial, **NO_OPT)
    parallel, context = _train(train, test[:2], tmp_path / "mpi", 2, rep_mpi, **NO_OPT)
    assert context.notes.get("flare_parallel_ranks") == 2 and "flare_parallel_fallback" not in context.notes
    assert parallel.info["parallel"]["ranks"] == 2
    assert parallel.model["sparse_indice"] == serial.model["sparse_indice"]
    assert [s for s, _ in rep_mpi] == [s for s, _ in rep_serial] == [4, 8, 12]
    for (_, a), (_, b) in zip(rep_mpi, rep_serial):
        assert a["val_forces_mae"] == pytest.approx(b["val_forces_mae"], rel=1e-6)
        assert a["n_sparse"] == b["n_sparse"]
    for a, b in zip(parallel.predict(test), serial.predict(test)):
        assert _max_rel(a.forces, b.forces) < 1e-6
        assert _max_rel(a.stress, b.stress) < 1e-6
        assert a.energy == pytest.approx(b.energy, rel=1e-6)
    assert parallel.info["n_d"] == serial.info["n_d"] == 63


def test_optimised_parallel_model_equals_flares_own_rebuild(emt_cu_frames, tmp_path):
    """After L-BFGS-B across ranks, FLARE rebuilt from the exported JSON predicts the same."""
    from flare.bffs.sgp.calculator import SGP_Calculator
    from flare.bffs.sgp.sparse_gp import SGP_Wrapper

    train, test = emt_cu_frames
    reports = []
    model, _ = _train(train, [], tmp_path / "mpi", 2, reports, optimize_every=8, maxiter=50)
    assert model.info["n_optimizations"] == 2
    assert all(v > 0 for v in model.info["hyperparameters"].values())
    assert np.isfinite(model.info["log_likelihood"])
    gp, kernels = SGP_Wrapper.from_file(str(model.export(tmp_path / "export")["sgp_json"]))
    calc = SGP_Calculator(gp)
    for atoms in test:
        a = atoms.copy()
        a.calc = calc
        assert _max_rel(model.predict([atoms])[0].forces, a.get_forces()) < 1e-6
    del kernels


@pytest.mark.parametrize("gradient", ["flare", "exact"])
def test_parallel_likelihood_and_gradient_follow_flare(gradient, emt_cu_frames):
    """The distributed log-likelihood and gradient are FLARE's (one rank, in process)."""
    from mpi4py import MPI

    frames = emt_cu_frames[0][:8]
    params = flare_params.FlareParams(**{**SMALL, "sparse_per_frame": 3})
    spec = flare_structures.DescriptorSpec.from_params(params, frames)
    hyps = np.array([2.0, 0.001, 0.05, 0.005])
    engine = flare_engines.DistributedSGP(MPI.COMM_SELF, spec, 2, hyps, gradient=gradient)
    engine.add_block(frames[:4], 0, params)
    engine.add_block(frames[4:], 4, params)
    live = flare_sgp.new_live_sgp(spec, hyps, 2)
    for frame, atoms in zip(frames, engine.sparse):
        flare_sgp.add_frame(live, frame, atoms, rel_e_noise=len(frame))  # σ_e per atom, as the engine
    sgp = live.sparse_gp
    theta = np.array([1.7, 0.002, 0.04, 0.006])
    with flare_sgp.quiet_stdout():
        sgp.set_hyperparameters(theta)
        sgp.precompute_KnK()
        flare_ll = sgp.compute_likelihood_gradient_stable(True)
    flare_grad = np.asarray(sgp.likelihood_gradient)
    engine._precompute_grams()
    ll, grad = engine._solve(theta, grad=True)
    assert ll == pytest.approx(flare_ll, rel=1e-8)
    assert grad[2:] == pytest.approx(flare_grad[2:], rel=1e-6)  # σ_f, σ_s
    # σ and σ_e carry K_uu's conditioning (cond ~1e8 here); "exact" differs from FLARE's σ term.
    assert grad[0] == pytest.approx(flare_grad[0], rel=1e-3)
    assert grad[1] == pytest.approx(flare_grad[1], rel=1e-2)
    np.testing.assert_allclose(engine.alpha, np.asarray(sgp.alpha).ravel(), rtol=1e-5,
                               atol=1e-7 * np.abs(engine.alpha).max())


@pytest.mark.parametrize("reference", ["mean", "none"])
def test_likelihood_from_the_gram_matrices_equals_the_qr_solve(reference, emt_cu_frames):
    """The hyperparameter search's O(n³) evaluation gives the QR solve's log-likelihood and gradient."""
    from mpi4py import MPI

    frames = emt_cu_frames[0][:8]
    params = flare_params.FlareParams(**{**SMALL, "sparse_per_frame": 3, "energy_reference": reference})
    spec = flare_structures.DescriptorSpec.from_params(params, frames)
    engine = flare_engines.DistributedSGP(MPI.COMM_SELF, spec, 2, np.array([2.0, 0.001, 0.05, 0.005]))
    engine.add_block(frames, 0, params)
    engine._precompute_grams()
    for theta in ([1.7, 0.002, 0.04, 0.006], [9.0, 0.05, 0.2, 0.003], [0.5, 0.0005, 0.01, 0.001]):
        ll_qr, g_qr = engine._solve(np.array(theta), grad=True)
        ll, g = engine.solver.solve_from_grams(np.array(theta), grad=True)
        assert ll == pytest.approx(ll_qr, rel=1e-7), theta
        assert g[2:] == pytest.approx(g_qr[2:], rel=1e-6), theta  # σ_f, σ_s
        # σ and σ_e carry K_uu's conditioning (cond ~1e8 here), as against FLARE's own gradient above
        assert g[0] == pytest.approx(g_qr[0], rel=1e-3), theta
        assert g[1] == pytest.approx(g_qr[1], rel=1e-2), theta
    assert engine.solver.solve_from_grams(np.array([2.0, 0.001, 0.05, 0.005]), grad=False)[1] is None


def test_tall_skinny_qr_merge_equals_one_dense_qr():
    rng = np.random.default_rng(1)
    n = 30
    blocks = [rng.normal(size=(m, n)) for m in (50, 12, 0)]
    rhs = [rng.normal(size=len(b)) for b in blocks]
    low = np.linalg.cholesky(np.cov(rng.normal(size=(n, 3 * n))))
    parts = []
    for a, b in zip(blocks, rhs):
        if len(b):
            c, r = sla.qr_multiply(a, b, mode="right")
        else:
            c, r = np.zeros(0), np.zeros((0, n))
        parts.append((r, c))
    r, c = flare_solver.merge_triangles(parts + [(low.T, np.zeros(n))], n)
    x = sla.solve_triangular(r, c)
    full_a = np.vstack(blocks + [low.T])
    full_b = np.concatenate(rhs + [np.zeros(n)])
    np.testing.assert_allclose(x, np.linalg.lstsq(full_a, full_b, rcond=None)[0], rtol=1e-10, atol=1e-12)
    _, r_dense = np.linalg.qr(full_a)
    np.testing.assert_allclose(np.abs(np.diag(r)), np.abs(np.diag(r_dense)), rtol=1e-10)


def test_interrupted_parallel_training_resumes(emt_cu_frames, tmp_path):
    train, test = emt_cu_frames
    train_until_interrupted("flare", {**SMALL, **NO_OPT}, train[:8], tmp_path / "ck", TrainContext(num_cpus=2))
    resumed, context = _train(train[:8], [], tmp_path / "ck", 2, **NO_OPT)
    assert context.notes["flare_resumed_at_frame"] == 4
    fresh, _ = _train(train[:8], [], tmp_path / "fresh", 1, **NO_OPT)
    assert resumed.model["sparse_indice"] == fresh.model["sparse_indice"]
    for a, b in zip(resumed.predict(test), fresh.predict(test)):
        assert _max_rel(a.forces, b.forces) < 1e-6
