"""Cost against training-set size N for FLARE and NequIP, and the projected cost of the full TM23 protocol.

    python benchmarks/scaling.py [--quick] [--frames F] [--flare-frames 100,300,900] [--gpus G] [--cpus C]
                                 [--markdown FILE]

1. Measure. On the embedded mini-TM23 Cu (generated here, ``--frames`` per temperature),
   ``learning-curve:N`` tasks for the paper's N = 100 … 900, scaled to the data (N·F/1000
   frames). FLARE: one B2 training per N, timed (CPU-seconds, one CPU). NequIP: a few
   epochs per N; the cost is the median epoch cycle (one epoch start to the next, so
   validation included, first epoch left out). The exponent b of t = a·N^b is the
   least-squares slope in log–log space (with R²). A FLARE *config factor* is measured
   at the smallest N: a centre-of-grid configuration of the shipped B2 space (n_max 6,
   l_max 3, maxiter 200) against the benchmark configuration. ``--flare-frames`` also times
   FLARE at real training-set sizes (the first n frames of Cu's ``full`` training set).
2. Project. Every trial of the shipped spaces (``flare_b1``, ``flare_b2``, ``nequip``
   grids, via :func:`sweep.tune.space.load_space`), the pipeline's final stage per model
   and metal (``full`` 2700 → 2430 train after the 10% validation hold-out,
   ``transfer-warm`` and ``transfer-melt`` 1000 → 900, the five learning curves), and the
   ``nequip_lmax_learning_curve`` space, each at its training-set size, from the fits.

FLARE's sparse set stops growing at ``max_sparse / sparse_per_frame`` training frames
(300 for the benchmark configuration): the power law is fitted below that cap and the
cost grows linearly past it, at a slope measured from sizes past the cap, or, without
such sizes, taken as the fit's slope at the cap (labelled assumed).

Assumptions, printed with the table, each marked measured or assumed: NequIP trials run ``--epochs`` epochs (the shipped
``max_epochs``, an upper bound: the paper stops earlier once the LR falls below 1e-5);
frames of the real archive have ``--atoms-factor`` times the atoms of the embedded Cu
frames (cost taken as linear in atoms); one GPU trains NequIP ``--gpu-speedup`` times
faster than one CPU core (not measured: no GPU here); the NequIP cost is that of the
benchmark configuration, with no factor for the larger configurations of the grid;
packing on the cluster is perfect, and a group cannot finish before its longest trial. A space
with ASHA is charged :func:`asha_fraction` of full-length trials (synchronous successive halving).
Ratios (exponents, projected totals) are printed on the last lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

PAPER_N = (100, 300, 500, 700, 900)
FLARE_BENCH = {"descriptor": "B2", "r_cut": 5.0, "n_max": 4, "l_max": 2, "zeta": 2, "sparse_per_frame": 10,
               "block_size": 10, "optimize_every": 20, "maxiter": 30}
FLARE_CENTRE = {**FLARE_BENCH, "n_max": 6, "l_max": 3, "maxiter": 200}
NEQUIP_BENCH = {"r_max": 5.0, "num_layers": 2, "l_max": 1, "num_features": 16, "batch_size": 5, "patience": 1000}
VAL_FRACTION = 0.1


def fit_power(ns, ts) -> tuple[float, float, float]:
    """Least-squares fit of log t = log a + b log N; returns (a, b, R²)."""
    x, y = np.log(np.asarray(ns, float)), np.log(np.asarray(ts, float))
    b, log_a = np.polyfit(x, y, 1)
    residual = y - (log_a + b * x)
    total = y - y.mean()
    r2 = 1.0 - float(residual @ residual) / float(total @ total) if float(total @ total) > 0 else 1.0
    return float(math.exp(log_a)), float(b), r2


def time_flare(split, params: dict, work: Path) -> float:
    """Seconds of one serial FLARE training (the trainer's ``train``) on ``split``."""
    from sweep.trainers.base import TrainContext, get_trainer, null_reporter

    trainer = get_trainer("flare")
    hyper = trainer.parse_params(params)
    context = TrainContext(temperature_K=split.train_temperature_K, num_cpus=1, seed=0)
    started = time.perf_counter()
    trainer().train(hyper, split.train, split.val, null_reporter, work, context)
    return time.perf_counter() - started


def time_nequip_epoch(split, params: dict, epochs: int, work: Path) -> float:
    """Median seconds of one NequIP epoch cycle (train + validation) on ``split``, CPU."""
    from nequip_gpu import epoch_timer_class

    from sweep.trainers.labels import write_extxyz as _write_extxyz
    from sweep.trainers.nequip.trainer import _run_nequip
    from sweep.trainers.nequip.config import NequIPParams, build_config

    work.mkdir(parents=True)
    hyper = NequIPParams(**{**params, "max_epochs": epochs})
    config = build_config(hyper, type_names=["Cu"], train_file=str(_write_extxyz(work / "train.xyz", split.train)),
                          val_file=str(_write_extxyz(work / "val.xyz", split.val)), seed=0, output_dir=str(work),
                          accelerator="cpu")
    timer = epoch_timer_class()()
    _run_nequip(config, resume_from=None, extra_callbacks=[timer])
    starts = [e["start"] for e in timer.epochs]
    cycles = np.diff(starts)[1:] if len(starts) > 2 else np.diff(starts)
    return float(statistics.median(cycles))


def measure_flare_frames(store, sizes, work: Path, progress=print) -> list[dict]:
    """FLARE seconds at real training-set sizes: the first n frames of Cu's ``full`` training set, per n."""
    from sweep.data import split_frames

    split = split_frames(store, "Cu", "full", seed=0)
    rows = []
    for n in sizes:
        if n > len(split.train):
            raise SystemExit(f"--flare-frames {n}: Cu's full task has {len(split.train)} training frames; "
                             "raise --frames")
        sub = dataclasses.replace(split, train=split.train[:n])
        rows.append({"n_train": n, "flare_s": time_flare(sub, FLARE_BENCH, work / f"flare-real{n}")})
        progress(f"  FLARE on {n} training frames: {rows[-1]['flare_s']:.1f} s")
    return rows


def measure(frames_per_temperature: int, sizes, nequip_epochs: int, work: Path, progress=print,
            flare_frames=(), labeller: str | None = None) -> dict:
    """Per paper N: frames used, FLARE seconds, NequIP seconds per epoch; plus the FLARE config factor.

    ``flare_frames``: also time FLARE at these real training-set sizes (frames, not paper N),
    which the FLARE fit then uses instead. ``labeller``: the data's labeller (default: the
    project's); costs do not depend on the label values.
    """
    from sweep.data import FrameStore, ingest_archive, split_frames
    from sweep.data.generate import generate_archive

    from sweep.data.generate.cache import default_cache_root

    extra = {"labeller": labeller} if labeller else {}
    collection = generate_archive(work / "archive", ["Cu"], frames_per_temperature=frames_per_temperature,
                                  progress=False, cache_root=default_cache_root(), **extra)
    ingest_archive(collection, work / "store", progress=False)
    store = FrameStore.open(str(work / "store"))
    rows = []
    for n in sizes:
        split = split_frames(store, "Cu", f"learning-curve:{n}", seed=0)
        flare_s = time_flare(split, FLARE_BENCH, work / f"flare{n}")
        epoch_s = time_nequip_epoch(split, NEQUIP_BENCH, nequip_epochs, work / f"nequip{n}")
        rows.append({"paper_n": n, "n_train": len(split.train), "atoms": len(split.train[0]),
                     "flare_s": flare_s, "nequip_epoch_s": epoch_s})
        progress(f"  N={n} ({len(split.train)} train frames): FLARE {flare_s:.2f} s, NequIP epoch {epoch_s:.3f} s")
    first = split_frames(store, "Cu", f"learning-curve:{sizes[0]}", seed=0)
    centre = time_flare(first, FLARE_CENTRE, work / "flare_centre")
    out = {"rows": rows, "flare_config_factor": centre / rows[0]["flare_s"], "flare_centre_s": centre,
           "flare_cap": flare_cap_frames()}
    if flare_frames:
        out["flare_rows"] = measure_flare_frames(store, flare_frames, work, progress)
    return out


def protocol_trials(epochs: int) -> list[dict]:
    """Every training of the full protocol: model kind, training frames, NequIP epochs."""
    from sweep.data.splits import LEARNING_CURVE_SIZES, parse_task
    from sweep.tune.space import load_space

    def train_frames(task: str) -> int:
        t = parse_task(task)
        n = {"full": 2700, "grid": 200, "transfer-warm": 1000, "transfer-melt": 1000}.get(t.kind, t.n)
        return int(round(n * (1 - VAL_FRACTION)))

    trials = []
    for name in ("flare_b1", "flare_b2", "nequip", "nequip_lmax_learning_curve"):
        loaded = load_space(name if name.endswith(".yaml") else f"{Path(__file__).resolve().parent.parent}"
                            f"/sweep/search_spaces/{name}.yaml")
        for group in loaded.groups:
            size = loaded.group_size(group.study)
            params = loaded.space.studies[group.study].params
            max_epochs = params.get("max_epochs", epochs) if isinstance(params.get("max_epochs"), int) else epochs
            trials.append({"space": name, "stage": "grid" if name != "nequip_lmax_learning_curve" else "lc-space",
                           "model": group.model, "n": train_frames(group.task), "count": size,
                           "epochs": min(epochs, max_epochs), "asha": asha_fraction(loaded.space.scheduler)})
        if name == "nequip_lmax_learning_curve":
            continue
        elements = len(loaded.elements())
        model = loaded.space.studies[0].model
        for task in ("full", "transfer-warm", "transfer-melt", *(f"learning-curve:{n}" for n in LEARNING_CURVE_SIZES)):
            trials.append({"space": name, "stage": "final", "model": model, "n": train_frames(task),
                           "count": elements, "epochs": epochs, "asha": 1.0})
    return trials


def asha_fraction(scheduler) -> float:
    """Expected share of full-length compute per trial under synchronous successive halving.

    Rungs at grace·η^k reports below ``max_t``; 1/η^k of the trials pass rung k. Cost is
    taken as linear in reports, which overstates it for FLARE (later blocks cost more) and
    understates it for asynchronous ASHA's liberal early promotions. 1.0 without ASHA.
    """
    if scheduler.kind != "asha":
        return 1.0
    eta, total = scheduler.reduction_factor, scheduler.max_t
    milestones = []
    rung = scheduler.grace_period
    while rung < total:
        milestones.append(rung)
        rung *= eta
    milestones.append(total)
    cost = milestones[0] + sum((b - a) / eta ** j for j, (a, b) in enumerate(zip(milestones, milestones[1:]), 1))
    return cost / total


def flare_cap_frames(params: dict = FLARE_BENCH) -> int:
    """Training frames after which FLARE's sparse set stops growing (``max_sparse / sparse_per_frame``)."""
    from sweep.trainers.flare.params import FlareParams

    hyper = FlareParams(**params)
    return max(1, hyper.max_sparse // hyper.sparse_per_frame)


def flare_cost(n: float, fit: tuple[float, float, float], cap: int, beyond: tuple[float, str]) -> float:
    """FLARE seconds for ``n`` training frames: the power law up to the sparse-set ``cap``, linear after it.

    Past the cap each new frame adds kernel rows against a sparse set of fixed size, so the
    cost grows linearly; ``beyond`` is (seconds per frame past the cap, how that slope was found).
    """
    a, b, _ = fit
    if n <= cap:
        return a * n ** b
    return a * cap ** b + beyond[0] * (n - cap)


def beyond_cap_slope(rows: list[dict], fit: tuple[float, float, float], cap: int) -> tuple[float, str]:
    """Seconds per frame past the cap: measured when two sizes lie at or past it, else the power law's slope there."""
    past = [r for r in rows if r["n_train"] >= cap]
    if len(past) >= 2:
        slope = float(np.polyfit([r["n_train"] for r in past], [r["flare_s"] for r in past], 1)[0])
        return max(slope, 0.0), "measured"
    a, b, _ = fit
    return b * a * cap ** (b - 1), "assumed (slope of the fit at the cap; no size measured past it)"


def project(meas: dict, epochs: int, atoms_factor: float, gpu_speedup: float, gpus: int, cpus: int) -> dict:
    """CPU-hours, GPU-hours and cluster wall time of the protocol from the fits."""
    rows = meas["rows"]
    ns = [r["n_train"] for r in rows]
    cap = meas.get("flare_cap", flare_cap_frames())
    flare_rows = meas.get("flare_rows") or rows
    below = [r for r in flare_rows if r["n_train"] <= cap] or flare_rows
    flare_fit = fit_power([r["n_train"] for r in below], [r["flare_s"] for r in below])
    fa, fb, fr2 = flare_fit
    beyond = beyond_cap_slope(flare_rows, flare_fit, cap)
    na, nb, nr2 = fit_power(ns, [r["nequip_epoch_s"] for r in rows])
    factor = meas["flare_config_factor"]
    lines, totals = [], {}
    longest = {"flare": 0.0, "nequip": 0.0}
    for t in protocol_trials(epochs):
        if t["model"] == "flare":
            one = flare_cost(t["n"], flare_fit, cap, beyond) * factor * atoms_factor
        else:
            one = na * t["n"] ** nb * t["epochs"] * atoms_factor
        key = (t["space"], t["stage"])
        agg = totals.setdefault(key, {"model": t["model"], "trials": 0, "cpu_s": 0.0})
        agg["trials"] += t["count"]
        agg["cpu_s"] += one * t["count"] * t["asha"]
        longest[t["model"]] = max(longest[t["model"]], one)
    for (space, stage), agg in totals.items():
        gpu_h = agg["cpu_s"] / 3600 / gpu_speedup if agg["model"] == "nequip" else None
        lines.append({"space": space, "stage": stage, "model": agg["model"], "trials": agg["trials"],
                      "cpu_h": agg["cpu_s"] / 3600, "gpu_h": gpu_h})
    flare_cpu_h = sum(line["cpu_h"] for line in lines if line["model"] == "flare")
    nequip_gpu_h = sum(line["gpu_h"] for line in lines if line["model"] == "nequip")
    nequip_cpu_h = sum(line["cpu_h"] for line in lines if line["model"] == "nequip")
    flare_wall = max(flare_cpu_h / cpus, longest["flare"] / 3600)
    nequip_wall = max(nequip_gpu_h / gpus, longest["nequip"] / gpu_speedup / 3600) if gpus else float("inf")
    return {"fits": {"flare": (fa, fb, fr2), "nequip": (na, nb, nr2)}, "lines": lines,
            "flare_cpu_h": flare_cpu_h, "nequip_gpu_h": nequip_gpu_h, "nequip_cpu_h": nequip_cpu_h,
            "flare_wall_h": flare_wall, "nequip_wall_h": nequip_wall, "wall_h": max(flare_wall, nequip_wall),
            "longest_h": {k: v / 3600 for k, v in longest.items()}, "config_factor": factor,
            "flare_cap": cap, "flare_beyond_cap": beyond,
            "measured_n": (min(r["n_train"] for r in flare_rows), max(r["n_train"] for r in flare_rows))}


def assumptions(p: dict, args) -> list[tuple[str, str, str]]:
    """The projection's assumptions, each with its value and whether it was measured: (what, value, status)."""
    gpu_status = "measured" if getattr(args, "gpu_speedup_measured", False) else "assumed (no GPU measured)"
    slope, slope_status = p["flare_beyond_cap"]
    lo, hi = p["measured_n"]
    return [
        ("cluster shape", f"{args.gpus} GPUs + {args.cpus} CPU cores", "chosen (--gpus, --cpus)"),
        ("FLARE cost below its sparse-set cap", f"∝ N^{p['fits']['flare'][1]:.2f}", f"measured, N = {lo}–{hi}"),
        ("FLARE sparse-set cap", f"{p['flare_cap']} training frames (max_sparse / sparse_per_frame)",
         "from the trainer's defaults"),
        ("FLARE cost past the cap", f"{slope:.3g} s per frame, linear", slope_status),
        ("FLARE grid-centre configuration", f"{p['config_factor']:.1f}× the benchmark one", "measured"),
        ("NequIP epochs per trial", f"{args.epochs}", "assumed (shipped max_epochs, an upper bound)"),
        ("real frames / embedded frames", f"{args.atoms_factor}× the cost", "assumed (atoms ratio, cost linear)"),
        ("one GPU / one CPU core, NequIP", f"{args.gpu_speedup:g}×", gpu_status),
        ("packing", "perfect; a study ends with its longest trial", "assumed"),
    ]


def markdown(p: dict, args, meas: dict) -> str:
    """The projection table and its assumptions as markdown (for the README)."""
    out = ["| space | stage | model | trials | CPU-hours | GPU-hours |", "|---|---|---|---:|---:|---:|"]
    for line in p["lines"]:
        gpu = f"{line['gpu_h']:.1f}" if line["gpu_h"] is not None else "–"
        cpu = f"{line['cpu_h']:.1f}" + (" (if on CPU)" if line["model"] == "nequip" else "")
        out.append(f"| {line['space']} | {line['stage']} | {line['model']} | {line['trials']} | {cpu} | {gpu} |")
    out.append(f"| **total** | | FLARE | | **{p['flare_cpu_h']:.1f}** | |")
    out.append(f"| **total** | | NequIP | | ({p['nequip_cpu_h']:.1f}) | **{p['nequip_gpu_h']:.1f}** |")
    fa, fb, fr2 = p["fits"]["flare"]
    na, nb, nr2 = p["fits"]["nequip"]
    out += ["", f"Wall time on {args.gpus} GPUs and {args.cpus} CPUs: FLARE {p['flare_wall_h']:.1f} h, "
            f"NequIP {p['nequip_wall_h']:.1f} h; both at once: **{p['wall_h']:.1f} h**.", "",
            "| assumption | value | status |", "|---|---|---|",
            *(f"| {what} | {value} | {status} |" for what, value, status in assumptions(p, args)), "",
            "Measured (embedded mini-TM23 Cu, "
            f"{meas['rows'][0]['atoms']} atoms per frame, one CPU core): FLARE B2 trial time ∝ N^{fb:.2f} "
            f"(R² {fr2:.3f}); NequIP epoch time ∝ N^{nb:.2f} (R² {nr2:.3f}); FLARE shipped-grid centre "
            f"configuration costs {p['config_factor']:.1f}× the benchmark one.", "",
            f"Assumptions: NequIP trials run {args.epochs} epochs (the shipped max_epochs; an upper bound); "
            f"real TM23 frames cost {args.atoms_factor}× the embedded ones (more atoms, cost linear in atoms); "
            f"**one GPU = {args.gpu_speedup:g} CPU cores for NequIP (assumed, not measured: no GPU here)**; "
            "NequIP cost from a mid-grid configuration (r_max 5, 2 layers, l_max 1, 16 features), "
            "no factor for larger ones; perfect packing; a study cannot end before its longest trial."]
    return "\n".join(out)


def main() -> None:
    """Measure, fit, project; print the table, ratios last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 100, 300, 500, 900 on 100 frames per temperature, "
                                                             "3 NequIP epochs (< 10 min)")
    parser.add_argument("--frames", type=int, default=None, help="frames per temperature (default 300; quick 100)")
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--cpus", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=1000, help="assumed NequIP epochs per trial")
    parser.add_argument("--atoms-factor", type=float, default=1.6, help="assumed cost ratio real/embedded frames")
    parser.add_argument("--gpu-speedup", type=float, default=30.0, help="assumed GPU / one CPU core speed for NequIP")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table as markdown here")
    parser.add_argument("--flare-frames", default="", help="also time FLARE at these real training-set sizes "
                                                           "(e.g. 100,300,600,900; needs --frames of about n/2.4)")
    args = parser.parse_args()
    frames = args.frames or (100 if args.quick else 300)
    sizes = (100, 300, 500, 900) if args.quick else PAPER_N
    with tempfile.TemporaryDirectory() as tmp:
        flare_frames = tuple(int(n) for n in args.flare_frames.split(",") if n)
        meas = measure(frames, sizes, 3 if args.quick else 6, Path(tmp), flare_frames=flare_frames)
    p = project(meas, args.epochs, args.atoms_factor, args.gpu_speedup, args.gpus, args.cpus)
    text = markdown(p, args, meas)
    if args.markdown:
        from sweep.io import atomic_write_text

        atomic_write_text(args.markdown, text + "\n")
    print(text)
    fa, fb, fr2 = p["fits"]["flare"]
    na, nb, nr2 = p["fits"]["nequip"]
    print(f"FLARE exponent b = {fb:.2f} (R² {fr2:.3f}); NequIP epoch exponent b = {nb:.2f} (R² {nr2:.3f})")
    print(f"projected: FLARE {p['flare_cpu_h']:.0f} CPU-h, NequIP {p['nequip_gpu_h']:.0f} GPU-h "
          f"(assumed GPU = {args.gpu_speedup:g} cores); wall on {args.gpus} GPUs + {args.cpus} CPUs {p['wall_h']:.1f} h")


if __name__ == "__main__":
    main()
