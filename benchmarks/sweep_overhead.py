"""Sweep overhead on 2 CPUs: packing efficiency, per-trial overhead, Tune vs plain ``nequip-train``.

    python benchmarks/sweep_overhead.py [--quick] [--trials K] [--cpus 2]

Measured in one run, on the embedded mini-TM23 (Cu and Au, generated here):

1. A sweep of K short FLARE trials (one CPU each) on ``--cpus`` CPUs. Packing efficiency
   is the sweep's wall time (``Tuner.fit``) over the ideal, Σ(trial training compute) / CPUs;
   1.00 is perfect. Per-trial overhead is each trial's wall time in Tune (start to end,
   as the driver sees it) minus its training compute; the amortised figure,
   (CPUs · wall − Σ compute) / K, also counts the scheduling gaps between trials.
2. Two NequIP trials, one at a time, so that the second runs on the actor the first
   warmed (Tune's actor reuse). The same configuration (parameters, frames, seed) then
   runs under plain ``nequip-train`` in a fresh process; the ratio compares wall times.

Training compute is :func:`sweep.train.run_training`'s ``train_seconds`` (the trainer's
``train``); scoring, saving, MLflow logging, data and scheduling count as overhead.
Ratios are printed on the last lines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLARE_SPACE = """
elements: [Cu, Au]
task: full
search: {{algorithm: grid}}
studies:
  - model: flare
    resources: {{cpus: 1}}
    params:
      r_cut: {{grid: {r_cuts}}}
      n_max: 4
      l_max: 2
      sparse_per_frame: 4
      block_size: 10
      optimize_every: 20
      maxiter: 30
"""

# Four configurations that differ only in their seed, two at a time: the last two run on
# actors the first two warmed.
NEQUIP_SPACE = """
elements: [Cu]
task: full
search: {algorithm: grid}
studies:
  - model: nequip
    export: false
    resources: {cpus: 1, gpus: auto}
    params:
      l_max: 1
      num_layers: 2
      num_features: 8
      max_epochs: EPOCHS
      seed: {grid: [0, 1, 2, 3]}
"""


def _trial_table(summary) -> list[dict]:
    """Per trial: wall in Tune (driver's view), training compute, in-trial wall."""
    by_trial = {r.trial_id: r for r in summary.records}
    rows = []
    for trial_id, t in summary.timings.items():
        record = by_trial.get(trial_id)
        if record is None or "start" not in t or "end" not in t:
            continue
        rows.append({"trial": trial_id, "wall": t["end"] - t["start"], "compute": record.metrics["train_seconds"],
                     "in_trial": record.metrics.get("trial_wall_s", float("nan")), "params": record.params})
    return rows


def _nequip_train(record, work: Path, out: Path) -> float:
    """Run ``record``'s configuration under ``nequip-train``; returns the process's wall time."""
    from omegaconf import OmegaConf

    from sweep.trainers.nequip.config import NequIPParams, build_config

    checkpoint = Path(record.work_dir) / "checkpoint"
    run = json.loads((checkpoint / "run.json").read_text())
    params = NequIPParams(**run["params"])
    config = build_config(params, type_names=run["type_names"], train_file=str(checkpoint / "train.xyz"),
                          val_file=str(checkpoint / "val.xyz"), seed=run["seed"])
    (work / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    exe = Path(sys.executable).with_name("nequip-train")
    start = time.perf_counter()
    subprocess.run([str(exe), "-cp", str(work), "-cn", "config", f"hydra.run.dir={out}"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})  # the trial had one CPU
    return time.perf_counter() - start


def main() -> None:
    """Run both sweeps and the plain nequip-train run; print figures, ratios last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K = 8 short trials, 3 NequIP epochs (< 10 min)")
    parser.add_argument("--trials", type=int, default=None, help="K, the number of FLARE trials (even)")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--frames", type=int, default=None, help="frames per temperature of the generated data")
    args = parser.parse_args()
    k = args.trials or (8 if args.quick else 16)
    frames = args.frames or (20 if args.quick else 40)
    epochs = 3 if args.quick else 10

    import ray

    from sweep.data import ingest_archive
    from sweep.data.generate import generate_archive
    from sweep.data.generate.cache import default_cache_root
    from sweep.tune.runner import run_sweep

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        collection = generate_archive(tmp / "archive", ["Cu", "Au"], frames_per_temperature=frames, progress=False,
                                      cache_root=default_cache_root())
        ingest_archive(collection, tmp / "store", progress=False)
        r_cuts = [round(4.0 + 0.25 * i, 2) for i in range(k // 2)]
        (tmp / "flare.yaml").write_text(FLARE_SPACE.format(r_cuts=r_cuts))
        (tmp / "nequip.yaml").write_text(NEQUIP_SPACE.replace("EPOCHS", str(epochs)))
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlruns.db'}")
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            flare = run_sweep(tmp / "flare.yaml", str(tmp / "store"), runs_dir=tmp / "runs", live=False)
            nequip = run_sweep(tmp / "nequip.yaml", str(tmp / "store"), runs_dir=tmp / "runs", live=False)
        finally:
            ray.shutdown()

        rows = _trial_table(flare)
        assert len(rows) == k and not flare.errors, (len(rows), flare.errors)
        starts = [t["start"] for t in flare.timings.values()]
        ends = [t["end"] for t in flare.timings.values()]
        fit_wall = max(ends) - min(starts)
        compute = sum(r["compute"] for r in rows)
        ideal = compute / args.cpus
        overheads = [r["wall"] - r["compute"] for r in rows]
        median_trial = statistics.median(r["wall"] for r in rows)
        amortised = (args.cpus * fit_wall - compute) / k

        n_rows = _trial_table(nequip)
        assert len(n_rows) == 4 and not nequip.errors, nequip.errors
        records = {r.trial_id: r for r in nequip.records}
        pids = [records[r["trial"]].node["pid"] for r in n_rows]
        # a trial is warm when an earlier trial ran in the same worker process
        ordered = sorted(n_rows, key=lambda r: trial_start(nequip, r["trial"]))
        seen, cold, warm = set(), [], []
        for row in ordered:
            pid = records[row["trial"]].node["pid"]
            (warm if pid in seen else cold).append(row)
            seen.add(pid)
        reference = (warm or cold)[-1]
        plain = _nequip_train(records[reference["trial"]], tmp, tmp / "nequip-train-out")
        warm_timings = [records[r["trial"]].timings for r in warm] or [records[r["trial"]].timings for r in cold]
        flare_timings = [r.timings for r in flare.records if r.timings]

    print(f"FLARE sweep: K={k} trials on {args.cpus} CPUs, {frames} frames per temperature")
    print(f"  wall (first trial start to last trial end) {fit_wall:.1f} s; driver total {flare.wall_s:.1f} s")
    print(f"  training compute: sum {compute:.1f} s, per trial median "
          f"{statistics.median(r['compute'] for r in rows):.2f} s; trial wall median {median_trial:.2f} s")
    print(f"  per-trial overhead (wall - compute): median {statistics.median(overheads):.2f} s, "
          f"max {max(overheads):.2f} s; amortised incl. scheduling gaps {amortised:.2f} s")
    print("  inside a FLARE trial, medians: " + _phases(flare_timings))
    print(f"NequIP ({epochs} epochs, 1 CPU, 4 trials in {len(set(pids))} workers): "
          f"cold actor wall {_median(cold, 'wall')} s (compute {_median(cold, 'compute')} s), "
          f"warm actor wall {_median(warm, 'wall')} s (compute {_median(warm, 'compute')} s); "
          f"plain nequip-train {plain:.1f} s")
    print("  inside a warm NequIP trial, medians: " + _phases(warm_timings))
    print(f"median per-trial overhead: {statistics.median(overheads):.2f} s "
          f"({100 * statistics.median(overheads) / median_trial:.1f}% of a trial)")
    print(f"packing efficiency (sweep wall / (sum compute / {args.cpus})): {fit_wall / ideal:.2f}")
    print(f"NequIP under Tune ({'warm' if warm else 'cold'} actor) / plain nequip-train: "
          f"{reference['wall'] / plain:.2f}")


def _median(rows: list[dict], key: str) -> str:
    return f"{statistics.median(r[key] for r in rows):.1f}" if rows else "-"


def _phases(timings: list[dict]) -> str:
    keys = ("resolve_s", "setup_s", "run_training_s", "logging_s")
    return ", ".join(f"{k.removesuffix('_s')} {statistics.median(t.get(k, 0.0) for t in timings):.2f} s"
                     for k in keys) if timings else "-"


def trial_start(summary, trial_id: str) -> float:
    """When the driver saw ``trial_id`` start."""
    return summary.timings[trial_id]["start"]


if __name__ == "__main__":
    main()
