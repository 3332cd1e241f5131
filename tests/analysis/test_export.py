"""Export of the best model per element and model: layout, native files, summary, atomicity.

The model files are the synthetic runs' placeholder artifacts; the end-to-end test that trains
the exported NequIP YAML and reloads the FLARE JSON lives with the pipeline.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from sweep.analysis.export import export_best
from sweep.analysis.runs import load_runs
from sweep.errors import InputError

from .synthetic import (FLARE_HYPERPARAMETERS, descriptor_dimension, flare_params, native_placeholders,
                        nequip_params, num_weights, scores)

ELEMENTS = ("Au", "Cu", "Os", "Ti")


@pytest.fixture(scope="module")
def exported(synthetic_sweep, tmp_path_factory):
    runs = load_runs(synthetic_sweep.name, tracking_uri=synthetic_sweep.uri)
    out = tmp_path_factory.mktemp("export") / "best"
    return runs, export_best(runs, out)


def test_one_folder_per_element_and_model_with_the_native_files(exported):
    runs, result = exported
    out = result.out
    assert sorted(p.name for p in out.iterdir()) == ["flare", "manifest.json", "nequip", "summary.csv", "summary.md"]
    for element in ELEMENTS:
        nequip, flare = out / "nequip" / element, out / "flare" / element
        assert sorted(p.name for p in nequip.iterdir()) == [
            "config.yaml", "metrics.json", "model.nequip.zip", "train.xyz", "val.xyz"]
        assert sorted(p.name for p in flare.iterdir()) == ["flare_sgp.json", "lmp.flare", "metrics.json", "settings.yaml"]
        # copied byte for byte from the run's export/ artifact
        for model, folder in (("nequip", nequip), ("flare", flare)):
            for name, data in native_placeholders(model, element).items():
                if name != "config.yaml":
                    assert (folder / name).read_bytes() == data
        # the NequIP config names the copied data files, where the run's named its own work folder
        config = yaml.safe_load((nequip / "config.yaml").read_text())
        assert config["data"]["train_file_path"] == str(nequip.resolve() / "train.xyz")
        assert config["data"]["val_file_path"] == str(nequip.resolve() / "val.xyz")
        assert config["model_type_names"] == [element] and config["data"]["ase_args"] == {"format": "extxyz"}
    assert not list(out.parent.glob(".best.*"))  # no temporary folder left beside it


def test_exported_runs_are_the_full_trainings_of_the_best_grid_configs(exported):
    runs, result = exported
    manifest = json.loads((result.out / "manifest.json").read_text())
    assert len(manifest["models"]) == 8
    table = runs.table.set_index("run_id")
    for entry in manifest["models"]:
        run = table.loc[entry["run_id"]]
        assert (run["element"], run["model"], run["task"]) == (entry["element"], entry["model"], "full")
        grid = runs.table[(runs.table["element"] == entry["element"]) & (runs.table["model"] == entry["model"])
                          & (runs.table["task"] == "grid")]
        best_grid = grid.sort_values("val_forces_mae").iloc[0]
        # the config hash covers the task: the full run matches the best grid run by hyperparameters
        assert run["params.l_max"] == best_grid["params.l_max"] != grid["params.l_max"].min()
        record = json.loads((result.out / entry["folder"] / "metrics.json").read_text())
        assert record["task"] == "full" and record["element"] == entry["element"]


def test_flare_settings_yaml_names_descriptor_cutoff_basis_zeta_and_hyperparameters(exported):
    runs, result = exported
    settings = yaml.safe_load((result.out / "flare" / "Cu" / "settings.yaml").read_text())
    expected = flare_params(5.0, 3)  # the better of the two synthetic configs
    assert {k: settings[k] for k in ("descriptor", "r_cut", "n_max", "l_max", "zeta")} == {
        k: expected[k] for k in ("descriptor", "r_cut", "n_max", "l_max", "zeta")}
    assert settings["n_descriptors"] == descriptor_dimension(6, 3)
    assert settings["optimised_hyperparameters"] == FLARE_HYPERPARAMETERS
    assert settings["trained_with"] == expected  # the initial σ = 2.0 among them; no counts or resources
    assert settings["files"] == {"sgp_json": "flare_sgp.json", "lammps_mapped": "lmp.flare"}
    assert settings["source"]["task"] == "full"
    assert isinstance(settings["log_likelihood"], float)


def test_summary_is_table_1(exported):
    runs, result = exported
    summary = pd.read_csv(result.out / "summary.csv")
    assert len(summary) == 8
    assert sorted(zip(summary["element"], summary["model"])) == sorted(
        (e, m) for e in ELEMENTS for m in ("flare", "nequip"))
    flare = summary[summary["model"] == "flare"]
    nequip = summary[summary["model"] == "nequip"]
    assert (flare["descriptor"] == "B2").all() and (flare["n_descriptors"] == descriptor_dimension(6, 3)).all()
    assert (nequip["n_weights"] == num_weights(2, 2)).all()
    assert nequip["n_descriptors"].isna().all() and flare["n_weights"].isna().all()
    for column in ("train_seconds", "test_energy_mae", "test_energy_pct", "test_forces_mae", "test_forces_pct",
                   "test_stress_mae", "test_stress_pct"):
        assert summary[column].notna().all() and (summary[column] > 0).all()
    table = runs.table.set_index("run_id")
    for _, row in summary.iterrows():
        assert row["test_forces_mae"] == pytest.approx(table.loc[row["run_id"], "test_forces_mae"], rel=1e-5)
    markdown = (result.out / "summary.md").read_text()
    assert markdown.startswith("| Element | Model | Descriptor | Descriptor dim. | Weights | Training time |")
    assert markdown.count("\n| ") == 8  # a row per model, below the header and separator
    assert "| Au | FLARE | B2 | 84 |" in markdown


def test_a_failed_export_leaves_the_old_folder_untouched(synthetic_sweep, exported, tmp_path):
    _, result = exported
    sweep = synthetic_sweep.sibling("export-broken")
    sweep.log("Au", "nequip", "full", nequip_params(1), scores("Au", "nequip"))
    sweep.log("Cu", "nequip", "full", nequip_params(1), scores("Cu", "nequip"), artifacts=False)  # no export/
    runs = load_runs(sweep.name, tracking_uri=sweep.uri)
    out = tmp_path / "best"
    out.mkdir()
    (out / "manifest.json").write_text("{}")  # a previous export
    (out / "keep.txt").write_text("old")
    with pytest.raises(InputError, match=r"run \w+: artifacts/export: no exported model files"):
        export_best(runs, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]  # no half-built sibling
    assert (out / "keep.txt").read_text() == "old"
    # a folder that is not an export is never replaced
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="is not a tm23-sweep export folder"):
        export_best(runs, stranger)
    assert (stranger / "thesis.tex").read_text() == "precious"


def test_export_command_rewrites_a_previous_export(synthetic_sweep, exported, tmp_path):
    from typer.testing import CliRunner

    from sweep.cli.analysis import app

    _, result = exported
    out = tmp_path / "again"
    for _ in range(2):  # the second run replaces the first export whole
        cli = CliRunner().invoke(app, ["export", synthetic_sweep.name, "--tracking-uri", synthetic_sweep.uri,
                                       "--out", str(out)])
        assert cli.exit_code == 0, cli.output
    assert "exported 8 models" in cli.output
    assert (out / "summary.csv").read_bytes() == (result.out / "summary.csv").read_bytes()


@pytest.mark.parametrize("tag, value", [("element", "../../root/.ssh"), ("model", "../x"), ("task", "full/../..")])
def test_a_run_with_a_forged_tag_never_becomes_a_path(tmp_path, tag, value):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("forged", artifact_location=(tmp_path / "artifacts").as_uri())
    tags = {"element": "Cu", "model": "flare", "task": "full", "config_hash": "abc", "trial_id": "t"}
    run = client.create_run(experiment, tags={**tags, tag: value})
    client.log_metric(run.info.run_id, "val_forces_mae", 1.0)
    client.set_terminated(run.info.run_id)
    with pytest.raises(InputError, match=f"run {run.info.run_id}: tags.{tag}: "):
        load_runs("forged", tracking_uri=uri)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlruns.db"]  # nothing written anywhere
