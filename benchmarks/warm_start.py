"""Warm starts across metals: compute to reach each target metal's grid best, with and without its neighbours.

    python benchmarks/warm_start.py [--quick] [--seeds 5] [--cpus 2] [--frames F] [--samples S] [--targets all]

1. Measure. The FLARE B2 grid of ``benchmarks/time_to_best.py`` (24 configurations per
   metal with ``--quick``) runs as one real sweep (:func:`sweep.tune.runner.run_sweep`) on
   the embedded mini-TM23 (generated here, PBE-level labels) of the target metals Cu, Au,
   Ti and Os and their neighbours Ag, Ni, Pt, Zr, Hf and Ru. Recorded per metal and
   configuration: the validation force MAE and the trial's ``train_seconds``.
2. Replay. For each target, TPE over the same grid (``search.algorithm: tpe``, the
   sweep's own :class:`sweep.tune.search.GroupedSearcher` and Optuna) is replayed on the
   measured table, one trial at a time, ``--seeds`` search seeds, twice: cold, and warm
   from the finished grids of the other metals (:mod:`sweep.tune.warm_start`, as a sweep
   run after those would see them; the target's own results are left out). The training
   seed is fixed, so a configuration's outcome is the one the grid measured: a tabular
   benchmark, which lets many seeds share one measurement.

The figure per seed is the compute (sum of the measured ``train_seconds`` of the trials
replayed so far) until the running best is within 2% of the target's grid best, over the
target's whole grid compute. A seed that never gets there counts as infinitely late in
the median. ``--targets`` picks the targets among the ten measured metals (``all``: each of
them, the other nine as its neighbours). The ratio per target is median(warm) /
median(cold); ratios are printed on the last lines, with their median over targets
(target: at most 0.5).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from time_to_best import TOLERANCE  # noqa: E402  (within 2% of the grid's best)

TARGETS = ("Cu", "Au", "Ti", "Os")
NEIGHBOURS = ("Ag", "Ni", "Pt", "Zr", "Hf", "Ru")


def tpe_space(grid_text: str, target: str, seed: int, samples: int, warm: bool) -> str:
    """The grid space turned into a one-metal TPE search of ``samples`` trials."""
    import re

    text = re.sub(r"elements: \[.*\]", f"elements: [{target}]", grid_text, count=1)
    return text.replace("search: {algorithm: grid}",
                        f"search: {{algorithm: tpe, num_samples: {samples}, seed: {seed}, "
                        f"warm_start: {str(warm).lower()}}}")


def grid_table(records, loaded) -> dict[str, dict[str, tuple[float, float]]]:
    """Per element: the searched point (as a key) -> (val force MAE, train seconds), from ledger records."""
    from sweep.tune.search import point_key
    from sweep.tune.warm_start import in_space

    searched = loaded.searched(0)
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for r in records:
        point = in_space(r.params, searched)
        table.setdefault(r.element, {})[point_key(point)] = (r.metrics["val_forces_mae"], r.metrics["train_seconds"])
    return table


def replay(grid_text: str, table: dict, target: str, seed: int, samples: int, warm_from: dict | None) -> list:
    """Replay TPE on the measured ``table`` for ``target``; returns [(mae, compute)] in trial order.

    ``warm_from`` maps (model, task, element) to the finished neighbours' results, [(value, params)]
    (None: a cold search).
    """
    from sweep.tune.search import SPEC_KEY, GroupedSearcher, point_key
    from sweep.tune.space import parse_space
    from sweep.tune.warm_start import warm_starts_for

    loaded = parse_space(tpe_space(grid_text, target, seed, samples, warm_from is not None), "replay.yaml")
    warm = warm_starts_for(loaded, None, "replay")
    if warm is not None:
        warm.earlier = dict(warm_from)
    searcher = GroupedSearcher(loaded, warm)
    out = []
    for i in range(samples):
        config = searcher.suggest(f"t{i}")
        if not isinstance(config, dict):
            break
        mae, compute = table[target][point_key(config[SPEC_KEY]["params"])]
        searcher.on_trial_complete(f"t{i}", {loaded.space.metric: mae})
        out.append((mae, compute))
    return out


def fraction_to_best(rows: list, target_mae: float, grid_compute: float) -> tuple[float, bool]:
    """Compute until the running best is within 2% of ``target_mae``, over ``grid_compute`` (time_to_best's rule)."""
    from time_to_best import fraction_to_best as ttb_fraction

    return ttb_fraction([{"mae": mae, "compute": compute} for mae, compute in rows], target_mae, grid_compute)


def compare(grid_text: str, table: dict, targets, seeds: int, samples: int) -> list[dict]:
    """Cold and warm replays per target and seed; the figures the script prints."""
    bests = {e: min(rows.values()) for e, rows in table.items()}
    out = []
    for target in targets:
        grid_compute = sum(c for _, c in table[target].values())
        warm_from = {("flare", "grid", element): [(mae, json.loads(key)) for key, (mae, _) in rows.items()]
                     for element, rows in table.items() if element != target}
        row = {"target": target, "grid_best": bests[target][0], "grid_compute": grid_compute, "cold": [], "warm": []}
        for seed in range(seeds):
            row["cold"].append(fraction_to_best(replay(grid_text, table, target, seed, samples, None),
                                                bests[target][0], grid_compute))
            row["warm"].append(fraction_to_best(replay(grid_text, table, target, seed, samples, warm_from),
                                                bests[target][0], grid_compute))
        out.append(row)
    return out


def median_fraction(results: list[tuple[float, bool]]) -> float:
    """Median over seeds; a seed that never reached the target counts as infinitely late."""
    return statistics.median(f if ok else math.inf for f, ok in results)


def warm_over_cold(warm: float, cold: float) -> float:
    """warm / cold of two median fractions; infinite when warm's median seed never got there (cold's or not).

    A target where neither got there counts as no gain, not as an undefined ratio that would
    leave the median over targets undefined too.
    """
    if math.isinf(warm):
        return math.inf
    return warm / cold if cold > 0 else math.nan


def main() -> None:
    """Measure the grids, replay cold and warm searches, print per seed and the ratios last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick FLARE grid (24 configurations per metal)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--frames", type=int, default=100, help="frames per temperature (embedded default: 100)")
    parser.add_argument("--samples", type=int, default=8, help="TPE trials per target (a third of the quick grid)")
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"comma-separated targets among {', '.join((*TARGETS, *NEIGHBOURS))}, or 'all'")
    args = parser.parse_args()

    import ray

    from sweep.data import ingest_archive
    from sweep.data.generate import generate_archive
    from sweep.data.generate.cache import default_cache_root
    from sweep.tune.runner import run_sweep
    from sweep.tune.space import parse_space
    from time_to_best import space_text

    elements = [*TARGETS, *NEIGHBOURS]
    targets = elements if args.targets == "all" else args.targets.split(",")
    if unknown := sorted(set(targets) - set(elements)):
        raise SystemExit(f"--targets: {', '.join(unknown)} not among the measured metals {', '.join(elements)}")
    grid_text = space_text("flare", None, args.quick, elements)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        collection = generate_archive(tmp / "archive", elements, frames_per_temperature=args.frames, progress=False,
                                      jobs=args.cpus, cache_root=default_cache_root())
        ingest_archive(collection, tmp / "store", progress=False)
        os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlruns.db'}")
        (tmp / "grid.yaml").write_text(grid_text)
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            summary = run_sweep(tmp / "grid.yaml", str(tmp / "store"), runs_dir=tmp / "runs", live=False)
        finally:
            ray.shutdown()
        if summary.errors:
            raise SystemExit(f"grid: trial errors {summary.errors}")
        table = grid_table(summary.records, parse_space(grid_text, "grid.yaml"))

    rows = compare(grid_text, table, targets, args.seeds, args.samples)
    print(f"FLARE B2 grid of {len(next(iter(table.values())))} configurations per metal on {', '.join(elements)}; "
          f"TPE {args.samples} trials per target, {args.seeds} seeds, replayed on the measured grid")
    print("| target | grid best (meV/Å) | grid compute (CPU-s) | cold fraction per seed | warm fraction per seed |")
    print("|---|---|---|---|---|")
    for row in rows:
        show = lambda res: ", ".join(f"{f:.3f}" if ok else f"{f:.3f} (not reached)" for f, ok in res)  # noqa: E731
        print(f"| {row['target']} | {row['grid_best']:.1f} | {row['grid_compute']:.1f} | {show(row['cold'])} | "
              f"{show(row['warm'])} |")
    print(f"ratio warm/cold of the median fraction of the grid's compute to get within {TOLERANCE:.0%} of the "
          "target's grid best (target: median <= 0.5):")
    ratios, bounds = [], []
    for row in rows:
        cold, warm = median_fraction(row["cold"]), median_fraction(row["warm"])
        # a cold seed that never got there spent all it had: that spend bounds its fraction from below
        cold_floor = statistics.median(f for f, _ in row["cold"])
        ratio = warm_over_cold(warm, cold)
        bound = warm_over_cold(warm, cold_floor)
        ratios.append(ratio)
        bounds.append(bound)
        print(f"  {row['target']}: warm {warm:.3f} / cold {cold:.3f} = {ratio:.2f}; at most {bound:.2f} "
              f"(cold seeds that never got there counted at what they spent, {cold_floor:.3f})")
    print(f"  median over targets: {statistics.median(ratios):.2f}; at most {statistics.median(bounds):.2f} "
          "(a target whose warm median seed never got there counts as infinite)")


if __name__ == "__main__":
    main()
