"""A Ray cluster of namespaced machines on one kernel, started by `ray up` over real sshd.

Topology (subnet ``10.88.0.0/24`` on a bridge in the storage machine's namespace)::

    tm23-storage  10.88.0.254   file server: sshd (sftp) exporting <work>/shared
    node-head     10.88.0.1     `ray up` runs here; Ray head, driver, MLflow server
    node-w1       10.88.0.2     Ray worker
    node-w2       10.88.0.3     Ray worker

Every node has its own /tmp, /root (overlay), /run, /mnt, network and PID namespace and host
name, the checkout read-only at its usual path, and the shared storage mounted by sshfs (a
network filesystem through FUSE, with attribute caches of 3 s as NFS has by default) at
:data:`SHARED`. The only state the nodes share is what they write there.

The cluster file is the shipped ``cluster.yaml`` with ``head_ip`` and ``worker_ips`` set, the
one edit the README's on-prem recipe asks for, plus, for MLflow on PostgreSQL (the README's
recipe too), ``TM23_MLFLOW_BACKEND=postgres`` on the head's start line, with the database in
the head's own /tmp.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.cluster.namespaces import REPO, VENV_BIN, Namespace, Switch, requirements_missing

SUBNET = "10.88.0"
STORAGE_ADDRESS = f"{SUBNET}.254"
HEAD_ADDRESS = f"{SUBNET}.1"
SHARED = "/mnt/tm23-shared"
RAY = VENV_BIN / "ray"
SWEEP = VENV_BIN / "tm23-sweep"
TRACKING_URI = f"http://{HEAD_ADDRESS}:5000"
SSHFS_OPTIONS = ("IdentityFile=/root/.ssh/tm23_storage,StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,"
                 "attr_timeout=3,entry_timeout=3,reconnect,ServerAliveInterval=5")

#: Runs inside the head: the number of alive Ray nodes.
ALIVE_QUERY = """
import logging, ray
ray.init(address="auto", logging_level=logging.ERROR, log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
"""

#: Runs inside the head: every run of an experiment, with what its artifacts hold.
RUNS_QUERY = """
import json, sys, tempfile
import mlflow
from mlflow import MlflowClient
mlflow.set_tracking_uri(sys.argv[1])
client = MlflowClient(sys.argv[1])
table = mlflow.search_runs(experiment_names=[sys.argv[2]])
artifacts = {}
for run_id in table["run_id"]:
    tops = [f.path for f in client.list_artifacts(run_id)]
    files = {}
    for folder in ("export", "model"):
        if folder in tops:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=folder,
                                                        dst_path=tempfile.mkdtemp())
            import pathlib
            files[folder] = sorted(str(p.relative_to(local)) for p in pathlib.Path(local).rglob("*") if p.is_file())
    artifacts[run_id] = {"top": tops, "files": files, "uri": client.get_run(run_id).info.artifact_uri}
print(json.dumps({"table": table.to_json(orient="records"), "artifacts": artifacts}))
"""


def cluster_missing() -> str | None:
    """Why the namespaced cluster cannot run here, or None."""
    missing = requirements_missing(("sshfs", "fusermount3"))
    if missing is None and not Path("/dev/fuse").exists():
        missing = "/dev/fuse missing (sshfs needs FUSE)"
    return missing


#: What the head's start line gets for MLflow on PostgreSQL (the README's on-prem recipe).
POSTGRES_HEAD_ENV = "TM23_MLFLOW_BACKEND=postgres TM23_PG_DIR=/tmp/tm23-postgres"


def cluster_yaml_for(head: str, workers: list[str], head_env: str = "") -> str:
    """The shipped cluster.yaml with ``head_ip`` and ``worker_ips`` set and ``head_env`` before head_start.sh."""
    text = (REPO / "cluster.yaml").read_text()
    text, n_head = re.subn(r"^  head_ip: .*$", f"  head_ip: {head}", text, count=1, flags=re.M)
    text, n_workers = re.subn(r"^  worker_ips: .*$", f"  worker_ips: [{', '.join(workers)}]", text, count=1,
                              flags=re.M)
    assert n_head == n_workers == 1, "cluster.yaml lost its head_ip or worker_ips line"
    if head_env:
        text, n_start = re.subn(r"^  - (~/\.tm23-sweep/project/setup/cluster/head_start\.sh)$",
                                rf"  - {head_env} \1", text, count=1, flags=re.M)
        assert n_start == 1, "cluster.yaml lost its head_start.sh line"
    return text


@dataclass
class NamespacedCluster:
    """Storage, head and workers as namespaces; :meth:`up` runs `ray up` on the head."""

    workdir: Path
    n_workers: int = 2
    nodes: dict[str, Namespace] = field(default_factory=dict)
    storage: Namespace | None = None
    durations: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def shared(self) -> Path:
        """The shared storage as this (host) process sees it."""
        return self.workdir / "shared"

    @property
    def head(self) -> Namespace:
        return self.nodes["node-head"]

    @property
    def workers(self) -> list[Namespace]:
        return [ns for name, ns in self.nodes.items() if name != "node-head"]

    def start(self) -> "NamespacedCluster":
        """Make the machines, the network, sshd on each, the shared mount, and prepare the head."""
        t0 = time.monotonic()
        self.shared.mkdir(parents=True)
        keys = self.workdir / "keys"
        keys.mkdir()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tm23 storage", "-f",
                        str(keys / "storage")], check=True, stdin=subprocess.DEVNULL)
        self.storage = Namespace(self.workdir / "storage", "tm23-storage", private_tmp=False)
        switch = Switch(self.storage, STORAGE_ADDRESS)
        self.storage.start_sshd(STORAGE_ADDRESS)
        pub = (keys / "storage.pub").read_text().strip()
        self.storage.authorize(f'restrict,from="{SUBNET}.0/24" {pub}')
        addresses = {"node-head": HEAD_ADDRESS, **{f"node-w{i}": f"{SUBNET}.{i + 1}" for i in range(1, self.n_workers + 1)}}
        for name, address in addresses.items():
            node = Namespace(self.workdir / name, name, read_only_checkout=True)
            self.nodes[name] = node
            switch.connect(node, address)
            node.start_sshd(address)
            key = node.home / ".ssh" / "tm23_storage"
            key.parent.mkdir(mode=0o700, exist_ok=True)
            key.write_bytes((keys / "storage").read_bytes())
            key.chmod(0o600)
            done = node.run(["bash", "-c", f"mkdir -p {SHARED} && sshfs -o {SSHFS_OPTIONS} "
                                           f"root@{STORAGE_ADDRESS}:{self.shared} {SHARED}"], timeout=60)
            assert done.returncode == 0, done.stdout + done.stderr
        prepared = self.head.run([REPO / "setup/cluster/prepare_local.sh", "--head", HEAD_ADDRESS, "--allow-from", HEAD_ADDRESS],
                                 timeout=60)
        assert prepared.returncode == 0, prepared.stdout + prepared.stderr
        self.outputs["prepare_local.sh"] = prepared.stdout + prepared.stderr
        line = self.head.run([REPO / "setup/cluster/prepare_local.sh", "--key-line", "--allow-from", HEAD_ADDRESS])
        assert line.returncode == 0 and line.stdout.startswith("restrict,pty,from="), line.stdout + line.stderr
        for worker in self.workers:
            worker.authorize(line.stdout.strip())
        self.durations["machines"] = time.monotonic() - t0
        return self

    def up(self, timeout: float = 300, head_env: str = "") -> None:
        """`ray up` the edited cluster.yaml from the head; wait until every node has joined."""
        (self.head.tmp / "cluster.yaml").write_text(
            cluster_yaml_for(HEAD_ADDRESS, [w.address for w in self.workers], head_env))
        t0 = time.monotonic()
        up = self.head.run([RAY, "up", "/tmp/cluster.yaml", "-y", "--no-config-cache"], timeout=timeout)
        self.outputs["ray up"] = up.stdout + up.stderr
        assert up.returncode == 0, self.outputs["ray up"][-6000:]
        deadline = time.monotonic() + timeout
        while (alive := self.alive_nodes()) < 1 + self.n_workers:
            assert time.monotonic() < deadline, f"{alive} nodes alive {timeout:.0f} s after ray up"
            time.sleep(3)
        self.durations["ray up + workers joined"] = time.monotonic() - t0

    def alive_nodes(self) -> int:
        """How many nodes the head's Ray cluster counts alive (0 while it does not answer)."""
        probe = self.head.run([VENV_BIN / "python", "-c", ALIVE_QUERY], env={"RAY_AUTH_MODE": "token"}, timeout=120)
        return int(probe.stdout.strip().splitlines()[-1]) if probe.returncode == 0 and probe.stdout.strip() else 0

    def sweep(self, *args: str, log: Path, env: dict | None = None) -> subprocess.Popen:
        """Start ``tm23-sweep ARGS`` on the head (the tracking URI of the cluster's server in its environment)."""
        return self.head.popen([SWEEP, *args], log=log, env={"MLFLOW_TRACKING_URI": TRACKING_URI, **(env or {})})

    def sweep_pid(self, launcher: subprocess.Popen, timeout: float = 30) -> int:
        """The host PID of the tm23-sweep process that ``launcher`` (nsenter) started."""
        from tests.cluster.namespaces import children

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for pid in children(launcher.pid):
                return pid
            time.sleep(0.05)
        raise AssertionError("the driver did not start")

    def runs(self, name: str) -> dict:
        """Every MLflow run of experiment ``name`` on the head's server, with its downloaded artifacts."""
        import pandas as pd

        query = self.head.run([VENV_BIN / "python", "-c", RUNS_QUERY, TRACKING_URI, name], timeout=300)
        assert query.returncode == 0, query.stdout + query.stderr[-4000:]
        out = json.loads(query.stdout.strip().splitlines()[-1])
        import io

        out["table"] = pd.read_json(io.StringIO(out["table"]), orient="records")
        return out

    def close(self) -> None:
        """End every machine (the kernel kills whatever is left inside each)."""
        for node in [*self.nodes.values(), self.storage]:
            if node is not None:
                node.close()
