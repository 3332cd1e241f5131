"""Lose a node in the middle of a sweep on a ``ray.cluster_utils.Cluster``; the sweep completes elsewhere.

The cluster is a head with no CPUs (it holds the driver and the object store) and worker
nodes of one CPU each. Once a training has checkpointed a block, the node running it is
killed without grace (every process of it, as a crashed machine would lose them). Tune's
``FailureConfig`` reschedules the trial on a surviving node, where it resumes from the
checkpoint in the configuration's work folder (on a real cluster: shared storage).

Run as ``python -m tests.faults.node_loss ROOT STORE [WORKERS]`` (its own process, so the
cluster's processes never mix with a test process's Ray); the last stdout line is JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from sweep.tune.ledger import training_counts
from tests.faults.sweeps import Audit, audit_sweep, current_trainings, flare_space

REPO = Path(__file__).resolve().parents[2]


def run_node_loss(root: Path, store: str, workers: int = 2, timeout: float = 420) -> tuple[Audit, dict]:
    """Run the node-loss scenario in a subprocess; returns the audit and what the scenario saw."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "tests.faults.node_loss", str(root), store, str(workers)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)
    (root / "scenario.log").write_text(proc.stdout + proc.stderr)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"node-loss scenario failed (exit {proc.returncode}): {(proc.stdout + proc.stderr)[-3000:]}")
    seen = json.loads(lines[-1])
    return audit_sweep(root / "runs", "n", seen["total"]), seen


def _raylet_pid(node) -> int:
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def _node_of(pid: int, nodes) -> object | None:
    """The cluster node whose raylet is an ancestor of process ``pid``."""
    import psutil

    raylets = {_raylet_pid(n): n for n in nodes}
    try:
        process = psutil.Process(pid)
        for parent in process.parents():
            if parent.pid in raylets:
                return raylets[parent.pid]
    except psutil.NoSuchProcess:
        return None
    return None


def main(root: str, store: str, workers: int) -> int:
    """Start the cluster, run the sweep, kill the node of a checkpointed training, print what happened."""
    import ray
    from ray.cluster_utils import Cluster

    from sweep.tune.runner import run_sweep

    root_path = Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    space, total = flare_space(root_path, "n")
    sweep_dir = root_path / "runs" / "n"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for _ in range(workers):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    seen: dict = {"total": total, "removed": None}

    def kill_a_node() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and seen["removed"] is None:
            for training in current_trainings(sweep_dir):
                if 4 <= training["frames_added"] <= 16:
                    node = _node_of(training["pid"], list(cluster.worker_nodes))
                    if node is not None:
                        seen["removed"] = {"work": str(training["work"]), "frames_added": training["frames_added"],
                                           "pid": training["pid"], "at": time.time()}
                        cluster.remove_node(node, allow_graceful=False)
                        return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_a_node, daemon=True)
    killer.start()
    try:
        summary = run_sweep(space, store, name="n", runs_dir=root_path / "runs", address=cluster.address, live=False)
    finally:
        killer.join(timeout=1)
        seen["nodes_left"] = len(cluster.worker_nodes)
        ray.shutdown()
        cluster.shutdown()
    seen.update({"complete": summary.complete, "errors": summary.errors})
    if seen["removed"]:
        counts = training_counts(Path(seen["removed"]["work"]))
        seen["removed"]["starts"], seen["removed"]["ends"] = counts["starts"], counts["ends"]
    print(json.dumps(seen, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 2))
