"""A sweep across three machines that share nothing but a network filesystem, with a driver kill and a node lost.

The machines are namespaces (:mod:`tests.cluster.multinode`): each has its own /tmp, /root,
network address and host name; the storage root is an sshfs mount of a fourth machine's
folder; the cluster is started by `ray up` of the shipped cluster.yaml with head_ip and
worker_ips set, over real sshd; trials log to the head's MLflow server (basic auth, artifacts
proxied; its backend store on PostgreSQL, started on the head by the shipped scripts). The test

1. refuses a sweep whose storage root is node-local (/tmp), up front, with one line;
2. runs 12 FLARE trials on the two workers, SIGKILLs the driver once and resumes;
3. kills a worker node (every process of it) while one of its trials is mid-training;
4. audits: nothing lost, nothing redone, one FINISHED MLflow run per configuration; the killed
   node's trial continued from its checkpoint on the other node; every run's export can be
   downloaded from the head's server; `export` and `report` on the head cover every trial.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.cluster.multinode import (
    POSTGRES_HEAD_ENV,
    SHARED,
    SWEEP,
    TRACKING_URI,
    NamespacedCluster,
    cluster_missing,
)
from tests.faults.sweeps import audit_sweep, flare_space, wait_for
from sweep.tune.ledger import training_counts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
NAME = "multinode"


@pytest.fixture
def cluster(tmp_path):
    """Storage, head and two workers, `ray up` done; everything ends with the test."""
    missing = cluster_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the multi-node test cannot run in CI: {missing}")
        pytest.skip(missing)
    cluster = NamespacedCluster(tmp_path / "cluster")
    try:
        cluster.start()
        cluster.up(head_env=POSTGRES_HEAD_ENV)
        yield cluster
    finally:
        cluster.close()
        print("durations:", json.dumps({k: round(v, 1) for k, v in cluster.durations.items()}))


def _trainings(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: training_counts(p.parent) for p in sweep_dir.glob("work/*/trainings.json")}


def _checkpointed(work: Path) -> int:
    for path in work.glob("checkpoint/*/progress.json"):
        try:
            return int(json.loads(path.read_text())["frames_added"])
        except (OSError, ValueError, KeyError):
            return 0
    return 0


def test_sweep_across_three_machines(cluster: NamespacedCluster, tmp_path):
    from tests.conftest import make_sweep_store

    # the head's MLflow server keeps its runs in PostgreSQL
    assert "backend postgresql+psycopg" in cluster.outputs["ray up"], cluster.outputs["ray up"][-3000:]
    make_sweep_store(cluster.shared / "data")
    space, total = flare_space(cluster.shared, NAME)
    store, runs = f"{SHARED}/data/store", f"{SHARED}/runs"
    sweep_dir = cluster.shared / "runs" / NAME

    # 1. A storage root that only the head has: refused before any trial, one line, nothing left.
    t0 = time.monotonic()
    refused = cluster.head.run([SWEEP, "run", f"{SHARED}/{NAME}.yaml", "--store", store, "--runs-dir",
                                "/tmp/local-runs", "--name", "refused", "--address", "auto", "--no-live"],
                               env={"MLFLOW_TRACKING_URI": TRACKING_URI}, timeout=300)
    cluster.durations["refusal"] = time.monotonic() - t0
    lines = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    assert len(lines) == 1 and "/tmp/local-runs" in lines[0] and "node node-w" in lines[0], refused.stderr
    assert not (cluster.head.tmp / "local-runs" / "refused").exists()

    # 2. The sweep, with its driver SIGKILLed once it has finished a trial, then resumed.
    t0 = time.monotonic()
    args = [f"{SHARED}/{NAME}.yaml", "--store", store, "--runs-dir", runs, "--name", NAME, "--address", "auto",
            "--no-live"]
    first = cluster.sweep("run", *args, log=tmp_path / "driver-1.log")
    wait_for(first, lambda: len(list(sweep_dir.glob("ledger/*.json"))) >= 1, timeout=600, what="a ledger record")
    os.kill(cluster.sweep_pid(first), signal.SIGKILL)
    first.wait(timeout=60)
    second = cluster.sweep("resume", NAME, "--runs-dir", runs, "--address", "auto", "--no-live",
                           log=tmp_path / "driver-2.log")

    # 3. A worker node lost while one of its trials is mid-training (it has checkpointed), once
    #    both workers have finished trials.
    def finished_on() -> set[str]:
        return {json.loads(p.read_text())["node"].get("hostname") for p in sweep_dir.glob("ledger/*.json")}

    def mid_training() -> tuple[str, str] | None:
        if not {w.hostname for w in cluster.workers} <= finished_on():
            return None
        for digest, counts in _trainings(sweep_dir).items():
            if counts["starts"] and not counts["ends"] and _checkpointed(sweep_dir / "work" / digest) >= 4:
                host = counts["starts"][-1].get("host")
                if host in {w.hostname for w in cluster.workers}:
                    return digest, host
        return None

    wait_for(second, lambda: mid_training() is not None, timeout=600, what="a checkpointed training on a worker")
    victim_digest, victim_host = mid_training()
    victim = next(w for w in cluster.workers if w.hostname == victim_host)
    victim.kill()
    assert not victim.processes()
    second.wait(timeout=900)
    cluster.durations["sweep with faults"] = time.monotonic() - t0
    log = (tmp_path / "driver-2.log").read_text()
    assert second.returncode == 0, log[-6000:]

    # 4. The audit.
    found = cluster.runs(NAME)
    audit = audit_sweep(cluster.shared / "runs", NAME, total, mlflow_table=found["table"])
    assert (audit.lost, audit.redone, audit.duplicates, audit.running) == (0, 0, 0, 0), audit
    records = [json.loads(p.read_text()) for p in sweep_dir.glob("ledger/*.json")]
    assert len(records) == total and {r["status"] for r in records} == {"finished"}
    hosts = {r["node"]["hostname"] for r in records}
    assert hosts == {w.hostname for w in cluster.workers}, hosts  # both workers, never the head
    # the lost node's training went on from its checkpoint on the other worker, and ended once
    counts = training_counts(sweep_dir / "work" / victim_digest)
    assert len(counts["ends"]) == 1
    assert counts["starts"][-1]["resumed_from_checkpoint"] and counts["starts"][-1]["host"] != victim_host
    # every run's artifacts live on the head's server, whichever node logged them
    assert len(found["artifacts"]) == total
    for run_id, artifacts in found["artifacts"].items():
        assert artifacts["uri"].startswith("mlflow-artifacts:/"), artifacts
        assert any(files for files in artifacts["files"].values()), (run_id, artifacts)

    # export and report on the head, from the tracking URI saved with the sweep
    export = cluster.head.run([SWEEP, "export", NAME, "--out",
                               f"{SHARED}/export", "--runs-dir", runs], timeout=600)
    assert export.returncode == 0, export.stdout[-3000:] + export.stderr[-3000:]
    exported = json.loads((cluster.shared / "export" / "manifest.json").read_text())["models"]
    assert {(m["model"], m["element"]) for m in exported} == {("flare", "Cu"), ("flare", "Au")}, exported
    report = cluster.head.run([SWEEP, "report", NAME, "--out",
                               f"{SHARED}/report", "--runs-dir", runs], timeout=600)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    manifest = json.loads((cluster.shared / "report" / "report.json").read_text())
    assert manifest["trials"] == total, manifest
