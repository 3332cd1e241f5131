"""Refuse a storage root (or a tracking server) that some node of the Ray cluster cannot reach.

Before any trial starts, the driver writes a marker with a random token under the
storage root and runs one tiny task pinned to every alive node. Each task reads the
marker, writes its own answer beside it, and, when the sweep logs to an MLflow server,
asks that server for ``/health``. The driver then reads every answer back. A node that
sees another folder at that path (its own ``/tmp``, say), cannot write there, or cannot
reach the server stops the sweep with one line naming the node and the path.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from sweep.errors import InputError

PROBE_DIR = ".tm23-visibility"
#: A fresh cluster may need this long to start a worker process on each node.
PROBE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class NodeAnswer:
    """What one node's probe found."""

    node_id: str
    host: str
    address: str
    problem: str | None  # None when the node sees the marker, can write, and reaches the server


def _probe(folder: str, token: str, node_id: str, tracking_uri: str | None) -> NodeAnswer:
    import ray

    host = socket.gethostname()
    address = ray.util.get_node_ip_address()
    marker = Path(folder) / f"{token}.driver"
    try:
        seen = marker.read_text().strip()
    except OSError as exc:
        return NodeAnswer(node_id, host, address, f"cannot read the driver's marker ({exc.strerror or exc})")
    if seen != token:
        return NodeAnswer(node_id, host, address, "sees another folder there (the driver's marker differs)")
    try:
        (Path(folder) / f"{token}.{node_id}").write_text(json.dumps({"host": host, "address": address}))
    except OSError as exc:
        return NodeAnswer(node_id, host, address, f"cannot write there ({exc.strerror or exc})")
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        problem = _server_problem(tracking_uri)
        if problem:
            return NodeAnswer(node_id, host, address, problem)
    return NodeAnswer(node_id, host, address, None)


def _server_problem(tracking_uri: str) -> str | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=10) as reply:
            return None if reply.status == 200 else f"MLflow server {tracking_uri} answered {reply.status}"
    except urllib.error.HTTPError as exc:
        return None if exc.code in (401, 403) else f"MLflow server {tracking_uri} answered {exc.code}"
    except (OSError, ValueError) as exc:
        return f"cannot reach the MLflow server {tracking_uri} ({getattr(exc, 'reason', exc)})"


def _still_alive(node_id: str) -> bool:
    import ray

    return any(n["NodeID"] == node_id and n.get("Alive") for n in ray.nodes())


def check_cluster_sees(root: str | Path, tracking_uri: str | None = None,
                       timeout_s: float = PROBE_TIMEOUT_S) -> list[NodeAnswer]:
    """Probe every alive node of the connected Ray cluster; raise a one-line :class:`InputError` on a problem."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    root = Path(root)
    folder = root / PROBE_DIR
    token = secrets.token_hex(16)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{token}.driver").write_text(token)
    probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(folder), token, n["NodeID"], tracking_uri) for n in nodes]
        ready, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        late = [nodes[refs.index(r)] for r in pending if _still_alive(nodes[refs.index(r)]["NodeID"])]
        if late:
            names = ", ".join(n.get("NodeManagerHostname") or n["NodeManagerAddress"] for n in late)
            raise InputError(root, "runs-dir", f"node {names} did not answer the storage check within "
                                               f"{timeout_s:.0f} s")
        answers = []
        for ref in ready:
            try:
                answers.append(ray.get(ref))
            except ray.exceptions.RayError as exc:
                node = nodes[refs.index(ref)]
                if not _still_alive(node["NodeID"]):
                    continue  # a node that died during the check holds no trial of this sweep
                name = node.get("NodeManagerHostname") or node["NodeManagerAddress"]
                raise InputError(root, "runs-dir", f"node {name} failed the storage check "
                                                   f"({type(exc).__name__})") from None
        for answer in answers:
            problem = answer.problem
            if problem is None and not (folder / f"{token}.{answer.node_id}").exists():
                problem = "writes there do not reach the driver (a node-local folder of the same name)"
            if problem:
                what = "tracking URI" if "MLflow server" in problem else "runs-dir"
                raise InputError(root, what, f"node {answer.host} ({answer.address}): {problem}; every node must "
                                             "see the storage root (a shared filesystem such as NFS, Lustre or "
                                             "EFS mounted at the same path) and reach the tracking server")
        return answers
    finally:
        shutil.rmtree(folder, ignore_errors=True)
