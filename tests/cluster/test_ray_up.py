"""`ray up cluster.yaml` end to end: the shipped file, real sshd, real Ray, real MLflow.

The cluster runs inside throwaway Linux namespaces that the test owns (root only):
- a network namespace with nothing but loopback, so sshd takes 127.0.0.1:22, Ray 6379 and
  MLflow 5000 exactly as cluster.yaml says, whatever this machine already runs on them;
- a PID namespace, so the `ray stop` inside `ray down` (which stops every Ray process it can
  see) sees only this cluster, and the namespace's end kills whatever is left;
- a mount namespace with an overlay on /root (writes to ~/.ssh, ~/.bashrc, ~/.ray go to a
  tmpfs that ends with it) and private /tmp (in the test's folder), /run and /dev/shm.
Nothing is written to the machine's /etc/ssh, /root or /tmp outside the test's folder.

Steps: sshd on 127.0.0.1 -> setup/cluster/prepare_local.sh -> ray up -> ray status ->
MLflow /health -> every listening port on 127.0.0.1 -> a sweep with --address auto (when the
runner exists) -> ray down -> nothing of the cluster is left. It also checks that Ray's token
auth is on and that the token appears in no output, log or cluster.yaml.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import warnings

import pytest
import yaml

from tests.cluster.namespaces import (
    REPO,
    TIMEOUT,
    VENV_BIN,
    Namespace,
    children,
    listening,
    requirements_missing,
)

CLUSTER_YAML = REPO / "cluster.yaml"
RAY = VENV_BIN / "ray"
SWEEP_CLI = REPO / "sweep" / "cli" / "sweeps.py"
SWEEP_COMMAND = [str(VENV_BIN / "tm23-sweep")]
RAY_PROCESS_NAMES = ("raylet", "gcs_server")
# gRPC servers (GCS, raylet) listen on IPv6 sockets at the IPv4-mapped form of 127.0.0.1.
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1"}

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


# Two FLARE trials of one CPU each on the cluster's two CPUs.
TINY_SPACE = """\
description: ray up test, FLARE B2 on Cu, two trials
elements: [Cu]
task: grid
search: {algorithm: grid}
scheduler: {kind: none}
studies:
  - model: flare
    resources: {cpus: 1}
    params:
      descriptor: B2
      r_cut: {grid: [3.5, 4.0]}
      n_max: 2
      l_max: 1
      zeta: 2
      sparse_per_frame: 3
      block_size: 5
      optimize_every: 10
      maxiter: 20
"""

MLFLOW_QUERY = """
import json, sys
from mlflow import MlflowClient
client = MlflowClient(sys.argv[1])
experiment = client.get_experiment_by_name(sys.argv[2])
runs = client.search_runs([experiment.experiment_id])
print(json.dumps([{"status": r.info.status, **r.data.tags, **r.data.params, **r.data.metrics} for r in runs]))
"""


@pytest.fixture
def cluster_ns(tmp_path):
    """A namespace with sshd on 127.0.0.1:22 and the project prepared (prepare_local.sh) in it.

    Finalizer, also after a failure: ray down, then the venv's `ray stop --force`, then sshd and
    the namespace itself, whose end kills anything still inside.
    """
    missing = requirements_missing()
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the ray up test cannot run in CI: {missing}")
        pytest.skip(missing)
    ns = Namespace(tmp_path / "ns")
    try:
        ns.start_sshd("127.0.0.1")
        prepared = ns.run([REPO / "setup/cluster/prepare_local.sh"], timeout=60)
        assert prepared.returncode == 0, prepared.stdout + prepared.stderr
        ns.prepare_output = prepared.stdout + prepared.stderr
        yield ns
    finally:
        if _ray_processes(ns):
            for args, limit in (([RAY, "down", CLUSTER_YAML, "-y"], 120), ([RAY, "stop", "--force"], 60)):
                try:
                    ns.run(args, timeout=limit)
                except subprocess.TimeoutExpired:
                    pass
        if ns.sshd is not None:
            sshd = ns.sshd
            for pid in children(sshd.pid):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                sshd.wait(timeout=20)
            except subprocess.TimeoutExpired:
                sshd.kill()
        ns.close()
        deadline = time.monotonic() + 20
        while ns.processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not ns.processes(), f"left running after the namespace ended: {ns.processes()}"


def _ray_processes(ns: Namespace) -> dict[int, str]:
    return {pid: cmd for pid, cmd in ns.processes().items()
            if any(re.search(rf"(^|/){name}( |$)", cmd) for name in RAY_PROCESS_NAMES)}


def _mlflow_health(ns: Namespace) -> subprocess.CompletedProcess:
    return ns.run([VENV_BIN / "python", "-c",
                   "import urllib.request as u; print(u.urlopen('http://127.0.0.1:5000/health', timeout=5).read().decode())"],
                  timeout=30)


def _assert_loopback_only(ns: Namespace, must_include: set[int]) -> list[tuple[str, int, str]]:
    sockets = ns.listening()
    open_ports = {port for _, port, _ in sockets}
    assert must_include <= open_ports, f"expected ports {sorted(must_include)} to listen, found {sockets}"
    exposed = [s for s in sockets if s[0] not in LOOPBACK]
    assert not exposed, f"listening beyond 127.0.0.1: {exposed}"
    return sockets


def test_listening_socket_table_is_read_right():
    """The /proc reader behind the bind-address checks reports each listener's address, port and inode."""
    sockets = []
    try:
        for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((address, 0))
            sock.listen()
        expected = {(address, sock.getsockname()[1], os.fstat(sock.fileno()).st_ino)
                    for address, sock in zip(("0.0.0.0", "127.0.0.1", "::1"), sockets)}
        assert expected <= set(listening(os.getpid()))
    finally:
        for sock in sockets:
            sock.close()


def test_shipped_cluster_yaml_holds_no_secret_and_binds_loopback():
    """cluster.yaml names a key path outside the repo, holds no key or token, and binds to 127.0.0.1."""
    text = CLUSTER_YAML.read_text()
    config = yaml.safe_load(text)
    assert config["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    assert "max_workers" not in config  # the local provider then starts every worker of worker_ips
    key = config["auth"]["ssh_private_key"]
    assert key.startswith("~/.ssh/") and not (REPO / key).exists()
    assert not re.search(r"PRIVATE KEY|AUTH_TOKEN=|password|aws_secret|-----BEGIN", text, re.I)
    # The secrets travel as files prepare_local.sh made (mode 600), never as text in this file.
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token",
                                     "~/.mlflow/credentials": "~/.mlflow/credentials",
                                     "~/.tm23-sweep/project-path": "~/.tm23-sweep/project-path"}
    # Ray's head and MLflow bind provider.head_ip (read by head_start.sh), with token auth.
    start = (REPO / "setup/cluster/head_start.sh").read_text()
    assert config["head_start_ray_commands"][-1] == "~/.tm23-sweep/project/setup/cluster/head_start.sh"
    assert '--node-ip-address="$head_ip"' in start and 'TM23_MLFLOW_HOST="$head_ip"' in start
    assert "RAY_AUTH_MODE=token" in start and "RAY_AUTH_MODE=disabled" not in text + start
    assert "RAY_AUTH_MODE=token" in (REPO / "setup/cluster/worker_start.sh").read_text()
    # The project's ray by absolute path, never a bare `ray` from whatever PATH the ssh login has.
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        assert not re.search(r"(^|[\s;&|])ray\s", command), command
    # MLflow binds to 127.0.0.1 unless told the cluster's address, and never to every interface.
    server = (REPO / "setup/cluster/mlflow_server.sh").read_text()
    assert "host=${TM23_MLFLOW_HOST:-127.0.0.1}" in server and "refusing to bind $host" in server


def test_ray_up_sweep_ray_down(cluster_ns: Namespace):
    """ray up the shipped cluster.yaml, use the cluster, ray down, and nothing of it is left."""
    ns = cluster_ns
    outputs = {"prepare_local.sh": ns.prepare_output}
    durations = {}

    t0 = time.monotonic()
    up = ns.run([RAY, "up", CLUSTER_YAML, "-y", "--no-config-cache"], timeout=TIMEOUT)
    durations["ray up"] = time.monotonic() - t0
    outputs["ray up"] = up.stdout + up.stderr
    assert up.returncode == 0, outputs["ray up"][-6000:]

    token_file = ns.home / ".ray" / "auth_token"
    token = token_file.read_text().strip()
    assert len(token) >= 16 and token_file.stat().st_mode & 0o077 == 0

    # Token auth is on: the token is needed and a wrong one is refused.
    t0 = time.monotonic()
    status = ns.run([RAY, "status"], env={"RAY_AUTH_MODE": "token"}, timeout=60)
    durations["ray status"] = time.monotonic() - t0
    outputs["ray status"] = status.stdout + status.stderr
    assert status.returncode == 0, outputs["ray status"]
    assert re.search(r"^ 1 local\.cluster\.node$", status.stdout, re.M), status.stdout
    t0 = time.monotonic()
    wrong = ns.run([RAY, "status"], env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * len(token)}, timeout=60)
    durations["ray status, wrong token"] = time.monotonic() - t0
    assert wrong.returncode != 0 and "InvalidAuthToken" in wrong.stderr, wrong.stdout + wrong.stderr[-2000:]

    health = _mlflow_health(ns)
    assert health.returncode == 0 and health.stdout.strip() == "OK", health.stdout + health.stderr
    mlflow_pid = int((ns.home / ".tm23-sweep" / "mlflow-server.pid").read_text())
    assert (ns.home / ".tm23-sweep" / "mlflow" / "mlruns.db").exists()

    # Every port the cluster opened (GCS 6379, MLflow 5000, raylet, agents, ...) is on loopback.
    sockets = _assert_loopback_only(ns, must_include={22, 5000, 6379})
    assert len(sockets) > 3, sockets

    missing = _sweep_cli_missing()
    if missing is None:
        t0 = time.monotonic()
        _run_sweep(ns, outputs)
        durations["sweep"] = time.monotonic() - t0
        _assert_loopback_only(ns, must_include={22, 5000, 6379})
    else:
        warnings.warn(f"ray up test: the sweep step was skipped: {missing}", stacklevel=1)

    t0 = time.monotonic()
    down = ns.run([RAY, "down", CLUSTER_YAML, "-y"], timeout=TIMEOUT)
    durations["ray down"] = time.monotonic() - t0
    outputs["ray down"] = down.stdout + down.stderr
    assert down.returncode == 0, outputs["ray down"][-4000:]

    # `ray down` really stopped it: no Ray daemons, `ray status` fails, MLflow gone, ports closed.
    deadline = time.monotonic() + 30
    while _ray_processes(ns) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _ray_processes(ns), f"left running after ray down: {_ray_processes(ns)}"
    after = ns.run([RAY, "status"], env={"RAY_AUTH_MODE": "token"}, timeout=60)
    assert after.returncode != 0, after.stdout
    assert mlflow_pid not in {int(p) for p in ns.run(["ps", "-eo", "pid="]).stdout.split()}
    assert _mlflow_health(ns).returncode != 0
    assert not (ns.home / ".tm23-sweep" / "mlflow-server.pid").exists()
    left = [s for s in ns.listening() if s[1] != 22]
    assert not left, f"ports still open after ray down: {left}"

    # The token and the ssh key are in no output, no Ray, MLflow or sweep log, and not
    # in cluster.yaml.
    places = dict(outputs)
    places["cluster.yaml"] = CLUSTER_YAML.read_text()
    places["ray_bootstrap_config.yaml"] = (ns.home / "ray_bootstrap_config.yaml").read_text()
    logs = [*(ns.tmp / "ray").glob("session_*/logs/**/*"), *(ns.tmp / "runs").glob("**/*"),
            ns.home / ".tm23-sweep" / "mlflow-server.log"]
    for log in logs:
        if log.is_file() and log.stat().st_size < 2**21:
            places[str(log)] = log.read_bytes().decode(errors="replace")
    assert len(places) > 10
    leaks = [name for name, text in places.items() if token in text]
    assert not leaks, f"Ray's auth token written to: {leaks}"
    key_lines = [line for line in (ns.home / ".ssh" / "tm23_sweep_ed25519").read_text().splitlines()
                 if len(line) > 40 and "PRIVATE KEY" not in line]
    assert key_lines
    leaks = [name for name, text in places.items() if any(line in text for line in key_lines)]
    assert not leaks, f"the ssh private key written to: {leaks}"
    print("durations:", json.dumps({k: round(v, 1) for k, v in durations.items()}))


def _sweep_cli_missing() -> str | None:
    """Why ``tm23-sweep run`` does not exist yet, or None (a broken one is not skipped: it fails the run)."""
    if not SWEEP_CLI.exists():
        return f"{SWEEP_CLI.relative_to(REPO)} does not exist yet"
    probe = subprocess.run([*SWEEP_COMMAND, "run", "--help"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0 and "No such command 'run'" in probe.stdout + probe.stderr:
        return "`tm23-sweep run` is not registered on the command line yet"
    return None


def _run_sweep(ns: Namespace, outputs: dict) -> None:
    """A 2-trial FLARE sweep with --address auto on the cluster, logged to the head's MLflow server."""
    from sweep.data.store import ingest_archive
    from tests.conftest import write_emt_archive

    # Inside the namespace, its /tmp is ns.tmp.
    collection = write_emt_archive(ns.tmp / "archive", elements=("Cu",), frames_per_temperature=10)
    ingest_archive(collection, ns.tmp / "store", progress=False)
    (ns.tmp / "space.yaml").write_text(TINY_SPACE)
    sweep = ns.run([*SWEEP_COMMAND, "run", "/tmp/space.yaml", "--store", "/tmp/store", "--name", "cluster-test",
                    "--address", "auto", "--runs-dir", "/tmp/runs", "--no-live"],
                   env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}, timeout=TIMEOUT)
    outputs["tm23-sweep run"] = sweep.stdout + sweep.stderr
    assert sweep.returncode == 0, outputs["tm23-sweep run"][-6000:]

    # It ran on the cluster: still one Ray session (the driver joined it rather than starting Ray).
    assert len(list((ns.tmp / "ray").glob("session_2*"))) == 1
    assert len([c for c in _ray_processes(ns).values() if "gcs_server" in c]) == 1

    # One FINISHED MLflow run per trial, in the head's server, with the trial's scores.
    query = ns.run([VENV_BIN / "python", "-c", MLFLOW_QUERY, "http://127.0.0.1:5000", "cluster-test"], timeout=120)
    assert query.returncode == 0, query.stdout + query.stderr
    runs = json.loads(query.stdout.strip().splitlines()[-1])
    assert len(runs) == 2, runs
    assert {r["status"] for r in runs} == {"FINISHED"}, runs
    assert {r["element"] for r in runs} == {"Cu"} and {r["model"] for r in runs} == {"flare"}, runs
    assert sorted(float(r["r_cut"]) for r in runs) == [3.5, 4.0], runs
    assert all(r["test_forces_mae"] > 0 for r in runs), runs
