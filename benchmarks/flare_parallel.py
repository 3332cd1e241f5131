"""Speed-up of FLARE training on 2 MPI ranks over 1 rank (target: >= 1.6x on a 2-core machine).

    .venv/bin/python benchmarks/flare_parallel.py [--quick] [--repeats N]

Both rank counts do exactly the same work, so the ratio is a ratio of times, not of luck:
the training loop of ``sweep.trainers.flare.engines.DistributedSGP`` over EMT Cu frames
(107 atoms, B2 n_max 8 l_max 3, ζ 2, 20 sparse environments per frame): descriptors,
kernel blocks, uncertainty selection, one solve and a validation prediction per block;
then a fixed number of likelihood-and-gradient evaluations, which is what each L-BFGS-B
step costs. (A real optimisation takes a data-dependent number of evaluations, which
differs between runs by rounding, so a wall time of two full trainings would compare
different amounts of work.) Each run is a fresh ``mpiexec -n R`` with one OpenMP/BLAS thread
per rank. For context it also times one rank with two threads (FLARE's OpenMP and
OpenBLAS) and FLARE's own serial SparseGP doing the same work in one thread.

Runs alternate between configurations and the best of ``--repeats`` is kept, since other
jobs on a shared machine only ever make a run slower. The last line is the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUICK = dict(n_train=24, n_val=6, n_evals=10, size=3)
FULL = dict(n_train=60, n_val=10, n_evals=20, size=3)
PARAMS = dict(r_cut=5.0, n_max=8, l_max=3, zeta=2, sparse_per_frame=20, block_size=6, max_sparse=5000)


def make_frames(n: int, size: int, seed: int = 3):
    """Rattled, strained fcc Cu supercells with one vacancy, labelled by ASE's EMT."""
    from ase.build import bulk
    from ase.calculators.emt import EMT

    from sweep.data.frames import relabel

    rng = np.random.default_rng(seed)
    base = bulk("Cu", "fcc", cubic=True).repeat((size, size, size))
    del base[0]
    frames = []
    for _ in range(n):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=0.15, size=atoms.positions.shape)
        atoms.set_cell(atoms.cell.array @ (np.eye(3) + rng.normal(scale=0.01, size=(3, 3))), scale_atoms=True)
        frames.append(relabel(atoms, EMT()))
    return frames


def thetas(n: int) -> list[np.ndarray]:
    """Fixed hyperparameter points for the likelihood evaluations (the cost does not depend on them)."""
    base = np.array([2.0, 0.001, 0.05, 0.005])
    return [base * (1 + 0.03 * k) for k in range(n)]


def engine_work(comm, cfg: dict) -> dict:
    """The fixed work on every rank of ``comm``; timings (seconds) on rank 0."""
    from sweep.trainers.flare import engines as flare_engines
    from sweep.trainers.flare import params as flare_params
    from sweep.trainers.flare import structures as flare_structures

    frames = make_frames(cfg["n_train"] + cfg["n_val"], cfg["size"])
    train, val = frames[: cfg["n_train"]], frames[cfg["n_train"]:]
    params = flare_params.FlareParams(**PARAMS)
    spec = flare_structures.DescriptorSpec.from_params(params, train)
    comm.Barrier()
    t0 = time.perf_counter()
    engine = flare_engines.DistributedSGP(comm, spec, params.zeta, [params.sigma, params.sigma_e, params.sigma_f, params.sigma_s])
    val_strucs = engine.structures(val)
    for start in range(0, len(train), params.block_size):
        engine.add_block(train[start:start + params.block_size], start, params)
        engine.set_hyps(engine.hyps)
        engine.mean_vectors(val_strucs)
    comm.Barrier()
    t1 = time.perf_counter()
    engine._precompute_grams()
    for theta in thetas(cfg["n_evals"]):
        engine._solve(theta, grad=True)
    comm.Barrier()
    t2 = time.perf_counter()
    return {"blocks_s": t1 - t0, "evals_s": t2 - t1, "total_s": t2 - t0, "n_sparse": engine.n_sparse,
            "sparse": engine.sparse, "timers": engine.timers}


def flare_serial_work(cfg: dict) -> dict:
    """The same work with FLARE's own SparseGP in this process (its QR and likelihood gradient)."""
    from sweep.trainers.flare import loop as flare_loop
    from sweep.trainers.flare import params as flare_params
    from sweep.trainers.flare import sgp as flare_sgp
    from sweep.trainers.flare import structures as flare_structures

    frames = make_frames(cfg["n_train"] + cfg["n_val"], cfg["size"])
    train, val = frames[: cfg["n_train"]], frames[cfg["n_train"]:]
    params = flare_params.FlareParams(**PARAMS)
    spec = flare_structures.DescriptorSpec.from_params(params, train)
    hyps = [params.sigma, params.sigma_e, params.sigma_f, params.sigma_s]
    with flare_sgp.thread_limits(1):
        t0 = time.perf_counter()
        live = flare_sgp.new_live_sgp(spec, hyps, params.zeta)
        sgp = live.sparse_gp
        kernel = flare_sgp.flare_kernel(params.zeta, hyps[0])
        val_strucs = [spec.structure(f, live.calcs[0]) for f in val]
        for start in range(0, len(train), params.block_size):
            block = train[start:start + params.block_size]
            strucs = [flare_sgp.add_frame(live, f, None, rel_e_noise=len(f)) for f in block]
            chosen, n0 = [], sgp.n_sparse
            for struc, f in zip(strucs, block):
                chosen.append(flare_sgp.select_uncertain(sgp, struc, flare_loop.n_sparse_to_add(params, n0 + sum(map(len, chosen)),
                                                                                    len(f))))
            for struc, atoms in zip(strucs, chosen):
                sgp.add_specific_environments(struc, atoms)
            sgp.update_matrices_QR()
            alpha, sparse = np.asarray(sgp.alpha).ravel(), sgp.sparse_descriptors[0]
            for s in val_strucs:
                flare_sgp.mean_efs(kernel, sparse, hyps[0], alpha, s)
        t1 = time.perf_counter()
        with flare_sgp.quiet_stdout():
            sgp.precompute_KnK()
            for theta in thetas(cfg["n_evals"]):
                sgp.set_hyperparameters(theta)
                sgp.compute_likelihood_gradient_stable(True)
        t2 = time.perf_counter()
    return {"blocks_s": t1 - t0, "evals_s": t2 - t1, "total_s": t2 - t0, "n_sparse": int(sgp.n_sparse)}


def run_engine(ranks: int, threads: int, cfg: dict) -> dict:
    """One fresh ``mpiexec -n ranks`` run of :func:`engine_work`."""
    from sweep.trainers.flare.parallel import mpiexec_path

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cmd = [str(mpiexec_path()), "-n", str(ranks), sys.executable, str(Path(__file__).resolve()),
           "--worker", json.dumps(cfg)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("@result ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"benchmark worker failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][len("@result "):])


def worker(cfg_json: str) -> None:
    """Entry point of each MPI rank."""
    from mpi4py import MPI

    from sweep.trainers.flare.sgp import quiet_stdout

    comm = MPI.COMM_WORLD
    with quiet_stdout():
        result = engine_work(comm, json.loads(cfg_json))
    if comm.Get_rank() == 0:
        print("@result " + json.dumps(result, default=float), flush=True)


def main() -> None:
    """Run the comparison and print the table; the last line is the 2-rank/1-rank ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller problem, one repeat (< 10 min)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker)
        return
    from sweep.trainers.flare.parallel import unavailable

    why = unavailable()
    if why:
        raise SystemExit(f"cannot benchmark: {why}")
    cfg = QUICK if args.quick else FULL
    repeats = args.repeats or (1 if args.quick else 3)
    configs = {"1 rank x 1 thread": (1, 1), "2 ranks x 1 thread": (2, 1), "1 rank x 2 threads": (1, 2)}
    results: dict[str, list[dict]] = {name: [] for name in [*configs, "FLARE serial, 1 thread"]}
    print(f"FLARE parallel benchmark: {cfg['n_train']} training + {cfg['n_val']} validation frames of "
          f"{4 * cfg['size'] ** 3 - 1} atoms, {PARAMS}, {cfg['n_evals']} likelihood evaluations, "
          f"best of {repeats}; machine load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    for rep in range(repeats):
        for name, (ranks, threads) in configs.items():
            results[name].append(run_engine(ranks, threads, cfg))
            r = results[name][-1]
            print(f"  run {rep + 1}: {name:22s} total {r['total_s']:7.1f} s "
                  f"(blocks {r['blocks_s']:6.1f} s, evaluations {r['evals_s']:6.1f} s)", flush=True)
        results["FLARE serial, 1 thread"].append(flare_serial_work(cfg))
        r = results["FLARE serial, 1 thread"][-1]
        print(f"  run {rep + 1}: {'FLARE serial, 1 thread':22s} total {r['total_s']:7.1f} s "
              f"(blocks {r['blocks_s']:6.1f} s, evaluations {r['evals_s']:6.1f} s)", flush=True)
    one, two = results["1 rank x 1 thread"], results["2 ranks x 1 thread"]
    if any(a["sparse"] != b["sparse"] for a in one for b in two):
        raise SystemExit("1-rank and 2-rank runs chose different sparse sets: not the same work")
    best = {name: min(r["total_s"] for r in runs) for name, runs in results.items()}
    print("\nbest total time per configuration:")
    for name, t in best.items():
        print(f"  {name:24s} {t:8.1f} s   speed-up over 1 rank x 1 thread: {best['1 rank x 1 thread'] / t:5.2f}x")
    phase = {k: min(r[k] for r in two) for k in ("blocks_s", "evals_s")}
    base = {k: min(r[k] for r in one) for k in ("blocks_s", "evals_s")}
    print(f"  per phase, 2 ranks over 1: blocks {base['blocks_s'] / phase['blocks_s']:.2f}x, "
          f"likelihood evaluations {base['evals_s'] / phase['evals_s']:.2f}x")
    ratios = [a["total_s"] / b["total_s"] for a, b in zip(one, two)]
    print(f"  per-repeat ratios: {', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})")
    ratio = best["1 rank x 1 thread"] / best["2 ranks x 1 thread"]
    print(f"speedup 2 ranks / 1 rank: {ratio:.2f}x (target >= 1.6x)")


if __name__ == "__main__":
    main()
