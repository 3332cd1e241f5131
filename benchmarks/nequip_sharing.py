"""NequIP neighbour lists shared across trials and epochs vs recomputed: a grid through run_sweep, A/B.

    python benchmarks/nequip_sharing.py [--quick] [--cpus 2] [--frames F] [--epochs E] [--repeats R]

On the embedded mini-TM23 Cu (generated here, ``grid`` task: about 18 training and 2
validation frames of 31 atoms):

1. Neighbour-list share of an epoch: one in-process NequIP training (2 layers, r_max 4.5 Å)
   with sharing off and one torch thread, nequip's ``compute_neighborlist_`` wrapped in a timer. An epoch is
   the time between two of the trainer's epoch reports (train + validation + checkpoint);
   the first epoch is left out (warm-up).
2. The same small grid (2 r_max × 2 learning rates × 2 widths) through
   :func:`sweep.tune.runner.run_sweep`, each run on its own local Ray instance with
   ``--cpus`` CPUs and one CPU per trial, with ``TM23_SHARE_WORK=0`` (every trial reads
   its files at every set-up and builds every neighbour list every epoch) and with
   ``TM23_SHARE_WORK=1`` (a worker reuses them across epochs and across the trials it
   runs, :mod:`sweep.trainers.nequip.shared`); ``--repeats`` runs per arm, alternating.
   The workers inherit the variable from this process.

Printed: each arm's wall time, summed trial compute (ledger ``train_seconds``) and summed
NequIP training CPU time (``info.train_cpu_seconds``, less disturbed than wall time by
other load on a shared machine), the read and neighbour-list time a shared run saved (its
trainers' own count), and the largest |difference| of every ledger metric between the
arms (same seed: expected 0).
The last lines are the ratios shared / not shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

SPACE = """
description: NequIP grid for the neighbour-list sharing A/B.
elements: [Cu]
task: grid
seed: 0
search: {{algorithm: grid}}
studies:
  - model: nequip
    export: false
    resources: {{cpus: 1}}
    params:
      r_max: {{grid: [4.0, 5.0]}}
      learning_rate: {{grid: [0.01, 0.005]}}
      num_features: {{grid: [4, 8]}}
      num_layers: 2
      l_max: 1
      batch_size: 4
      max_epochs: {epochs}
"""


def space_text(epochs: int) -> str:
    """The benchmark's search space (8 NequIP configurations on Cu) with ``epochs`` per trial."""
    return SPACE.format(epochs=epochs)


def is_timing(metric: str) -> bool:
    """Ledger metrics that are timings (``train_seconds``, ``trial_wall_s``), not results."""
    return "seconds" in metric or metric.endswith("_s")


def nl_epoch_share(train, val, epochs: int, work: Path, r_max: float = 4.5) -> dict:
    """One unshared training; neighbour-list seconds and wall seconds per epoch (after the first)."""
    import nequip.data.transforms.neighborlist as nl_module
    import torch

    from sweep.trainers.base import TrainContext, get_trainer

    spent = {"nl": 0.0}
    original = nl_module.compute_neighborlist_

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spent["nl"] += time.perf_counter() - start

    marks: list[tuple[float, float]] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a trial with one CPU (Ray sets OMP_NUM_THREADS=1)
    nl_module.compute_neighborlist_ = timed
    try:
        trainer = get_trainer("nequip")
        params = trainer.parse_params({"r_max": r_max, "num_layers": 2, "l_max": 1, "num_features": 8,
                                       "batch_size": 4, "max_epochs": epochs})
        start = time.perf_counter()
        model = trainer().train(params, train, val, lambda step, metrics: marks.append(
            (time.perf_counter(), spent["nl"])), work, TrainContext(device="cpu", seed=0, share_work=False))
        total = time.perf_counter() - start
    finally:
        nl_module.compute_neighborlist_ = original
        torch.set_num_threads(threads)
    walls = [b[0] - a[0] for a, b in zip(marks, marks[1:])]
    nls = [b[1] - a[1] for a, b in zip(marks, marks[1:])]
    return {"epoch_wall": statistics.median(walls), "epoch_nl": statistics.median(nls),
            "share": statistics.median(n / w for n, w in zip(nls, walls)), "training_s": total,
            "training_nl_s": spent["nl"], "n_train": len(train), "n_val": len(val), "epochs": model.info["epochs"]}


def run_grid(space: Path, store: Path, runs: Path, share: bool, cpus: int):
    """One run_sweep of ``space`` with ``TM23_SHARE_WORK`` set for this process and its Ray workers."""
    from sweep.tune.runner import run_sweep

    os.environ["TM23_SHARE_WORK"] = "1" if share else "0"
    summary = run_sweep(space, str(store), runs_dir=runs, num_cpus=cpus, live=False)
    if summary.errors or not summary.complete:
        raise SystemExit(f"share={share}: trial errors {summary.errors} ({summary.unfinished} unfinished)")
    return summary


def totals(summaries) -> dict[str, float]:
    """Over repeated runs of one arm: median wall, trial compute (per configuration the least
    ``train_seconds``, and the least NequIP training CPU time, over the repeats, summed) and the
    mean cache counters per run."""
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    counters: dict[str, float] = {}
    for summary in summaries:
        for record in summary.records:
            seconds = record.metrics.get("train_seconds", float("nan"))
            best[record.config_hash] = min(best.get(record.config_hash, seconds), seconds)
            cpu = record.info.get("train_cpu_seconds", float("nan"))
            best_cpu[record.config_hash] = min(best_cpu.get(record.config_hash, cpu), cpu)
            for key, value in record.info.get("data_cache", {}).items():
                counters[key] = counters.get(key, 0) + value / len(summaries)
    return {"wall_s": statistics.median(s.wall_s for s in summaries), "walls": [s.wall_s for s in summaries],
            "train_seconds": sum(best.values()), "cpu_seconds": sum(best_cpu.values()), "trials": len(best),
            **counters}


def metric_differences(a, b) -> dict[str, tuple[float, float]]:
    """Per ledger metric: max |a - b| and max |a - b| / |b| over two runs' records (matched by config hash)."""
    by_hash = {r.config_hash: r for r in b}
    if set(by_hash) != {r.config_hash for r in a}:
        raise SystemExit("the two runs finished different configurations")
    out: dict[str, tuple[float, float]] = {}
    for record in a:
        other = by_hash[record.config_hash].metrics
        for key, value in record.metrics.items():
            if is_timing(key) or value != value:  # NaN: no metric (e.g. no stress labels)
                continue
            diff = abs(value - other[key])
            rel = diff / abs(other[key]) if other[key] else diff
            worst = out.get(key, (0.0, 0.0))
            out[key] = (max(worst[0], diff), max(worst[1], rel))
    return out


def main() -> None:
    """Measure the neighbour-list share of an epoch, then run the grid unshared and shared."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 epochs per trial, < 10 min on 2 CPUs")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--frames", type=int, default=100, help="frames per temperature (embedded default: 100)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial (default 3 quick, 10 full)")
    parser.add_argument("--repeats", type=int, default=None, help="runs per arm (default 2 quick, 3 full)")
    args = parser.parse_args()
    epochs = args.epochs or (3 if args.quick else 10)
    repeats = args.repeats or (2 if args.quick else 3)

    from sweep.data import FrameStore, ingest_archive
    from sweep.data.generate import generate_archive
    from sweep.data.generate.cache import default_cache_root

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        collection = generate_archive(tmp / "archive", ["Cu"], frames_per_temperature=args.frames, progress=False,
                                      cache_root=default_cache_root())
        ingest_archive(collection, tmp / "store", progress=False)
        frames = FrameStore.open(tmp / "store").frames("Cu", "melt", "train")[:22]
        epoch = nl_epoch_share(frames[:20], frames[20:], max(4, epochs), tmp / "epoch")

        space = tmp / "nequip_sharing.yaml"
        space.write_text(space_text(epochs))
        runs: dict[bool, list] = {False: [], True: []}
        before = os.environ.get("TM23_SHARE_WORK")
        try:
            for repeat in range(repeats):
                # alternate the order, so that neither arm always runs on a warmer machine
                for share in ((False, True) if repeat % 2 == 0 else (True, False)):
                    runs[share].append(run_grid(space, tmp / "store", tmp / f"runs_{int(share)}_{repeat}",
                                                share=share, cpus=args.cpus))
        finally:
            if before is None:
                os.environ.pop("TM23_SHARE_WORK", None)
            else:
                os.environ["TM23_SHARE_WORK"] = before
        differences: dict[str, tuple[float, float]] = {}
        for shared_run in runs[True]:
            for plain_run in runs[False]:
                for key, (diff, rel) in metric_differences(shared_run.records, plain_run.records).items():
                    worst = differences.get(key, (0.0, 0.0))
                    differences[key] = (max(worst[0], diff), max(worst[1], rel))

    p, s = totals(runs[False]), totals(runs[True])
    print(f"neighbour lists in one epoch ({epoch['n_train']} train + {epoch['n_val']} val frames of 31 atoms, "
          f"r_max 4.5 Å, 2 layers, median of epochs 2-{epoch['epochs']}): {1e3 * epoch['epoch_nl']:.1f} ms "
          f"of {1e3 * epoch['epoch_wall']:.0f} ms = {100 * epoch['share']:.1f}%; whole training "
          f"{epoch['training_nl_s']:.3f} of {epoch['training_s']:.2f} s")
    print(f"grid: {p['trials']} trials × {epochs} epochs, {args.cpus} CPUs, 1 CPU per trial, {repeats} runs "
          "per arm (alternating); wall: median run; trial compute: least per configuration over the runs, summed")
    for label, t in (("not shared", p), ("shared", s)):
        print(f"  {label:>10}: wall {t['wall_s']:.1f} s ({', '.join(f'{w:.1f}' for w in t['walls'])}), trial "
              f"compute {t['train_seconds']:.1f} s, training CPU {t['cpu_seconds']:.1f} s; per run: datasets "
              f"built {t.get('datasets_built', 0):g} reused {t.get('datasets_reused', 0):g}, "
              f"frames transformed {t.get('frames_computed', 0):g} reused {t.get('frames_reused', 0):g}")
    saved = s.get("read_seconds_saved", 0.0) + s.get("transform_seconds_saved", 0.0)
    # the trainers' own count: each reuse is credited with what its first computation took
    print(f"  a shared run saved {s.get('transform_seconds_saved', 0.0):.2f} s of transforms (neighbour lists) "
          f"and {s.get('read_seconds_saved', 0.0):.2f} s of file reads = {saved:.2f} s, "
          f"{100 * saved / p['train_seconds']:.1f}% of the unshared trial compute")
    print(f"  (a plain run recomputes about {s.get('frames_reused', 0) + s.get('frames_computed', 0):g} frame "
          f"transforms and {s.get('datasets_built', 0) + s.get('datasets_reused', 0):g} file reads)")
    print("max |difference| per ledger metric, shared vs not shared (absolute, relative):")
    for key, (diff, rel) in sorted(differences.items()):
        print(f"  {key}: {diff:.3g} ({rel:.3g})")
    worst = max((rel for _, rel in differences.values()), default=0.0)
    print(f"largest relative metric difference: {worst:.3g}")
    print(f"ratio shared/not shared, grid wall time: {s['wall_s'] / p['wall_s']:.3f}")
    print(f"ratio shared/not shared, trial compute: {s['train_seconds'] / p['train_seconds']:.3f}")
    print(f"ratio shared/not shared, training CPU time: {s['cpu_seconds'] / p['cpu_seconds']:.3f}")


if __name__ == "__main__":
    main()
