"""Every ``cluster*.yaml`` at the repository root, checked offline.

Ray's own route first: ``prepare_config`` (merge with the provider's ``defaults.yaml``, node-type
min/max workers) then ``validate_config`` (Ray's ``ray-schema.json``), with the network closed to
this process so that neither can reach a cloud. Then what the project needs of a cluster: trials
kept off the head, the token and MLflow credentials on every node, MLflow on an address the workers
reach, the commands' scripts present, and every shipped search space feasible on the worker types.
"""

from __future__ import annotations

import copy
import os
import re
import socket
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
FILES = sorted(ROOT.glob("cluster*.yaml"))
LOOPBACK = re.compile(r"^(127\.|localhost$|::1$)")
NETWORK_FAMILIES = ("nequip", "allegro", "mace")


@pytest.fixture
def no_network(monkeypatch):
    """Any name lookup or connection attempt in this process fails the test."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network use during an offline check")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts
    assert not attempts, f"the check reached for the network: {attempts}"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _env(command: str, name: str) -> str | None:
    found = re.search(rf"(?:^|\s){name}=(\$\([^)]*\)|\S+)", command)
    return found.group(1) if found else None


def test_the_three_files_are_there():
    assert [p.name for p in FILES] == ["cluster-aws.yaml", "cluster-gcp.yaml", "cluster.yaml"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_ray_schema(path, no_network):
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(path)
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    # what prepare_config filled in stays what this file says
    assert prepared["provider"]["type"] == raw["provider"]["type"]
    assert prepared["setup_commands"] == raw["setup_commands"]
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_secrets_reach_every_node(path):
    raw = _load(path)
    mounts = raw["file_mounts"]
    assert mounts.get("~/.ray/auth_token") == "~/.ray/auth_token"
    assert mounts.get("~/.mlflow/credentials") == "~/.mlflow/credentials"
    text = path.read_text()
    assert not re.search(r"(password|token)\s*[:=]\s*\S{12,}", text, re.I), "a secret pasted into the file"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_commands_name_existing_scripts(path):
    raw = _load(path)
    commands = [c for key in ("setup_commands", "head_setup_commands", "worker_setup_commands",
                              "head_start_ray_commands", "worker_start_ray_commands") for c in raw.get(key) or []]
    scripts = {m for c in commands for m in re.findall(r"~/\.tm23-sweep/project/(setup/cluster/\S+)", c)}
    assert "setup/cluster/head_start.sh" in scripts and "setup/cluster/worker_start.sh" in scripts
    for script in scripts:
        assert os.access(ROOT / script, os.X_OK), script
    assert not any("0.0.0.0" in c for c in commands), "nothing binds every interface"


def _cloud(path: Path) -> bool:
    return _load(path)["provider"]["type"] != "local"


@pytest.mark.parametrize("path", [p for p in FILES if _cloud(p)], ids=lambda p: p.name)
def test_cloud_head_runs_no_trials_and_mlflow_is_reachable(path):
    raw = _load(path)
    types = raw["available_node_types"]
    head = types[raw["head_node_type"]]
    assert head["resources"]["CPU"] == 0
    start = " ".join(raw["head_start_ray_commands"])
    assert "setup/cluster/head_start.sh" in start
    assert _env(start, "TM23_HEAD_CPUS") == "0"
    # Ray and MLflow bind the head's private address (head_start.sh), never loopback or 0.0.0.0
    head_ip = _env(start, "TM23_HEAD_IP")
    assert head_ip and head_ip.startswith("$("), head_ip
    here = subprocess.run(["bash", "-c", f"echo {head_ip}"], capture_output=True, text=True, timeout=10).stdout.strip()
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", here) and not LOOPBACK.match(here), here  # this machine's own
    assert _env(start, "TM23_MLFLOW_HOST") is None  # head_start.sh gives MLflow the same address
    assert _env(start, "TM23_MLFLOW_BACKEND") == "postgres"  # many trials log at once: not sqlite
    assert "postgresql" in tomllib.loads((ROOT / "setup/system-packages.toml").read_text())
    # the storage root: an NFS share mounted at one path on every node
    mounts = [c for c in raw["setup_commands"] if "mount_shared.sh" in c]
    assert len(mounts) == 1 and " /mnt/tm23-shared " in mounts[0]
    assert "nfs-common" in " ".join(raw["setup_commands"])


@pytest.mark.parametrize("path", [p for p in FILES if _cloud(p)], ids=lambda p: p.name)
def test_cloud_worker_types_hold_every_shipped_space(path):
    from sweep.trainers.family import get_family
    from sweep.tune.resources import NodeCapacity, check_feasible
    from sweep.tune.space import SPACES_DIR, load_space

    raw = _load(path)
    workers = {name: t for name, t in raw["available_node_types"].items() if name != raw["head_node_type"]}
    nodes = [NodeCapacity(name, float(t["resources"].get("CPU", 0)), float(t["resources"].get("GPU", 0)))
             for name, t in workers.items() for _ in range(max(1, t.get("min_workers", 0)))]
    assert any(n.gpus >= 1 for n in nodes) and max(n.cpus for n in nodes) >= 16
    for t in workers.values():
        assert t.get("min_workers", 0) >= 1  # `gpus: auto` and feasibility read the nodes alive at start
    for space in sorted(SPACES_DIR.glob("*.yaml")):
        loaded = load_space(space)
        requests = check_feasible(loaded, nodes)
        for i, study in enumerate(loaded.space.studies):
            if study.model in NETWORK_FAMILIES:
                assert requests[i].gpus == 1.0, (space.name, study.model)
            if get_family(study.model).accelerator == "cpu":
                assert requests[i].gpus == 0.0


def test_local_file_head_has_no_trials_once_it_has_workers():
    raw = _load(ROOT / "cluster.yaml")
    start = " ".join(raw["head_start_ray_commands"])
    assert _env(start, "TM23_HEAD_CPUS") is None  # head_start.sh then gives the head 0 CPUs with worker_ips
    provider = raw["provider"]
    if provider.get("worker_ips"):
        assert not LOOPBACK.match(provider["head_ip"]), "workers cannot reach MLflow on the head's loopback"
    else:
        assert provider["head_ip"] == "127.0.0.1"  # as shipped: one machine


def test_head_start_picks_zero_cpus_and_the_given_address():
    """head_start.sh's own address and CPU logic, before it starts anything (bash -x trace)."""
    script = (ROOT / "setup/cluster/head_start.sh").read_text()
    assert 'head_ip=${TM23_HEAD_IP:-$head_ip}' in script
    assert re.search(r"elif \(\( n_workers > 0 \)\); then\s+cpus=\(--num-cpus=0\)", script)
    assert '--node-ip-address="$head_ip"' in script and 'TM23_MLFLOW_HOST="$head_ip"' in script
    refused = subprocess.run(["bash", str(ROOT / "setup/cluster/head_start.sh")], capture_output=True, text=True,
                             env={**os.environ, "TM23_HEAD_IP": "0.0.0.0",
                                  "TM23_BOOTSTRAP_CONFIG": str(ROOT / "cluster.yaml")}, timeout=60)
    assert refused.returncode == 2 and "refusing to bind '0.0.0.0'" in refused.stderr


@pytest.mark.parametrize("source", ["fs-EDIT.efs.us-west-2.amazonaws.com:/", "10.0.0.EDIT:/tm23", "no-colon"])
def test_mount_shared_refuses_placeholders(source, tmp_path):
    done = subprocess.run([str(ROOT / "setup/cluster/mount_shared.sh"), source, str(tmp_path / "m"), "efs"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()


def test_ray_schema_refuses_a_misspelt_key(no_network):
    """The schema check is strict: a typo in a node type is refused, not ignored."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = _load(ROOT / "cluster-aws.yaml")
    raw["available_node_types"]["gpu"]["resorces"] = raw["available_node_types"]["gpu"].pop("resources")
    with pytest.raises(jsonschema.ValidationError, match="resorces"):
        validate_config(prepare_config(raw))
