"""Several nodes (ray.cluster_utils.Cluster): NequIP trials go to the GPU node, FLARE's ranks share one node."""

from __future__ import annotations

import pytest

from tests.sweeps.conftest import mlflow_runs, write_space

SPACE = """
task: full
search: {algorithm: grid}
studies:
  - model: nequip
    elements: [Cu]
    export: false
    resources: {cpus: 1, gpus: auto}
    params:
      l_max: {grid: [0, 1]}
      num_layers: 1
      num_features: 4
      max_epochs: 2
  - model: flare
    elements: [Cu, Au]
    resources: {cpus: 2}
    params:
      r_cut: 4.0
      n_max: 3
      l_max: 1
      sparse_per_frame: 3
      block_size: 12
      optimize_every: 0
      maxiter: 10
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_trials_land_where_their_resources_are(tmp_path, sweep_store, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    from sweep.tune.runner import run_sweep

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the sweep's own sqlite store
    space = write_space(tmp_path, SPACE, "nodes.yaml")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    # a node that advertises one GPU; this machine has none, so its trials must still run (on CPU)
    gpu_node = cluster.add_node(num_cpus=2, num_gpus=1)
    cluster.wait_for_nodes()
    try:
        summary = run_sweep(space, sweep_store, runs_dir=tmp_path / "runs", address=cluster.address, live=False)
    finally:
        ray.shutdown()
        cluster.shutdown()

    assert summary.complete and not summary.errors
    records = {(r.model, r.element, r.params.get("l_max")): r for r in summary.records}
    assert len(records) == 4
    for r in summary.records:
        if r.model == "nequip":
            assert r.node["node_id"] == gpu_node.node_id  # the only node with a GPU
            assert r.node["gpu_ids"] == ["0"]
            assert r.node["device"] == "cpu"  # advertised, but torch sees no CUDA device here
        else:
            assert len(r.node["bundles"]) == 2 and all(b == {"CPU": 1.0} for b in r.node["bundles"])
            assert len(r.node["bundle_nodes"]) == 1  # both ranks' CPUs on one node
            assert r.node["bundle_nodes"] == [r.node["node_id"]]
            assert r.info["parallel"]["ranks"] == 2  # mpiexec ran one rank per CPU of the trial
    df = mlflow_runs(tmp_path / "runs", "nodes")
    assert len(df) == 4 and set(df["status"]) == {"FINISHED"}
    assert set(df["params.gpus"]) == {"1.0", "0.0"}
