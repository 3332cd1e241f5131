"""A real sweep on 2 CPUs: FLARE and NequIP on Cu and Au, one MLflow run per trial; a re-run trains nothing."""

from __future__ import annotations

import json
import math

import pytest

from tests.sweeps.conftest import cli, mlflow_runs, write_space

SPACE = """
description: FLARE and NequIP on Cu and Au, tiny.
elements: [Cu, Au]
task: full
search: {algorithm: grid}
studies:
  - model: flare
    resources: {cpus: 1}
    params:
      r_cut: {grid: [4.0, 4.5]}
      n_max: 3
      l_max: 1
      sparse_per_frame: 3
      block_size: 6
      optimize_every: 12
      maxiter: 20
  - model: nequip
    export: false
    resources: {cpus: 1, gpus: auto}
    params:
      l_max: {grid: [0, 1]}
      num_layers: 2
      num_features: 4
      max_epochs: 3
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sweep_logs_one_run_per_trial_and_reruns_nothing(tmp_path, sweep_store):
    from mlflow.tracking import MlflowClient

    space = write_space(tmp_path, SPACE, "tiny.yaml")
    runs = tmp_path / "runs"
    args = ("run", str(space), "--store", sweep_store, "--runs-dir", str(runs), "--num-cpus", "2", "--no-live")
    out = cli(*args)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "8 configurations in the ledger, 8 trials, 0 failed" in " ".join(out.stdout.split())

    sweep_dir = runs / "tiny"
    trial_ids = {p.name for p in sweep_dir.iterdir() if p.is_dir() and (p / "params.json").exists()}
    ledger = [json.loads(p.read_text()) for p in (sweep_dir / "ledger").glob("*.json")]
    df = mlflow_runs(runs, "tiny")
    assert len(trial_ids) == len(ledger) == len(df) == 8
    assert set(df["status"]) == {"FINISHED"}
    assert set(df["tags.trial_id"]) == trial_ids
    assert set(df["tags.config_hash"]) == {r["config_hash"] for r in ledger}
    assert set(df["run_id"]) == {r["mlflow_run_id"] for r in ledger}
    assert set(df["tags.sweep"]) == {"tiny"} and set(df["tags.task"]) == {"full"}
    assert sorted(zip(df["tags.model"], df["tags.element"])) == sorted(
        [(m, e) for m in ("flare", "nequip") for e in ("Cu", "Au")] * 2)
    for stat in ("energy", "forces", "stress"):
        values = df[f"metrics.test_{stat}_pct"]
        assert all(math.isfinite(v) and v > 0 for v in values)
    assert all(df["metrics.train_seconds"] > 0)

    client = MlflowClient(f"sqlite:///{runs / 'mlruns.db'}")
    for _, row in df.iterrows():
        steps = sorted({m.step for m in client.get_metric_history(row.run_id, "val_forces_mae")})
        artifacts = {a.path for a in client.list_artifacts(row.run_id)}
        assert {"metrics.json", "predictions.npz", "config.json"} <= artifacts
        if row["tags.model"] == "nequip":
            assert steps == [1, 2, 3]  # one point per epoch
            assert int(row["params.num_weights"]) > 0 and row["params.l_max"] in ("0", "1")
            assert "model" in artifacts
        else:
            assert steps == [6, 12, 18, 24]  # one point per block of frames added
            assert int(row["params.n_d"]) > 0 and row["params.r_cut"] in ("4.0", "4.5")
            exported = {a.path for a in client.list_artifacts(row.run_id, "export")}
            assert "export/flare_sgp.json" in exported

    starts = {p.parent.name: json.loads(p.read_text())["starts"] for p in (sweep_dir / "work").glob("*/trainings.json")}
    assert len(starts) == 8 and all(len(s) == 1 for s in starts.values())

    # the same command again continues the (finished) sweep: nothing trains, no new run
    again = cli(*args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    after = {p.parent.name: json.loads(p.read_text())["starts"] for p in (sweep_dir / "work").glob("*/trainings.json")}
    assert after == starts
    df2 = mlflow_runs(runs, "tiny")
    assert len(df2) == 8 and set(df2["status"]) == {"FINISHED"}

    # another space under the same name is refused, naming the file and the key
    other = write_space(tmp_path, SPACE.replace("max_epochs: 3", "max_epochs: 4"), "other.yaml")
    refused = cli("run", str(other), "--store", sweep_store, "--runs-dir", str(runs), "--name", "tiny")
    assert refused.returncode == 2
    assert refused.stderr.strip().startswith(f"error: {other}: name: sweep 'tiny'")


def test_bad_inputs_exit_2_before_ray_starts(tmp_path, sweep_store):
    bad = write_space(tmp_path, "studies: [{model: flare, elements: [Cu], params: {r_cut: {grid: []}}}]\n", "bad.yaml")
    out = cli("run", str(bad), "--store", sweep_store, "--runs-dir", str(tmp_path / "runs"))
    assert out.returncode == 2
    assert out.stderr.strip() == (f"error: {bad}: studies[0].params.r_cut.grid: "
                                  "List should have at least 1 item after validation, not 0")
    os_space = write_space(tmp_path, "studies: [{model: flare, elements: [Os]}]\n", "os.yaml")
    out = cli("run", str(os_space), "--store", sweep_store, "--runs-dir", str(tmp_path / "runs"))
    assert out.returncode == 2 and "element: Os not in the store (present: Cu, Au)" in out.stderr
    out = cli("resume", "nothing", "--runs-dir", str(tmp_path / "runs"))
    assert out.returncode == 2 and "no sweep 'nothing'" in out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("*/sweep.json"))
