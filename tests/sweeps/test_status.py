"""``ls``, ``status`` and the notebook API on real small sweeps: finished, running, and killed."""

from __future__ import annotations

import json
import signal
import time

import pytest

from sweep import open_sweep
from sweep.errors import InputError
from tests.faults.sweeps import start_driver, wait_for
from tests.sweeps.conftest import cli, write_space

SPACE = """
elements: [Cu]
task: grid
search: {algorithm: grid}
studies:
  - model: flare
    resources: {cpus: 1}
    params: {r_cut: {grid: [3.5, 4.0]}, n_max: 2, l_max: 1, sparse_per_frame: 2, block_size: 6, maxiter: 10}
"""

SLOW_SPACE = """
elements: [Cu, Au]
task: full
search: {algorithm: grid}
studies:
  - model: flare
    resources: {cpus: 1}
    params: {r_cut: {grid: [4.0, 4.5]}, n_max: 4, l_max: 2, sparse_per_frame: 6, block_size: 4, optimize_every: 4,
             maxiter: 50}
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory, sweep_store):
    from sweep.tune.runner import run_sweep

    root = tmp_path_factory.mktemp("status")
    space = write_space(root, SPACE, "st.yaml")
    summary = run_sweep(space, sweep_store, runs_dir=root / "runs", num_cpus=2, live=False)
    assert summary.complete
    return root / "runs", summary


def test_trials_best_and_history_of_a_finished_sweep(finished):
    runs, summary = finished
    sweep = open_sweep("st", runs_dir=runs)
    table = sweep.trials()
    assert len(table) == 2 and set(table["status"]) == {"finished"}
    assert sorted(table["params.r_cut"]) == [3.5, 4.0] and set(table["element"]) == {"Cu"}
    assert table["val_forces_mae"].gt(0).all() and table["mlflow_run_id"].notna().all()
    assert table["node"].notna().all()
    best = sweep.best("Cu", "flare")
    assert best.metrics["val_forces_mae"] == table["val_forces_mae"].min()
    history = sweep.history()
    assert set(history["config_hash"]) == set(table["config_hash"])
    assert (history.groupby("config_hash")["step"].apply(list).map(sorted) == history.groupby("config_hash")["step"]
            .apply(list)).all()
    assert open_sweep(runs / "st").name == "st"  # a folder works as well as a name
    with pytest.raises(InputError, match="no sweep 'nope'.*present: st"):
        open_sweep("nope", runs_dir=runs)


def test_ls_and_status_of_a_finished_sweep(finished):
    runs, _ = finished
    listing = cli("ls", "--runs-dir", str(runs), "--json")
    assert listing.returncode == 0, listing.stderr
    assert json.loads(listing.stdout) == [{"name": "st", "space": "st.yaml", "created": pytest.approx(time.time(), abs=3600),
                                          "state": "finished", "done": 2, "total": 2}]
    status = cli("status", "st", "--runs-dir", str(runs), "--json")
    report = json.loads(status.stdout)
    assert report["driver"] == "finished" and report["counts"]["finished"] == 2 and report["counts"]["pending"] == 0
    (group,) = report["groups"]
    assert (group["model"], group["element"], group["task"]) == ("flare", "Cu", "grid")
    assert group["best"] > 0 and group["best_config"]["r_cut"] in (3.5, 4.0)
    assert report["compute_s"] > 0 and report["resume_command"] is None
    text = cli("status", "st", "--runs-dir", str(runs))
    assert text.returncode == 0 and "2 of 2 configurations done" in " ".join(text.stdout.split())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_status_while_a_sweep_runs_and_after_its_driver_is_killed(tmp_path, sweep_store):
    from sweep.tune.processes import kill_leftovers

    space = write_space(tmp_path, SLOW_SPACE, "slow.yaml")
    runs = tmp_path / "runs"
    driver = start_driver(("run", str(space), "--store", sweep_store, "--runs-dir", str(runs), "--num-cpus", "2",
                           "--no-live"), tmp_path / "driver.log")

    def report() -> dict:
        done = cli("status", "slow", "--runs-dir", str(runs), "--json", timeout=120)
        return json.loads(done.stdout) if done.returncode == 0 else {}

    try:
        wait_for(driver, lambda: report().get("counts", {}).get("running", 0) >= 1, timeout=300,
                 what="a running trial in `status`")
        live = report()
        assert live["driver"] == "running" and live["resume_command"] is None
        assert live["counts"]["running"] + live["counts"]["finished"] + live["counts"]["pending"] == 4
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        wait_for(None, lambda: report().get("driver") == "interrupted" and report()["counts"]["running"] == 0,
                 timeout=120, what="`status` to see the kill")
        after = report()
        assert after["resume_command"] == f"tm23-sweep resume slow --runs-dir {runs}"
        text = cli("status", "slow", "--runs-dir", str(runs))
        assert "interrupted" in text.stdout and "tm23-sweep resume slow" in " ".join(text.stdout.split())
    finally:
        if driver.poll() is None:
            driver.kill()
        kill_leftovers(runs / "slow")
