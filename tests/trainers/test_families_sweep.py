"""Allegro and MACE in a real sweep over Cu and Ti: one MLflow run per trial, a driver SIGKILL resumed with
nothing redone, and the export in each family's native files; and the pipeline's second stage for four families."""

from __future__ import annotations

import signal

import pytest

from sweep.trainers.family import get_family
from tests.faults.sweeps import audit_sweep, progress, start_driver, wait_for
from tests.sweeps.conftest import cli

SPACE = """
elements: [Cu, Ti]
task: full
search: {algorithm: grid}
max_failures: 2
studies:
  - model: allegro
    resources: {cpus: 1, gpus: auto}
    params: {num_layers: 1, l_max: 1, num_scalar_features: 8, num_tensor_features: 2,
             scalar_embed_mlp_hidden_layers_width: 8, allegro_mlp_hidden_layers_width: 8,
             readout_mlp_hidden_layers_width: 8, batch_size: 4, max_epochs: 3}
  - model: mace
    resources: {cpus: 1, gpus: auto}
    params: {r_max: 4.0, max_L: 0, num_channels: 8, correlation: 2, num_interactions: 1,
             batch_size: 4, valid_batch_size: 4, max_num_epochs: 3}
"""


@pytest.fixture(scope="module")
def cu_ti_store(tmp_path_factory):
    """The demo's generator on Cu and Ti (classical labels), 10 frames per temperature, ingested."""
    root = tmp_path_factory.mktemp("cu-ti")
    for args in (("data", "generate", "--out", str(root / "archive"), "--elements", "Cu,Ti",
                  "--frames-per-temperature", "10", "--labeller", "classical", "--jobs", "2"),
                 ("data", "ingest", str(root / "archive"), "--store", str(root / "store"))):
        result = cli(*args)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return str(root / "store")


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.skipif(not get_family("mace").python().is_file(), reason="no MACE venv (make .stamps/mace)")
def test_allegro_and_mace_sweep_survives_a_driver_kill_and_exports(cu_ti_store, tmp_path):
    space = tmp_path / "families.yaml"
    space.write_text(SPACE)
    runs, total = tmp_path / "runs", 4
    common = ("--runs-dir", str(runs), "--num-cpus", "2", "--no-live")
    first = start_driver(("run", str(space), "--store", cu_ti_store, "--name", "fam", *common), tmp_path / "d0.log")
    wait_for(first, lambda: progress(runs / "fam")["start"] >= 2, timeout=600, what="two trainings under way")
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = progress(runs / "fam")
    resumed = start_driver(("resume", "fam", *common), tmp_path / "d1.log")
    assert resumed.wait(timeout=1200) == 0, (tmp_path / "d1.log").read_text()[-4000:]

    audit = audit_sweep(runs, "fam", total)
    assert (audit.lost, audit.redone, audit.duplicates, audit.running) == (0, 0, 0, 0), audit
    assert audit.finished == total and killed_at["ledger"] < total

    out = tmp_path / "export"
    result = cli("export", "fam", "--out", str(out), "--runs-dir", str(runs))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for model in ("allegro", "mace"):
        for element in ("Cu", "Ti"):
            names = [p.name for p in (out / model / element).iterdir()]
            for spec in get_family(model).exports:
                assert not spec.required or any(spec.matches(n) for n in names), (model, element, names)
    summary = (out / "summary.md").read_text()
    assert "| Cu | Allegro |" in summary and "| Ti | MACE |" in summary


def test_the_pipelines_second_stage_takes_every_family(tmp_path):
    """A grid space listing all four families: each family's best grid record becomes its own final study."""
    from sweep.tune.ledger import LedgerRecord
    from sweep.tune.pipeline import best_configs, final_space_text
    from sweep.tune.space import parse_space

    space = tmp_path / "four.yaml"
    space.write_text("elements: [Cu]\ntask: grid\nsearch: {algorithm: grid}\nstudies:\n"
                     "  - {model: flare, resources: {cpus: 1}, params: {r_cut: {grid: [4.0, 5.0]}}}\n"
                     "  - {model: nequip, params: {l_max: {grid: [0, 1]}}}\n"
                     "  - {model: allegro, params: {l_max: {grid: [1, 2]}}}\n"
                     "  - {model: mace, params: {max_L: {grid: [0, 1]}}}\n")
    keys = {"flare": "r_cut", "nequip": "l_max", "allegro": "l_max", "mace": "max_L"}
    values = {"flare": (4.0, 5.0), "nequip": (0, 1), "allegro": (1, 2), "mace": (0, 1)}
    records = []
    for model, key in keys.items():
        for value, mae in zip(values[model], (50.0, 40.0)):
            records.append(LedgerRecord(config_hash=f"{model}-{value}", status="finished", model=model, element="Cu",
                                        task="grid", seed=0, params={key: value}, work_dir=str(tmp_path),
                                        metrics={"val_forces_mae": mae, "log_likelihood": 1.0}, finished_at=0.0))
    best = best_configs(records)
    assert sorted(best) == ["allegro/Cu", "flare/Cu", "mace/Cu", "nequip/Cu"]
    final = parse_space(final_space_text(space, best, learning_curve_sizes=(100,)), "final.yaml")
    chosen = {s.model: s.params[keys[s.model]] for s in final.space.studies}
    assert chosen == {model: values[model][1] for model in keys}
