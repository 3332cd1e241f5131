"""Shared FLARE descriptors: one grid over ζ and the σ's at a few descriptor settings, with and without sharing.

    python benchmarks/flare_sharing.py [--quick] [--cpus 2] [--trial-cpus 1] [--frames 100] [--repeats 2]

On the embedded mini-TM23 (generated here, Cu, task ``grid``), one FLARE space whose grid
varies ζ, σ and σ_f at each of a few descriptor settings runs through
:func:`sweep.tune.runner.run_sweep` twice per repeat: with ``TM23_SHARE_WORK=1`` and
with ``TM23_SHARE_WORK=0`` (alternating, sharing first). Each run starts its own local
Ray instance (``run_sweep`` does when none is running), whose workers inherit the
variable; the ledger's ``info["prediction_descriptors"]["shared"]`` confirms what each trial did.

Printed: the grid's wall time per run (driver's view, Ray start included), the summed
trial compute (ledger ``train_seconds``) and trial wall (``trial_wall_s``), the summed
seconds spent computing FLARE structures (descriptors and neighbour lists, training and
the final validation/test predictions; for ``--trial-cpus`` > 1, rank 0's share and the
launching process's) and the seconds the reused ones had cost, and the largest
difference of every non-timing ledger metric between the two runs, config by config
(must be 0: sharing changes no bit). The ratios (with / without sharing) are the last lines.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

#: Ledger metrics that are timings, not results: they differ between any two runs.
TIMING_METRICS = ("train_seconds", "trial_wall_s")

FLARE_PARAMS = """
      descriptor: B2
      r_cut: {{grid: {r_cut}}}
      n_max: {{grid: {n_max}}}
      l_max: 2
      zeta: {{grid: [1, 2]}}
      sigma: {{grid: [1.0, 2.0]}}
      sigma_f: {{grid: {sigma_f}}}
      sparse_per_frame: 5
      block_size: 6
      optimize_every: 6
      maxiter: 30
"""

SPACE = """
elements: [Cu]
task: grid
seed: 0
search: {{algorithm: grid}}
scheduler: {{kind: none}}
studies:
  - model: flare
    export: false
    resources: {{cpus: {trial_cpus}}}
    params:{params}"""


def space_text(quick: bool, trial_cpus: int = 1) -> str:
    """The benchmark space: 2 descriptor settings × ζ × σ × σ_f (16 configs) quick, 4 × 2 × 2 × 3 (48) full."""
    if quick:
        params = FLARE_PARAMS.format(r_cut=[4.5, 5.5], n_max=[6], sigma_f=[0.05, 0.1])
    else:
        params = FLARE_PARAMS.format(r_cut=[4.5, 5.5], n_max=[5, 7], sigma_f=[0.03, 0.05, 0.1])
    return SPACE.format(trial_cpus=trial_cpus, params=params)


def descriptor_settings(records) -> int:
    """How many distinct descriptor settings the records span."""
    return len({(r.params["descriptor"], r.params["r_cut"], r.params["n_max"], r.params["l_max"]) for r in records})


def descriptor_seconds(records) -> dict[str, float]:
    """Structures computed and reused (count and seconds) over all records, training and predictions."""
    out = {"computed": 0.0, "compute_s": 0.0, "reused": 0.0, "reused_s": 0.0}
    for r in records:
        for key in ("descriptors", "prediction_descriptors"):
            tally = r.info.get(key) or {}
            for field in out:
                out[field] += float(tally.get(field, 0.0))
    return out


def phase_seconds(records) -> dict[str, float]:
    """The trainer's per-phase timers (rank 0's for MPI trials), summed over the records."""
    out: dict[str, float] = {}
    for r in records:
        for key, value in ((r.info.get("parallel") or {}).get("timers") or {}).items():
            if key not in ("nfev", "n_solves"):
                out[key] = out.get(key, 0.0) + float(value)
    return out


def shared_flags(records) -> set:
    """The ``shared`` flags the trials' processes ran with (the launching process's, for MPI trials)."""
    return {bool((r.info.get("prediction_descriptors") or r.info.get("descriptors") or {}).get("shared"))
            for r in records}


def metric_differences(a, b) -> tuple[float, float, int, list[str]]:
    """(max |a − b|, max |a − b|/|b|, values compared, configs missing) over every non-timing ledger metric."""
    by_hash = {r.config_hash: r for r in b}
    max_abs = max_rel = 0.0
    compared = 0
    missing = []
    for ra in a:
        rb = by_hash.get(ra.config_hash)
        if rb is None:
            missing.append(ra.config_hash)
            continue
        keys = (set(ra.metrics) | set(rb.metrics)) - set(TIMING_METRICS)
        for key in sorted(keys):
            if key not in ra.metrics or key not in rb.metrics:
                missing.append(f"{ra.config_hash}:{key}")
                continue
            x, y = ra.metrics[key], rb.metrics[key]
            diff = abs(x - y)
            max_abs = max(max_abs, diff)
            if y != 0:
                max_rel = max(max_rel, diff / abs(y))
            compared += 1
    missing += [h for h in by_hash if h not in {r.config_hash for r in a}]
    return max_abs, max_rel, compared, missing


def run_arm(share: bool, space: Path, store: Path, runs: Path, cpus: int):
    """One sweep of ``space`` with ``TM23_SHARE_WORK`` set, on a Ray instance of its own."""
    import ray

    from sweep.tune.runner import run_sweep

    if ray.is_initialized():  # its workers would keep the other arm's setting
        raise SystemExit("Ray is already initialised in this process; each arm needs its own instance")
    os.environ["TM23_SHARE_WORK"] = "1" if share else "0"
    runs.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{runs / 'mlruns.db'}"
    summary = run_sweep(space, str(store), runs_dir=runs, num_cpus=cpus, live=False)
    if summary.errors or not summary.complete:
        raise SystemExit(f"share={share}: trial errors {summary.errors}, {summary.unfinished} unfinished")
    flags = shared_flags(summary.records)
    if flags != {share}:
        raise SystemExit(f"share={share}: trials ran with shared={flags}; the workers did not get the setting")
    return summary


def main() -> None:
    """Run the grid with and without sharing; print figures, ratios last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 configs (2 descriptor settings) instead of 48")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--trial-cpus", type=int, default=1, help="CPUs per trial (> 1: FLARE's MPI ranks)")
    parser.add_argument("--frames", type=int, default=100, help="frames per temperature (embedded default: 100)")
    parser.add_argument("--repeats", type=int, default=2, help="pairs of runs (on, off), alternating")
    args = parser.parse_args()
    repeats = args.repeats

    from sweep.data import ingest_archive
    from sweep.data.generate import generate_archive
    from sweep.data.generate.cache import default_cache_root

    arms: dict[bool, list] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        collection = generate_archive(tmp / "archive", ["Cu"], frames_per_temperature=args.frames, progress=False,
                                      cache_root=default_cache_root())
        ingest_archive(collection, tmp / "store", progress=False)
        space = tmp / "flare_sharing.yaml"
        space.write_text(space_text(args.quick, args.trial_cpus))
        for k in range(repeats):
            for share in (True, False):
                summary = run_arm(share, space, tmp / "store", tmp / f"runs_{k}_{int(share)}", args.cpus)
                arms[share].append(summary)
                print(f"repeat {k} sharing {'on ' if share else 'off'}: {len(summary.records)} configs, "
                      f"wall {summary.wall_s:.1f} s", flush=True)

    first = arms[True][0].records
    print(f"grid: {len(first)} FLARE configs on Cu (task grid), {descriptor_settings(first)} descriptor settings, "
          f"ζ × σ × σ_f varied; Ray with {args.cpus} CPUs, {args.trial_cpus} CPU(s) per trial; "
          f"{repeats} repeat(s)")
    figures = {}
    for share, runs in arms.items():
        walls = [s.wall_s for s in runs]
        compute = [sum(r.metrics["train_seconds"] for r in s.records) for s in runs]
        trial_wall = [sum(r.metrics["trial_wall_s"] for r in s.records) for s in runs]
        desc = [descriptor_seconds(s.records) for s in runs]
        figures[share] = {"wall": statistics.median(walls), "compute": statistics.median(compute),
                          "trial_wall": statistics.median(trial_wall),
                          "desc_s": statistics.median(d["compute_s"] for d in desc)}
        d = desc[0]
        print(f"sharing {'on ' if share else 'off'}: grid wall {', '.join(f'{w:.1f}' for w in walls)} s; "
              f"trial compute {', '.join(f'{c:.1f}' for c in compute)} s; "
              f"trial wall {', '.join(f'{t:.1f}' for t in trial_wall)} s; "
              f"structures computed {int(d['computed'])} ({d['compute_s']:.2f} s), "
              f"reused {int(d['reused'])} (had cost {d['reused_s']:.2f} s)")
        phases = phase_seconds(runs[0].records)
        print("  trainer phases (s, first repeat): " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(phases.items())))
    worst_abs = worst_rel = 0.0
    compared = 0
    for on, off in zip(arms[True], arms[False]):
        max_abs, max_rel, n, missing = metric_differences(on.records, off.records)
        if missing:
            raise SystemExit(f"records or metrics missing in one run: {missing[:5]}")
        worst_abs, worst_rel, compared = max(worst_abs, max_abs), max(worst_rel, max_rel), compared + n
    print(f"ledger metrics compared config by config (all but {', '.join(TIMING_METRICS)}): {compared} values, "
          f"max |difference| {worst_abs:.3g}, max relative {worst_rel:.3g}")
    on, off = figures[True], figures[False]
    print("ratios, sharing on / off (median over repeats):")
    print(f"  grid wall time: {on['wall'] / off['wall']:.3f} ({on['wall']:.1f} s / {off['wall']:.1f} s)")
    print(f"  trial compute (train_seconds): {on['compute'] / off['compute']:.3f} "
          f"({on['compute']:.1f} s / {off['compute']:.1f} s)")
    print(f"  trial wall (trial_wall_s): {on['trial_wall'] / off['trial_wall']:.3f}")
    print(f"  structure (descriptor) seconds: {on['desc_s'] / off['desc_s']:.3f} "
          f"({on['desc_s']:.2f} s / {off['desc_s']:.2f} s, {off['desc_s'] / off['trial_wall']:.1%} of trial wall "
          "without sharing)")
    print(f"  trial wall expected from the structure seconds alone: "
          f"{1 - (off['desc_s'] - on['desc_s']) / off['trial_wall']:.3f} (the measured ratios above also carry "
          "this machine's noise)")


if __name__ == "__main__":
    main()
