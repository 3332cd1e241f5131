"""A real sweep → `tm23-sweep export` → the exported NequIP YAML trains under nequip-train, the FLARE JSON reloads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.sweeps.conftest import cli, write_space

SPACE = """
description: one FLARE and one NequIP configuration on Cu, exported.
elements: [Cu]
task: full
search: {algorithm: grid}
studies:
  - model: flare
    resources: {cpus: 1}
    params: {r_cut: 4.0, n_max: 3, l_max: 1, sparse_per_frame: 3, block_size: 9, optimize_every: 0, maxiter: 10}
  - model: nequip
    resources: {cpus: 1, gpus: auto}
    params: {l_max: 0, num_layers: 1, num_features: 4, max_epochs: 2}
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_exported_models_run_in_their_own_tools(tmp_path, sweep_store):
    from flare.bffs.sgp import SGP_Wrapper

    from sweep.data import FrameStore

    runs, out = tmp_path / "runs", tmp_path / "export"
    space = write_space(tmp_path, SPACE, "exp.yaml")
    ran = cli("run", str(space), "--store", sweep_store, "--runs-dir", str(runs), "--num-cpus", "2", "--no-live")
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    exported = cli("export", "exp", "--out", str(out), "--runs-dir", str(runs))
    assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr[-3000:]

    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 3  # header + Cu/FLARE + Cu/NequIP

    nequip_dir = out / "nequip" / "Cu"
    assert (nequip_dir / "model.nequip.zip").stat().st_size > 0
    config = yaml.safe_load((nequip_dir / "config.yaml").read_text())
    assert config["training_module"]["model"]["_target_"] == "nequip.model.NequIPGNNModel"
    train = subprocess.run(
        [str(Path(sys.executable).parent / "nequip-train"), "-cp", str(nequip_dir), "-cn", "config",
         "trainer.max_epochs=1", "trainer.accelerator=cpu", f"hydra.run.dir={tmp_path / 'nequip-run'}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert list((tmp_path / "nequip-run").rglob("*.ckpt")), "nequip-train wrote no checkpoint"

    flare_dir = out / "flare" / "Cu"
    settings = yaml.safe_load((flare_dir / "settings.yaml").read_text())
    assert settings["descriptor"] == "B2" and settings["r_cut"] == 4.0
    gp, _ = SGP_Wrapper.from_file(str(flare_dir / "flare_sgp.json"))
    frame = FrameStore.open(sweep_store).frames("Cu", "melt", "test")[0]
    from flare.bffs.sgp.calculator import SGP_Calculator

    frame.calc = SGP_Calculator(gp)
    forces = frame.get_forces()
    assert forces.shape == (len(frame), 3) and np.all(np.isfinite(forces)) and np.abs(forces).max() > 0
    assert (flare_dir / "lmp.flare").stat().st_size > 0
