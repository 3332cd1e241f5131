"""Time to best: the exhaustive grid against the recommended strategy (Optuna TPE + ASHA), Cu and Ti.

    python benchmarks/time_to_best.py [--quick] [--seeds 3] [--cpus 2] [--frames F]

On the embedded mini-TM23 (generated here) for Cu (easy) and Ti (hard), per model:

1. The exhaustive grid of a small FLARE B2 space and of a small NequIP space (defined
   below), run through :func:`sweep.tune.runner.run_sweep`. Recorded: the total trial
   compute and the grid's best validation force MAE per metal.
2. The recommended strategy, ``search.algorithm: tpe`` with ``scheduler: asha``, over
   the same values, for ``--seeds`` search seeds (training seed fixed, as in the grid).

Trial compute is the ledger's ``train_seconds`` for a finished trial. A trial ASHA
stopped has no ``train_seconds``; it is charged its whole wall time in Tune (driver's
view, start to end), an upper bound that includes its overhead. Trials are ordered by
the time they finished; the figure is the strategy's compute up to and including the
trial that first brought its best within 2% of the grid's best, over the grid's total
compute. A seed that never gets there is flagged with all it spent, and counts as
infinitely late in the median. Ratios (median over seeds, per model and metal) are
printed on the last lines.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
from pathlib import Path

TOLERANCE = 0.02

FLARE_PARAMS = """
      descriptor: B2
      r_cut: {{grid: {r_cut}}}
      n_max: {{grid: {n_max}}}
      l_max: {{grid: [1, 2]}}
      zeta: {{grid: [1, 2]}}
      sparse_per_frame: 5
      block_size: {block}
      optimize_every: {block}
      maxiter: 30
"""

NEQUIP_PARAMS = """
      r_max: {{grid: [3.5, 4.5]}}
      l_max: {{grid: [0, 1]}}
      num_features: {{grid: [4, 8]}}
      learning_rate: {{grid: [0.02, 0.005]}}
      num_layers: 2
      batch_size: 4
      max_epochs: {epochs}
"""

SPACE = """
elements: [Cu, Ti]
task: grid
seed: 0
search: {search}
scheduler: {scheduler}
studies:
  - model: {model}
    export: false
    resources: {{cpus: 1}}
    params:{params}"""


def space_text(model: str, strategy: dict | None, quick: bool) -> str:
    """The benchmark space of ``model``: the grid (``strategy`` None) or TPE + ASHA with ``strategy``'s settings."""
    if model == "flare":
        params = FLARE_PARAMS.format(r_cut=[3.5, 4.5, 5.5], n_max=[3, 5] if quick else [3, 4, 6], block=4)
    else:
        params = NEQUIP_PARAMS.format(epochs=24 if quick else 60)
    if strategy is None:
        search, scheduler = "{algorithm: grid}", "{kind: none}"
    else:
        search = f"{{algorithm: tpe, num_samples: {strategy['samples']}, seed: {strategy['seed']}}}"
        scheduler = f"{{kind: asha, grace_period: {strategy['grace']}, reduction_factor: 3}}"
    return SPACE.format(search=search, scheduler=scheduler, model=model, params=params)


def trial_costs(summary) -> list[dict]:
    """Per ledger record: element, finish time, val force MAE, compute (s), epochs (NequIP, when known), status."""
    rows = []
    for r in summary.records:
        value = r.metrics.get("val_forces_mae")
        if value is None:
            continue
        if "train_seconds" in r.metrics:
            compute = r.metrics["train_seconds"]
        else:
            t = summary.timings.get(r.trial_id, {})
            compute = t["end"] - t["start"] if "start" in t and "end" in t else float("nan")
        epochs = r.info.get("epochs", r.metrics.get("step"))
        rows.append({"element": r.element, "finished": r.finished_at, "mae": value, "compute": compute,
                     "epochs": epochs, "status": r.status})
    return sorted(rows, key=lambda row: row["finished"])


def fraction_to_best(rows: list[dict], target: float, grid_compute: float) -> tuple[float, bool]:
    """Compute spent (over ``grid_compute``) until the running best is within TOLERANCE of ``target``."""
    spent, best = 0.0, float("inf")
    for row in rows:
        spent += row["compute"]
        best = min(best, row["mae"])
        if best <= target * (1 + TOLERANCE):
            return spent / grid_compute, True
    return spent / grid_compute, False


def main() -> None:
    """Run grids and strategies; print per model and metal figures, ratios last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grids (FLARE 24, NequIP 16 configs), < 10 min")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--frames", type=int, default=100, help="frames per temperature (embedded default: 100)")
    parser.add_argument("--models", default="flare,nequip")
    args = parser.parse_args()

    import ray

    from sweep.data import ingest_archive
    from sweep.data.generate import generate_archive
    from sweep.tune.runner import run_sweep
    from sweep.tune.space import parse_space

    models = args.models.split(",")
    # ASHA's first rung: one FLARE block (4 of ~18 frames) or six NequIP epochs (rungs 6, 18 of 24)
    strategy = {"flare": {"samples": 8 if args.quick else 16, "grace": 1},
                "nequip": {"samples": 6 if args.quick else 8, "grace": 6}}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        collection = generate_archive(tmp / "archive", ["Cu", "Ti"], frames_per_temperature=args.frames,
                                      progress=False)
        ingest_archive(collection, tmp / "store", progress=False)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlruns.db'}")
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            for model in models:
                runs = {}
                for label, strat in [("grid", None)] + [
                        (f"tpe{s}", {**strategy[model], "seed": s}) for s in range(args.seeds)]:
                    text = space_text(model, strat, args.quick)
                    path = tmp / f"{model}_{label}.yaml"
                    path.write_text(text)
                    summary = run_sweep(path, str(tmp / "store"), runs_dir=tmp / "runs", live=False)
                    if summary.errors:
                        raise SystemExit(f"{model} {label}: trial errors {summary.errors}")
                    runs[label] = (trial_costs(summary), summary.wall_s)
                grid_size = parse_space(space_text(model, None, args.quick), "grid").group_size(0)
                results[model] = {"runs": runs, "grid_size": grid_size, "samples": strategy[model]["samples"]}
        finally:
            ray.shutdown()

    ratios = []
    for model, res in results.items():
        grid_rows, grid_wall = res["runs"]["grid"]
        print(f"{model}: grid of {res['grid_size']} configs per metal (wall {grid_wall:.0f} s for both metals); "
              f"strategy TPE {res['samples']} samples + ASHA, {args.seeds} seeds")
        for element in ("Cu", "Ti"):
            g = [r for r in grid_rows if r["element"] == element]
            grid_compute = sum(r["compute"] for r in g)
            target = min(r["mae"] for r in g)
            epochs = sum(r["epochs"] or 0 for r in g) if model == "nequip" else None
            fractions, reached, spent = [], [], []
            for label, (rows, _) in res["runs"].items():
                if label == "grid":
                    continue
                s = [r for r in rows if r["element"] == element]
                f, ok = fraction_to_best(s, target, grid_compute)
                fractions.append(f)
                reached.append(ok)
                spent.append(sum(r["compute"] for r in s) / grid_compute)
            # a seed that never got within TOLERANCE counts as infinitely late, not as its spend
            median = statistics.median(f if ok else math.inf for f, ok in zip(fractions, reached))
            ratios.append((model, element, median, reached))
            print(f"  {element}: grid compute {grid_compute:.1f} CPU-s"
                  + (f", {epochs} epochs" if epochs is not None else "")
                  + f"; grid best val_forces_mae {target:.2f} meV/Å; strategy fractions per seed "
                  + ", ".join(f"{f:.3f}{'' if ok else ' (not reached)'}" for f, ok in zip(fractions, reached))
                  + f"; whole strategy spent {statistics.median(spent):.3f} of the grid (median)")
    print(f"median fraction of the grid's compute until the strategy's best is within {TOLERANCE:.0%} "
          f"of the grid's best (target <= 0.25):")
    for model, element, median, reached in ratios:
        shown = f"{median:.3f}" if math.isfinite(median) else "not reached (median seed)"
        print(f"  {model} {element}: {shown} (reached in {sum(reached)}/{len(reached)} seeds)")


if __name__ == "__main__":
    main()
