"""Per-trial overhead of a sweep across machines (shared storage, remote MLflow) against one machine.

    python benchmarks/cluster.py [--quick] [--trials K]

Measured in one run, with the same K short FLARE trials (one CPU each, EMT-labelled Cu and Au):

1. **one machine**: a local Ray instance, the storage root on the local disk, MLflow on sqlite;
2. **cluster**: the three-machine namespaced cluster of ``tests/cluster/multinode.py`` (its own
   network, /tmp and /root per machine), started by `ray up` of cluster.yaml, the storage root
   on an sshfs mount of a fourth machine's folder (attribute caches of 3 s, as NFS), trials
   on two workers logging to the head's MLflow server over HTTP with basic auth and
   proxied artifacts.

A trial's overhead is everything it does besides training: the ledger check and the lease
(``resolve_s``), the split and the MLflow run (``setup_s``), and final metrics, artifacts and
the ledger commit (``logging_s``), as each trial records them in its ledger entry. The last
lines print the medians and their ratio, cluster over one machine. Root only (namespaces).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.*

from tests.cluster.multinode import SHARED, NamespacedCluster, cluster_missing  # noqa: E402
from tests.conftest import make_sweep_store  # noqa: E402

SPACE = """
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
      block_size: 8
      optimize_every: 16
      maxiter: 30
"""
PHASES = ("resolve_s", "setup_s", "logging_s")


def overheads(sweep_dir: Path) -> dict[str, list[float]]:
    """Each finished trial's overhead and phases (seconds), from its ledger record."""
    out: dict[str, list[float]] = {"overhead_s": [], **{p: [] for p in PHASES}, "run_training_s": []}
    for path in sorted(Path(sweep_dir).glob("ledger/*.json")):
        timings = json.loads(path.read_text()).get("timings", {})
        if not timings:
            continue
        for phase in (*PHASES, "run_training_s"):
            out[phase].append(float(timings.get(phase, 0.0)))
        out["overhead_s"].append(sum(float(timings.get(p, 0.0)) for p in PHASES))
    return out


def one_machine(work: Path, space: Path, store: str) -> dict[str, list[float]]:
    """The sweep on a local Ray instance (2 CPUs), local storage, sqlite."""
    import os

    from sweep.tune.runner import run_sweep

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    summary = run_sweep(space, store, name="local", runs_dir=work / "runs", num_cpus=2, live=False)
    assert summary.complete, summary.errors
    return overheads(summary.sweep_dir)


def on_cluster(work: Path, space_text: str) -> tuple[dict[str, list[float]], dict[str, float]]:
    """The sweep on the namespaced three-machine cluster."""
    cluster = NamespacedCluster(work / "cluster")
    try:
        cluster.start()
        cluster.up()
        make_sweep_store(cluster.shared / "data")
        (cluster.shared / "space.yaml").write_text(space_text)
        t0 = time.monotonic()
        driver = cluster.sweep("run", f"{SHARED}/space.yaml", "--store", f"{SHARED}/data/store", "--runs-dir",
                               f"{SHARED}/runs", "--name", "cluster", "--address", "auto", "--no-live",
                               log=work / "cluster-driver.log")
        driver.wait(timeout=1800)
        cluster.durations["sweep"] = time.monotonic() - t0
        assert driver.returncode == 0, (work / "cluster-driver.log").read_text()[-4000:]
        return overheads(cluster.shared / "runs" / "cluster"), cluster.durations
    finally:
        cluster.close()


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 trials (under 10 minutes on 2 CPUs)")
    parser.add_argument("--trials", type=int, default=None, help="trials per sweep (even; default 8, or 16)")
    args = parser.parse_args()
    missing = cluster_missing()
    if missing:
        print(f"cannot build the namespaced cluster here: {missing}")
        return 2
    trials = args.trials or (8 if args.quick else 16)
    r_cuts = [round(4.0 + 0.1 * i, 2) for i in range(max(1, trials // 2))]
    space_text = SPACE.format(r_cuts=r_cuts)
    with tempfile.TemporaryDirectory(prefix="tm23-cluster-bench-") as tmp:
        work = Path(tmp)
        store = make_sweep_store(work / "data")
        (work / "space.yaml").write_text(space_text)
        t0 = time.monotonic()
        local = one_machine(work, work / "space.yaml", store)
        local_wall = time.monotonic() - t0
        remote, durations = on_cluster(work, space_text)
    print(f"{len(local['overhead_s'])} trials on one machine (local Ray, local disk, sqlite), "
          f"{len(remote['overhead_s'])} on the cluster (2 workers, sshfs storage root, MLflow server over HTTP)")
    print(f"{'phase':<16}{'one machine':>14}{'cluster':>14}   (median seconds per trial)")
    for phase in ("resolve_s", "setup_s", "logging_s", "overhead_s", "run_training_s"):
        print(f"{phase:<16}{_median(local[phase]):>14.3f}{_median(remote[phase]):>14.3f}")
    print(f"walls: one machine {local_wall:.0f} s; cluster " +
          ", ".join(f"{k} {v:.0f} s" for k, v in durations.items()))
    ratio = _median(remote["overhead_s"]) / _median(local["overhead_s"])
    print(f"per-trial overhead, cluster / one machine: {ratio:.2f} "
          f"({_median(remote['overhead_s']):.2f} s vs {_median(local['overhead_s']):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
