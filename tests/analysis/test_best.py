"""Best config per element and model: lowest validation force MAE, FLARE ties by likelihood."""

from __future__ import annotations

import pandas as pd

from sweep.analysis.best import final_runs, select_best
from sweep.analysis.runs import tidy


def runs(rows):
    """A tidy table from short dicts: element, model, task, config (a letter), metrics.

    As in a real sweep the config hash covers the task, so a grid run and the full run of the
    same configuration share their hyperparameters (here ``l_max``), not their hash.
    """
    records = []
    for i, r in enumerate(rows):
        task = r.get("task", "grid")
        rec = {"run_id": f"run{i}", "status": r.get("status", "FINISHED"), "end_time": i, "experiment": "s",
               "trial_id": f"t{i:03d}", "config_hash": f"{task}-{r['config']}", "element": r.get("element", "Au"),
               "model": r["model"], "task": task, "params.l_max": ord(r["config"]) - ord("a"),
               "params.n_train": 20 if task == "grid" else 270}
        rec.update({k: v for k, v in r.items() if k.startswith(("val_", "test_", "log_", "stopped_"))})
        records.append(rec)
    return tidy(records)


def test_lowest_validation_force_mae_wins():
    table = runs([
        {"model": "nequip", "config": "a", "val_forces_mae": 30.0, "test_forces_mae": 10.0},
        {"model": "nequip", "config": "b", "val_forces_mae": 20.0, "test_forces_mae": 50.0},
        {"model": "nequip", "config": "c", "val_forces_mae": 25.0},
        {"model": "nequip", "config": "d", "val_forces_mae": 1.0, "status": "FAILED"},
        {"model": "nequip", "config": "e", "val_forces_mae": 2.0, "task": "full"},
    ])
    best = select_best(table)
    assert best["config_hash"].tolist() == ["grid-b"]
    assert best.iloc[0]["selection"] == "lowest val_forces_mae over 3 grid runs"


def test_flare_ties_go_to_the_higher_likelihood_but_nequip_ties_do_not():
    rows = []
    for model in ("flare", "nequip"):
        rows += [
            {"model": model, "config": "a", "val_forces_mae": 20.00, "log_likelihood": 10.0},
            {"model": model, "config": "b", "val_forces_mae": 20.10, "log_likelihood": 50.0},  # within 1%
            {"model": model, "config": "c", "val_forces_mae": 21.00, "log_likelihood": 99.0},  # not tied
        ]
    best = select_best(runs(rows)).set_index("model")
    assert best.loc["flare", "config_hash"] == "grid-b"
    assert "tie broken by highest log_likelihood" in best.loc["flare", "selection"]
    assert best.loc["nequip", "config_hash"] == "grid-a"
    # with no tolerance there is no tie: the lowest MAE wins for FLARE too
    assert select_best(runs(rows), tie_rtol=0.0).set_index("model").loc["flare", "config_hash"] == "grid-a"


def test_the_likelihood_may_come_from_the_model_info_params():
    table = runs([{"model": "flare", "config": "a", "val_forces_mae": 20.0},
                  {"model": "flare", "config": "b", "val_forces_mae": 20.1}])
    table["params.log_likelihood"] = [5.0, 7.0]  # the sweep logs the model's info as params too
    assert select_best(table).iloc[0]["config_hash"] == "grid-b"


def test_validation_missing_falls_back_to_test_mae():
    table = runs([{"model": "flare", "config": "a", "test_forces_mae": 9.0},
                  {"model": "flare", "config": "b", "test_forces_mae": 4.0}])
    best = select_best(table)
    assert best.iloc[0]["config_hash"] == "grid-b" and "test_forces_mae" in best.iloc[0]["selection"]


def test_the_exported_run_is_the_full_training_of_the_best_grid_config():
    table = runs([
        {"element": "Au", "model": "nequip", "config": "a", "val_forces_mae": 30.0},
        {"element": "Au", "model": "nequip", "config": "b", "val_forces_mae": 20.0},
        {"element": "Au", "model": "nequip", "config": "a", "task": "full", "val_forces_mae": 5.0},
        {"element": "Au", "model": "nequip", "config": "b", "task": "full", "val_forces_mae": 9.0},
        # only a grid search: the best grid run itself
        {"element": "Cu", "model": "flare", "config": "x", "val_forces_mae": 3.0},
        {"element": "Cu", "model": "flare", "config": "y", "val_forces_mae": 4.0},
        # only full runs: the best of them
        {"element": "Ti", "model": "flare", "config": "p", "task": "full", "val_forces_mae": 7.0},
        {"element": "Ti", "model": "flare", "config": "q", "task": "full", "val_forces_mae": 6.0},
        # learning curves alone are never exported
        {"element": "Os", "model": "nequip", "config": "z", "task": "learning-curve:100", "val_forces_mae": 1.0},
    ])
    final = final_runs(table).set_index(["element", "model"])
    assert sorted(final.index) == [("Au", "nequip"), ("Cu", "flare"), ("Ti", "flare")]
    au = final.loc[("Au", "nequip")]
    assert (au["task"], au["config_hash"]) == ("full", "full-b")
    assert au["best_grid_run"] == "run1"
    assert au["selection"].startswith("full training of the best grid config")
    assert (final.loc[("Cu", "flare"), "task"], final.loc[("Cu", "flare"), "config_hash"]) == ("grid", "grid-x")
    assert (final.loc[("Ti", "flare"), "task"], final.loc[("Ti", "flare"), "config_hash"]) == ("full", "full-q")
    assert pd.isna(final.loc[("Ti", "flare"), "best_grid_run"])


def test_trials_stopped_early_compete_only_when_nothing_was_fully_trained():
    table = runs([
        {"model": "nequip", "config": "a", "val_forces_mae": 5.0, "stopped_early": True},  # a lucky early rung
        {"model": "nequip", "config": "b", "val_forces_mae": 20.0},
        {"model": "nequip", "config": "c", "val_forces_mae": 15.0, "element": "Cu", "stopped_early": True},
    ])
    best = select_best(table).set_index("element")
    assert best.loc["Au", "config_hash"] == "grid-b"
    assert best.loc["Cu", "config_hash"] == "grid-c"  # only stopped trials: the best of them
