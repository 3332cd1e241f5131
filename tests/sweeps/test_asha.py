"""ASHA per group: stopped trials are recorded, and a sweep that starts over runs none of them again."""

from __future__ import annotations

import json

import pytest

from tests.sweeps.conftest import cli, mlflow_runs, write_space

SPACE = """
elements: [Cu]
task: full
search: {algorithm: grid, max_concurrent_trials: 1}
scheduler: {kind: asha, grace_period: 1, reduction_factor: 2, max_t: 100}
studies:
  - model: flare
    resources: {cpus: 1}
    params:
      r_cut: {grid: [4.0, 3.0, 5.5, 3.5, 5.0, 4.5]}
      n_max: 3
      l_max: 1
      sparse_per_frame: 3
      block_size: 4
      optimize_every: 8
      maxiter: 20
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_asha_stops_are_final(tmp_path, sweep_store):
    space = write_space(tmp_path, SPACE, "asha.yaml")
    runs = tmp_path / "runs"
    args = ("run", str(space), "--store", sweep_store, "--runs-dir", str(runs), "--num-cpus", "2", "--no-live")
    out = cli(*args)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep_dir = runs / "asha"
    ledger = {p.stem: json.loads(p.read_text()) for p in (sweep_dir / "ledger").glob("*.json")}
    assert len(ledger) == 6
    stopped = {h for h, r in ledger.items() if r["status"] == "stopped"}
    assert stopped and len(stopped) < 6  # ASHA stopped some, not all
    counts = {h: json.loads((sweep_dir / "work" / h / "trainings.json").read_text()) for h in ledger}
    for h in ledger:
        assert len(counts[h]["starts"]) == 1
        assert len(counts[h]["ends"]) == (0 if h in stopped else 1)
    # a stopped trial keeps the training seconds it spent, fewer than any trial that trained to the end
    spent = {h: r["metrics"]["train_seconds"] for h, r in ledger.items()}
    assert all(spent[h] > 0 for h in ledger)
    assert max(spent[h] for h in stopped) < min(spent[h] for h in ledger if h not in stopped)

    df = mlflow_runs(runs, "asha")
    assert len(df) == 6 and set(df["status"]) == {"FINISHED"}
    flagged = set(df.loc[df["tags.stopped_early"] == "true", "tags.config_hash"]) if "tags.stopped_early" in df else set()
    assert flagged == stopped

    # Tune's own state lost (as after a kill before its first snapshot): the sweep starts
    # over, and every configuration, stopped ones included, comes from the ledger
    for state in sweep_dir.glob("experiment_state-*.json"):
        state.unlink()
    again = cli(*args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert {h: json.loads((sweep_dir / "work" / h / "trainings.json").read_text()) for h in ledger} == counts
    assert len(mlflow_runs(runs, "asha")) == 6
