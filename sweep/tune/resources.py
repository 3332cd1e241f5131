"""What each trial asks Ray for, and a refusal up front when no node could ever give it.

What a trial asks for follows its family's record (:mod:`sweep.trainers.family`):

- a family that can use a GPU (accelerator ``gpu`` or ``either``) gets one bundle of
  ``cpus`` CPUs plus one GPU when ``gpus: auto`` and the cluster has a GPU, or the CPUs
  alone otherwise (then it trains on the CPU); ``gpus: 0.25`` asks for a quarter of one,
  so that Ray runs four such trials on one device, each capped at its share of the
  device's memory (:func:`share_gpu_memory`);
- a CPU-only family never gets a GPU; an MPI family (bundle shape ``mpi-ranks``) gets
  ``cpus`` bundles of one CPU packed onto one node (``STRICT_PACK``), and the trial runs
  ``mpiexec`` with that many ranks inside.

A trial that asks for more than any node has would wait forever, with only a warning
(measured with Ray 2.60), so :func:`check_feasible` raises a one-line
:class:`InputError` naming the space file and the key instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sweep.errors import InputError
from sweep.tune.space import LoadedSpace, Study


@dataclass(frozen=True)
class NodeCapacity:
    """One alive Ray node's total CPUs and GPUs."""

    node_id: str
    cpus: float
    gpus: float


@dataclass(frozen=True)
class TrialResources:
    """One study's request: bundles, their strategy, and the CPUs and device the trainer is told."""

    bundles: tuple[dict[str, float], ...]
    strategy: str
    num_cpus: int
    gpus: float

    def factory(self):
        """The :class:`ray.tune.PlacementGroupFactory` for this request."""
        from ray.tune import PlacementGroupFactory

        return PlacementGroupFactory([dict(b) for b in self.bundles], strategy=self.strategy)

    def as_dict(self) -> dict[str, Any]:
        """A plain description, for logs and the ledger."""
        return {"bundles": [dict(b) for b in self.bundles], "strategy": self.strategy,
                "num_cpus": self.num_cpus, "gpus": self.gpus}


def cluster_nodes() -> list[NodeCapacity]:
    """Alive nodes of the connected Ray cluster."""
    import ray

    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        res = node.get("Resources", {})
        nodes.append(NodeCapacity(node["NodeID"], float(res.get("CPU", 0)), float(res.get("GPU", 0))))
    return nodes


def trial_resources(study: Study, nodes: list[NodeCapacity]) -> TrialResources:
    """The request of one trial of ``study`` on a cluster of ``nodes``."""
    from sweep.trainers.family import get_family

    family = get_family(study.model)
    cpus = study.resources.cpus
    gpus = study.resources.gpus
    if gpus == "auto":
        gpus = 1.0 if any(n.gpus >= 1 for n in nodes) else 0.0
    if family.accelerator == "cpu":
        gpus = 0.0
    if family.bundle == "mpi-ranks":
        return TrialResources(tuple({"CPU": 1.0} for _ in range(cpus)), "STRICT_PACK", cpus, 0.0)
    bundle = {"CPU": float(cpus)}
    if gpus:
        bundle["GPU"] = float(gpus)
    return TrialResources((bundle,), "PACK", cpus, float(gpus))


def check_feasible(loaded: LoadedSpace, nodes: list[NodeCapacity]) -> dict[int, TrialResources]:
    """Each study's request, after checking that some node can hold one trial of it."""
    if not nodes:
        raise InputError("ray", "nodes", "the Ray cluster has no alive node")
    out = {}
    max_cpus = max(n.cpus for n in nodes)
    max_gpus = max(n.gpus for n in nodes)
    for i, study in enumerate(loaded.space.studies):
        request = trial_resources(study, nodes)
        need_cpus = sum(b.get("CPU", 0) for b in request.bundles)
        need_gpus = sum(b.get("GPU", 0) for b in request.bundles)
        if not any(n.cpus >= need_cpus and n.gpus >= need_gpus for n in nodes):
            if need_gpus > max_gpus:
                raise InputError(loaded.source, f"studies[{i}].resources.gpus",
                                 f"{need_gpus:g} GPU per trial, but the largest node has {max_gpus:g} "
                                 "(Ray would wait forever); use gpus: auto or 0")
            raise InputError(loaded.source, f"studies[{i}].resources.cpus",
                             f"{need_cpus:g} CPUs per trial on one node, but the largest node has {max_cpus:g} "
                             "(Ray would wait forever)")
        out[i] = request
    return out


def share_gpu_memory(gpus: float, device: str) -> float | None:
    """Cap this process's CUDA memory at its share of the GPU when it was given a fraction of one.

    Ray packs trials of ``gpus: 0.25`` four to a device but does not divide its memory; the
    cap (``torch.cuda.set_per_process_memory_fraction``) makes a trial that outgrows its
    share fail on its own instead of starving the trials beside it. Returns the cap, or
    None when none applies (the CPU, or a whole GPU).
    """
    if device != "cuda" or not 0 < gpus < 1:
        return None
    import torch

    torch.cuda.set_per_process_memory_fraction(float(gpus), torch.cuda.current_device())
    return float(gpus)


def trial_device(gpus: float) -> str:
    """``cuda`` when this trial was given a GPU that torch can use, else ``cpu``.

    A node may advertise a GPU resource that is not a usable device (a simulated node,
    a driver mismatch); the trial then trains on the CPU rather than failing.
    """
    if not gpus:
        return "cpu"
    import ray

    if not ray.get_gpu_ids():
        return "cpu"
    try:
        import torch
    except ImportError:
        return "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"
