"""Loading a sweep's runs from MLflow: finished runs only, one per trial, params typed."""

from __future__ import annotations

import pytest

from sweep.analysis.runs import load_runs, parse_param, tracking_uri_for
from sweep.errors import InputError

from .synthetic import flare_params, nequip_params


def test_table_has_one_row_per_finished_trial_with_typed_params(synthetic_sweep):
    sweep = synthetic_sweep.sibling("runs-table")
    first = sweep.log("Au", "flare", "grid", flare_params(5.0, 3), {"val_forces_mae": 30.0}, artifacts=False, trial=1)
    # a restored trial logged again (Ray's MLflow callback does this): the later run wins
    again = sweep.log("Au", "flare", "grid", flare_params(5.0, 3), {"val_forces_mae": 29.0}, artifacts=False, trial=1)
    sweep.log("Au", "flare", "grid", flare_params(4.0, 2), {"val_forces_mae": 99.0}, artifacts=False, status="FAILED")
    sweep.log("Au", "nequip", "learning-curve:300", {**nequip_params(1), "parity": True}, {"test_forces_mae": 12.0},
              artifacts=False)
    runs = load_runs(sweep.name, tracking_uri=sweep.uri)
    table = runs.table
    assert len(table) == 2
    assert first not in set(table["run_id"]) and again in set(table["run_id"])
    flare = table[table["model"] == "flare"].iloc[0]
    assert flare["val_forces_mae"] == 29.0
    assert flare["params.r_cut"] == 5.0 and flare["params.l_max"] == 3 and flare["params.descriptor"] == "B2"
    assert flare["params.n_d"] == 84 and isinstance(flare["params.n_d"], int)  # not made a float by NequIP's gap
    nequip = table[table["model"] == "nequip"].iloc[0]
    assert nequip["n_frames"] == 300 and nequip["params.parity"] is True
    assert table.loc[table["model"] == "flare", "n_frames"].isna().all()
    # hyperparameters are told apart from the counts, resources and model facts logged beside them
    from sweep.analysis.runs import hyperparameters

    assert hyperparameters(flare) == flare_params(5.0, 3)
    assert "n_train" not in hyperparameters(nequip) and "num_weights" not in hyperparameters(nequip)
    assert hyperparameters(nequip)["l_max"] == 1


def test_unknown_sweep_and_missing_store_are_input_errors(synthetic_sweep, tmp_path):
    with pytest.raises(InputError, match="no sweep named 'nope'; known: .*demo-sweep"):
        load_runs("nope", tracking_uri=synthetic_sweep.uri)
    with pytest.raises(InputError, match="no MLflow database there"):
        load_runs("demo-sweep", runs_dir=tmp_path / "elsewhere")
    assert not (tmp_path / "elsewhere").exists()  # nothing created at a mistyped path
    empty = synthetic_sweep.sibling("empty-sweep")
    with pytest.raises(InputError, match="has no finished runs"):
        load_runs(empty.name, tracking_uri=empty.uri)


def test_tracking_uri_is_the_flag_else_the_sweeps_own(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri_for(None, "sqlite:///x.db") == "sqlite:///x.db"
    assert tracking_uri_for(tmp_path, None) == f"sqlite:///{tmp_path.absolute()}/mlruns.db"
    assert tracking_uri_for(None, None).endswith("/runs/mlruns.db")
    # as for the sweeps themselves, the environment names the store when no URI is given
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert tracking_uri_for(tmp_path, None) == "http://tracking:5000"
    assert tracking_uri_for(None, "sqlite:///x.db") == "sqlite:///x.db"


def test_param_strings_parse_back():
    assert [parse_param(v) for v in ("3", "4.5", "True", "False", "None", "B2", "1e-05", "[64, 32]")] == [
        3, 4.5, True, False, None, "B2", 1e-05, "[64, 32]"]
