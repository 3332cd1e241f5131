"""NequIP epoch time, device utilisation and data-loader share, on a GPU when present, else on the CPU.

    python benchmarks/nequip_gpu.py [--quick] [--frames F] [--epochs E] [--device cuda|cpu]

One NequIP training (the trainer's own in-process ``nequip-train`` route and config) on
the embedded mini-TM23 Cu ``full`` split, generated here. A Lightning callback times
every training batch in two parts: *loader* (from the end of the previous batch, or the
start of the epoch, to the start of this one: fetching and collating the batch, moving it
to the device) and *compute* (forward, loss, backward, optimiser step). Epoch time is
the wall time of each training epoch (validation excluded); the first epoch is left out
of the medians (warm-up, CUDA context, kernel choice).

Utilisation, sampled every 0.2 s while training runs:

- GPU: ``torch.cuda.utilization()`` (NVML, the figure ``nvidia-smi`` shows), else
  ``nvidia-smi --query-gpu=utilization.gpu``.
- CPU: ``psutil.cpu_percent`` of this process when psutil is installed, else the
  ``os.times()`` user+system time over wall time; printed as % of one core and of all
  cores. The line names the source used.

Ratios are printed on the last lines: loader / (loader + compute), and utilisation.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path


def epoch_timer_class():
    """The Lightning callback class that times loader and compute per training batch (imports lightning)."""
    import lightning

    class EpochTimer(lightning.Callback):
        """Per epoch: wall time, summed loader wait and summed compute of the training batches."""

        def __init__(self) -> None:
            self.epochs: list[dict[str, float]] = []
            self._mark = 0.0
            self._batch_start = 0.0
            self._current: dict[str, float] = {}

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            """Open an epoch record; the first batch's loader wait counts from here."""
            now = time.perf_counter()
            self._current = {"start": now, "loader": 0.0, "compute": 0.0, "batches": 0}
            self._mark = now

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            """Lightning calls this once the batch is fetched and on the device."""
            now = time.perf_counter()
            self._current["loader"] += now - self._mark
            self._batch_start = now

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            """After the optimiser step; synchronise so that GPU work is counted as compute."""
            _sync(pl_module)
            now = time.perf_counter()
            self._current["compute"] += now - self._batch_start
            self._current["batches"] += 1
            self._mark = now

        def on_validation_start(self, trainer, pl_module) -> None:
            """Close the epoch's training part (validation runs inside the train epoch in Lightning)."""
            if self._current and "end" not in self._current and not trainer.sanity_checking:
                self._current["end"] = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            """Store the epoch record."""
            if not self._current:
                return
            self._current.setdefault("end", time.perf_counter())
            self._current["wall"] = self._current["end"] - self._current["start"]
            self.epochs.append(self._current)
            self._current = {}

    return EpochTimer


def _sync(pl_module) -> None:
    import torch

    if pl_module.device.type == "cuda":
        torch.cuda.synchronize(pl_module.device)


class UtilSampler:
    """Samples device (GPU) or process (CPU) utilisation in a thread while ``with`` runs."""

    def __init__(self, device: str, interval: float = 0.2):
        self.device, self.interval = device, interval
        self.samples: list[float] = []
        self.source = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "UtilSampler":
        self._t0, self._times0 = time.perf_counter(), os.times()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        wall = time.perf_counter() - self._t0
        t1 = os.times()
        self.os_times_cpu_pct = 100.0 * ((t1.user - self._times0.user) + (t1.system - self._times0.system)) / wall

    def _gpu_reader(self):
        import torch

        try:
            torch.cuda.utilization()
            self.source = "torch.cuda.utilization (NVML)"
            return lambda: float(torch.cuda.utilization())
        except Exception:
            pass
        if shutil.which("nvidia-smi"):
            self.source = "nvidia-smi utilization.gpu"

            def read() -> float:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, check=True).stdout
                return float(out.split()[0])
            return read
        self.source = "none (no NVML, no nvidia-smi)"
        return None

    def _run(self) -> None:
        if self.device == "cuda":
            read = self._gpu_reader()
            if read is None:
                return
        else:
            try:
                import psutil

                proc = psutil.Process()
                proc.cpu_percent(None)
                self.source = "psutil.Process().cpu_percent"
                read = lambda: proc.cpu_percent(None)  # noqa: E731
            except ImportError:
                self.source = "os.times() user+system / wall"
                read = None
        while not self._stop.wait(self.interval):
            if read is not None:
                self.samples.append(read())

    def mean(self) -> float:
        """Mean utilisation in %, from the samples or (CPU without psutil) from os.times()."""
        if self.samples:
            return statistics.fmean(self.samples)
        return getattr(self, "os_times_cpu_pct", float("nan"))


def measure(frames_per_temperature: int, epochs: int, device: str, work: Path, params: dict | None = None,
            labeller: str | None = None) -> dict:
    """Train one NequIP model on generated Cu data; returns per-epoch timings and utilisation.

    ``labeller``: the data's labeller (default: the project's); timings do not depend on label values.
    """
    import torch

    from sweep.data import FrameStore, ingest_archive, split_frames
    from sweep.data.generate import generate_archive
    from sweep.trainers.labels import write_extxyz as _write_extxyz
    from sweep.trainers.nequip.trainer import _run_nequip
    from sweep.trainers.nequip.config import NequIPParams, build_config

    from sweep.data.generate.cache import default_cache_root

    extra = {"labeller": labeller} if labeller else {}
    collection = generate_archive(work / "archive", ["Cu"], frames_per_temperature=frames_per_temperature,
                                  progress=False, cache_root=default_cache_root(), **extra)
    ingest_archive(collection, work / "store", progress=False)
    split = split_frames(FrameStore.open(str(work / "store")), "Cu", "full", seed=0)
    hyper = NequIPParams(**{"r_max": 5.0, "num_layers": 2, "l_max": 1, "num_features": 16, "batch_size": 4,
                            "max_epochs": epochs, "patience": 1000, **(params or {})})
    ckpt = work / "checkpoint"
    ckpt.mkdir()
    config = build_config(hyper, type_names=["Cu"], train_file=str(_write_extxyz(ckpt / "train.xyz", split.train)),
                          val_file=str(_write_extxyz(ckpt / "val.xyz", split.val)), seed=0, output_dir=str(ckpt),
                          accelerator="gpu" if device == "cuda" else "cpu")
    timer = epoch_timer_class()()
    with UtilSampler(device) as util:
        started = time.perf_counter()
        _run_nequip(config, resume_from=None, extra_callbacks=[timer])
        fit_wall = time.perf_counter() - started
    steady = timer.epochs[1:] or timer.epochs
    loader = sum(e["loader"] for e in steady)
    compute = sum(e["compute"] for e in steady)
    return {
        "device": device, "torch_threads": torch.get_num_threads(),
        "gpu_name": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "n_train": len(split.train), "n_val": len(split.val), "atoms": len(split.train[0]),
        "batches": int(steady[0]["batches"]), "epochs": len(timer.epochs), "fit_wall": fit_wall,
        "epoch_wall_median": statistics.median(e["wall"] for e in steady),
        "first_epoch_wall": timer.epochs[0]["wall"],
        "loader_s_per_epoch": loader / len(steady), "compute_s_per_epoch": compute / len(steady),
        "loader_share": loader / (loader + compute) if loader + compute > 0 else float("nan"),
        "util_mean": util.mean(), "util_source": util.source, "os_times_cpu_pct": util.os_times_cpu_pct,
        "cpus": os.cpu_count(),
    }


def main() -> None:
    """Run the measurement and print figures, ratios last."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 frames per temperature, 6 epochs (< 10 min)")
    parser.add_argument("--frames", type=int, default=None, help="frames per temperature of the generated data")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda when available")
    args = parser.parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    frames = args.frames or (30 if args.quick else 100)
    epochs = args.epochs or (6 if args.quick else 20)
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(frames, epochs, device, Path(tmp))
    where = r["gpu_name"] or f"CPU, {r['torch_threads']} torch threads of {r['cpus']} cores"
    print(f"NequIP on {where}: Cu, {r['n_train']} train / {r['n_val']} val frames of {r['atoms']} atoms, "
          f"{r['batches']} batches per epoch, {r['epochs']} epochs, fit wall {r['fit_wall']:.1f} s")
    print(f"  epoch (training part) median {r['epoch_wall_median']:.3f} s; first epoch {r['first_epoch_wall']:.3f} s")
    print(f"  per epoch: loader {r['loader_s_per_epoch']:.3f} s, compute {r['compute_s_per_epoch']:.3f} s")
    if device == "cuda":
        print(f"GPU utilisation during fit: {r['util_mean']:.0f}% ({r['util_source']})")
    else:
        pct = r["util_mean"]
        print(f"CPU utilisation during fit: {pct:.0f}% of one core = {pct / r['cpus']:.0f}% of {r['cpus']} cores "
              f"({r['util_source']}; os.times: {r['os_times_cpu_pct']:.0f}%)")
    print(f"loader share of training-batch time: {r['loader_share']:.3f}")
    print(f"epoch time: {r['epoch_wall_median']:.3f} s on {device}")


if __name__ == "__main__":
    main()
