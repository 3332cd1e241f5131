"""Time to best: the exhaustive grid against the recommended strategy (Optuna TPE + ASHA), per metal.

    python benchmarks/time_to_best.py [--quick] [--seeds 3] [--cpus 2] [--frames F] [--elements Cu,Ti,Au,Os]
                                      [--noise-seeds 5]

On the embedded mini-TM23 (generated here) for Cu, Ti, Au and Os (the paper's learning-curve
metals), per model:

1. The exhaustive grid of a small FLARE B2 space and of a small NequIP space (defined
   below), run through :func:`sweep.tune.runner.run_sweep`. Recorded: the total trial
   compute and the grid's best validation force MAE per metal.
2. The recommended strategy, ``search.algorithm: tpe`` with ``scheduler: asha``, over
   the same values, for ``--seeds`` search seeds (training seed fixed, as in the grid),
   twice: cold (its warm starts come only from its own metals, within the sweep), and
   warm, run after the grid as a later sweep under the same storage root, so that each
   metal first tries the grid best of its nearest other metals (never its own).

Trial compute is the ledger's ``train_seconds``: every report carries the training
seconds so far, so a trial ASHA stopped keeps what it spent up to its last report. A
record without them (a ledger written before reports carried them) is charged its whole
wall time in Tune (driver's view, start to end), an upper bound. Trials are ordered by
the time they finished; the figure is the strategy's compute up to and including the
trial that first brought its best within 2% of the grid's best, over the grid's total
compute. A seed that never gets there is flagged with all it spent, and counts as
infinitely late in the median. Ratios (median over seeds, per model and metal) are
printed on the last lines.

The floor of a cold search: per metal, how many of the grid's configurations lie within 2%
of its best, and the expected fraction a search in random order spends to reach one (what a
cold search's random startup draws pay on average). With one configuration within reach of
24, that is about half the grid, whatever the search does after its startup.

Rungs from the measured learning curves: for each metal, the grid winner's rank among the
grid's configurations at every report (from the grid's MLflow histories), and the smallest
ASHA grace period with which the winner survives every rung grace·η^k (it must rank in the
top 1/η of those reporting there). A strategy whose grace is below that may stop the winner.

The noise of the target: each metal's grid winner is trained again with other seeds
(``--noise-seeds``; the seed draws the 10% validation carve-out and the training's own
randomness, as a sweep's ``seed`` does), and its validation and test force MAE are
printed. When one configuration's validation MAE moves by more than 2% from seed to
seed, "within 2% of the grid's best" asks a search to find the configuration that drew
the lucky seed, not a better model.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import tempfile
from pathlib import Path

TOLERANCE = 0.02
#: The strategies measured: cold TPE + ASHA, and the same warm-started from the other metals' finished grids.
STRATEGY_NAMES = {"tpe": "TPE+ASHA", "warm": "TPE+ASHA warm from the other metals' grids"}

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
elements: [{elements}]
task: grid
seed: 0
search: {search}
scheduler: {scheduler}
studies:
  - model: {model}
    export: false
    resources: {{cpus: 1}}
    params:{params}"""


def space_text(model: str, strategy: dict | None, quick: bool, elements=("Cu", "Ti")) -> str:
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
    return SPACE.format(search=search, scheduler=scheduler, model=model, params=params, elements=", ".join(elements))


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


def random_order_fraction(rows: list[dict], target: float) -> tuple[int, float]:
    """(configurations within TOLERANCE of ``target``, the expected fraction a search in random order spends).

    In a uniformly random order each of the m configurations within reach comes first among
    them with equal chance, and each other one comes before all m with chance 1/(m+1), so the
    expected spend is Σ_other c/(m+1) + mean(c over the m), over the grid's total. This is
    what a search that has learnt nothing yet (a cold search's startup draws) pays on average.
    """
    hits = [r["compute"] for r in rows if r["mae"] <= target * (1 + TOLERANCE)]
    others = [r["compute"] for r in rows if r["mae"] > target * (1 + TOLERANCE)]
    spent = sum(others) / (len(hits) + 1) + statistics.mean(hits)
    return len(hits), spent / (sum(hits) + sum(others))


def winner_ranks(history, element: str) -> dict[int, tuple[int, int]]:
    """Per report step of the grid's learning curves: (rank of the eventual winner, configurations reporting).

    ``history`` is :meth:`sweep.results.Sweep.history` of the grid (one row per run and step).
    Rank 1 is the best value at that step. The winner is the configuration with the best last value.
    """
    rows = history[history["element"] == element]
    if rows.empty:
        return {}
    last = rows.sort_values("step").groupby("config_hash")["value"].last()
    winner = last.idxmin()
    out = {}
    for step, at in rows.groupby("step"):
        values = at.set_index("config_hash")["value"]
        if winner in values.index:
            out[int(step)] = (int((values < values[winner]).sum()) + 1, len(values))
    return out


def safe_grace(ranks: dict[int, tuple[int, int]], eta: float, steps_per_report: int = 1) -> int | None:
    """The smallest ASHA grace period (in reports) at which the winner passes every rung grace·η^k.

    A rung keeps the top 1/η of the configurations that reach it; the winner survives rung r
    when its rank at r is within that share of those reporting. None: no grace keeps it.
    """
    reports = sorted(ranks)
    for grace_index, grace in enumerate(reports):
        rung, ok = float(grace), True
        while rung <= reports[-1]:
            step = min(reports, key=lambda s: abs(s - rung))
            rank, n = ranks[step]
            if rank > max(1, math.floor(n / eta)):
                ok = False
                break
            rung *= eta
        if ok:
            return (grace_index + 1) * steps_per_report
    return None


def seed_spread(model: str, element: str, params: dict, store: Path, seeds: range, work: Path) -> list[tuple]:
    """(seed, validation force MAE, test force MAE) of ``params`` trained on the grid task under each seed."""
    from sweep.data import FrameStore, split_frames
    from sweep.train import run_training
    from sweep.trainers.base import TrainContext

    frames = FrameStore.open(store)
    out = []
    for seed in seeds:
        split = split_frames(frames, element, "grid", seed=seed)
        result = run_training(model, params, split, work / f"{model}-{element}-{seed}",
                              context=TrainContext(num_cpus=1, seed=seed), export=False)
        out.append((seed, result.metrics["val_forces_mae"], result.metrics["test_forces_mae"]))
    return out


def spread_text(values: list[float]) -> str:
    """``min–max`` and the range over the median, in percent."""
    median = statistics.median(values)
    return f"{min(values):.1f}–{max(values):.1f} (range {(max(values) - min(values)) / median:.0%} of the median)"


def main() -> None:
    """Run grids and strategies; print per model and metal figures, ratios last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grids (FLARE 24, NequIP 16 configs), < 10 min")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--frames", type=int, default=100, help="frames per temperature (embedded default: 100)")
    parser.add_argument("--models", default="flare,nequip")
    parser.add_argument("--elements", default="Cu,Ti,Au,Os")
    parser.add_argument("--no-warm", dest="warm", action="store_false",
                        help="skip the strategy warm-started from the other metals' finished grids")
    parser.add_argument("--noise-seeds", type=int, default=5,
                        help="seeds (0 included) to retrain each grid winner with; 0 or 1: skip")
    args = parser.parse_args()

    import ray

    from sweep.data import ingest_archive
    from sweep.data.generate import generate_archive
    from sweep.data.generate.cache import default_cache_root
    from sweep.tune.runner import run_sweep
    from sweep.tune.space import parse_space

    models = args.models.split(",")
    elements = args.elements.split(",")
    # ASHA's first rung: one FLARE block (4 of ~18 frames) or six NequIP epochs (rungs 6, 18 of 24)
    strategy = {"flare": {"samples": 8 if args.quick else 16, "grace": 1},
                "nequip": {"samples": 6 if args.quick else 8, "grace": 6}}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        collection = generate_archive(tmp / "archive", elements, frames_per_temperature=args.frames,
                                      progress=False, jobs=args.cpus, cache_root=default_cache_root())
        ingest_archive(collection, tmp / "store", progress=False)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlruns.db'}")
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            for model in models:
                runs = {}
                kinds = ("tpe", "warm") if args.warm else ("tpe",)
                for label, strat in [("grid", None)] + [
                        (f"{kind}{s}", {**strategy[model], "seed": s}) for kind in kinds for s in range(args.seeds)]:
                    text = space_text(model, strat, args.quick, elements)
                    path = tmp / f"{model}_{label}.yaml"
                    path.write_text(text)
                    # a runs folder per sweep: a cold strategy's warm starts come from its own metals only;
                    # a warm one's folder also holds the grid's ledger, as a sweep run after the grid would
                    runs_dir = tmp / "runs" / model / label
                    if label.startswith("warm"):
                        shutil.copytree(grid_ledger, runs_dir / f"{model}_grid" / "ledger")
                    summary = run_sweep(path, str(tmp / "store"), runs_dir=runs_dir, live=False)
                    if summary.errors:
                        raise SystemExit(f"{model} {label}: trial errors {summary.errors}")
                    runs[label] = (trial_costs(summary), summary.wall_s)
                    if label == "grid":
                        from sweep.results import open_sweep

                        grid_ledger = summary.sweep_dir / "ledger"
                        history = open_sweep(summary.sweep_dir).history("val_forces_mae")
                        results.setdefault(model, {})["ranks"] = {e: winner_ranks(history, e) for e in elements}
                        if args.noise_seeds > 1:
                            winners = {e: min((r for r in summary.records if r.element == e and r.status == "finished"),
                                              key=lambda r: r.metrics["val_forces_mae"]) for e in elements}
                            results[model]["noise"] = {
                                e: seed_spread(model, e, w.params, tmp / "store", range(args.noise_seeds),
                                               tmp / "noise") for e, w in winners.items()}
                grid_size = parse_space(space_text(model, None, args.quick), "grid").group_size(0)
                results[model].update({"runs": runs, "grid_size": grid_size, "samples": strategy[model]["samples"]})
        finally:
            ray.shutdown()

    ratios = []
    for model, res in results.items():
        grid_rows, grid_wall = res["runs"]["grid"]
        print(f"{model}: grid of {res['grid_size']} configs per metal (wall {grid_wall:.0f} s for all metals); "
              f"strategy TPE {res['samples']} samples + ASHA, {args.seeds} seeds")
        for element in elements:
            g = [r for r in grid_rows if r["element"] == element]
            grid_compute = sum(r["compute"] for r in g)
            target = min(r["mae"] for r in g)
            epochs = sum(r["epochs"] or 0 for r in g) if model == "nequip" else None
            ranks = res["ranks"].get(element, {})
            shown_ranks = ", ".join(f"{step}:{rank}/{n}" for step, (rank, n) in sorted(ranks.items()))
            reach, random_fraction = random_order_fraction(g, target)
            print(f"  {element}: {reach} of {len(g)} configurations within {TOLERANCE:.0%} of the grid's best; "
                  f"a random order spends {random_fraction:.3f} of the grid on average to reach one")
            print(f"  {element}: the grid winner's rank per report (step:rank/configs) {shown_ranks}; "
                  f"smallest ASHA grace (reports) that keeps it with η=3: {safe_grace(ranks, 3.0)}")
            noise = res.get("noise", {}).get(element)
            if noise:
                print(f"  {element}: the grid winner retrained with seeds 0–{len(noise) - 1}: val_forces_mae "
                      f"{spread_text([v for _, v, _ in noise])} meV/Å, test_forces_mae "
                      f"{spread_text([t for _, _, t in noise])} meV/Å")
            for kind in ("tpe", "warm"):
                fractions, reached, spent, found = [], [], [], []
                for label, (rows, _) in res["runs"].items():
                    if not label.startswith(kind):
                        continue
                    s = [r for r in rows if r["element"] == element]
                    f, ok = fraction_to_best(s, target, grid_compute)
                    fractions.append(f)
                    reached.append(ok)
                    spent.append(sum(r["compute"] for r in s) / grid_compute)
                    found.append(min(r["mae"] for r in s) / target)
                if not fractions:
                    continue
                # a seed that never got within TOLERANCE counts as infinitely late, not as its spend
                median = statistics.median(f if ok else math.inf for f, ok in zip(fractions, reached))
                ratios.append((model, element, kind, median, reached))
                print(f"  {element} {STRATEGY_NAMES[kind]}: grid compute {grid_compute:.1f} CPU-s"
                      + (f", {epochs} epochs" if epochs is not None else "")
                      + f"; grid best val_forces_mae {target:.2f} meV/Å; fractions per seed "
                      + ", ".join(f"{f:.3f}{'' if ok else ' (not reached)'}" for f, ok in zip(fractions, reached))
                      + f"; whole strategy spent {statistics.median(spent):.3f} of the grid (median); its best over "
                      + "the grid's best per seed " + ", ".join(f"{x:.3f}" for x in found))
    print(f"median fraction of the grid's compute until the strategy's best is within {TOLERANCE:.0%} "
          f"of the grid's best (target <= 0.10):")
    for model, element, kind, median, reached in ratios:
        shown = f"{median:.3f}" if math.isfinite(median) else "not reached (median seed)"
        print(f"  {model} {element} {STRATEGY_NAMES[kind]}: {shown} (reached in {sum(reached)}/{len(reached)} seeds)")


if __name__ == "__main__":
    main()
