"""NequIP trials per hour on one GPU at 1, 2, 4 and 8 trials per device (``resources.gpus: 1/k``).

    python benchmarks/gpu_packing.py [--quick] [--trials T] [--packing 1,2,4,8] [--cpus C] [--fake-gpu]

For each packing k, one real sweep (:func:`sweep.tune.runner.run_sweep`) of ``--trials``
small NequIP configurations on the embedded mini-TM23 Cu (generated here) runs on a Ray
of one GPU with ``gpus: 1/k``, so Ray runs k trials at once on the device, each capped at
its share of the device's memory (:func:`sweep.tune.resources.share_gpu_memory`). Each
trial gets ``--cpus`` / k CPUs (at least one). The figure is trials per hour of sweep wall
time; the ratios to k = 1 are printed on the last lines.

Without a CUDA device the script says so and measures nothing; ``--fake-gpu`` runs the
same sweeps on the CPU behind a fake GPU resource, which checks the plumbing and nothing
about speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

SPACE = """
elements: [Cu]
task: full
seed: 0
search: {{algorithm: grid}}
studies:
  - model: nequip
    export: false
    resources: {{cpus: {cpus}, gpus: {gpus}}}
    params:
      r_max: {{grid: {r_max}}}
      num_layers: 2
      l_max: 1
      num_features: {{grid: [8, 16]}}
      batch_size: 4
      max_epochs: {epochs}
      patience: 1000
"""


def space_text(trials: int, packing: int, cpus: int, epochs: int) -> str:
    """A grid of ``trials`` NequIP configurations at ``1/packing`` of a GPU and ``cpus/packing`` CPUs each."""
    r_max = [round(3.5 + 0.25 * i, 2) for i in range(max(1, trials // 2))]
    return SPACE.format(cpus=max(1, cpus // packing), gpus=round(1.0 / packing, 6), r_max=r_max, epochs=epochs)


def trials_per_hour(trials: int, wall_s: float) -> float:
    """Throughput of a sweep of ``trials`` that took ``wall_s`` seconds."""
    return 3600.0 * trials / wall_s if wall_s > 0 else float("nan")


def main() -> None:
    """Run one sweep per packing; print throughput, ratios to one trial per GPU last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 trials of 5 epochs")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--packing", default="1,2,4,8")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--fake-gpu", action="store_true", help="no CUDA: a fake GPU resource, CPU training")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs = 8, 5

    import ray
    import torch

    if not torch.cuda.is_available() and not args.fake_gpu:
        print("no CUDA device: unmeasured (run on a GPU machine, or --fake-gpu to check the plumbing)")
        return
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "fake GPU (CPU training)"

    from sweep.data import ingest_archive
    from sweep.data.generate import generate_archive
    from sweep.data.generate.cache import default_cache_root
    from sweep.tune.runner import run_sweep

    packings = [int(k) for k in args.packing.split(",")]
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        collection = generate_archive(tmp / "archive", ["Cu"], frames_per_temperature=args.frames, progress=False,
                                      cache_root=default_cache_root())
        ingest_archive(collection, tmp / "store", progress=False)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlruns.db'}")
        ray.init(num_cpus=args.cpus, num_gpus=1, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
        try:
            for k in packings:
                path = tmp / f"pack{k}.yaml"
                path.write_text(space_text(args.trials, k, args.cpus, args.epochs))
                summary = run_sweep(path, str(tmp / "store"), runs_dir=tmp / "runs", live=False)
                if summary.errors:
                    raise SystemExit(f"packing {k}: trial errors {summary.errors}")
                rates[k] = trials_per_hour(len(summary.records), summary.wall_s)
                print(f"{k} per GPU: {len(summary.records)} trials in {summary.wall_s:.0f} s, "
                      f"{rates[k]:.0f} trials/h", flush=True)
        finally:
            ray.shutdown()
    print(f"device: {device}; {args.cpus} CPUs; {args.trials} NequIP trials of {args.epochs} epochs per packing")
    print("throughput ratio to one trial per GPU:")
    base = rates.get(1)
    for k, rate in rates.items():
        print(f"  {k} per GPU: {rate / base:.2f}" if base else f"  {k} per GPU: {rate:.0f} trials/h")


if __name__ == "__main__":
    sys.exit(main())
