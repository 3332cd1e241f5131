"""MACE passes the trainer contract (:mod:`sweep.trainers.contract`), training in its own venv."""

import json

import numpy as np
import pytest

from sweep.trainers.contract import TrainerContract
from sweep.trainers.family import get_family

if not get_family("mace").python().is_file():
    pytest.skip(f"no MACE interpreter at {get_family('mace').python()} (make .stamps/mace)", allow_module_level=True)


class TestMACEContract(TrainerContract):
    family = "mace"
    params = {"r_max": 4.0, "max_L": 0, "num_channels": 8, "correlation": 2, "num_interactions": 1,
              "batch_size": 4, "valid_batch_size": 2, "max_num_epochs": 3}
    bad_value = ("correlation", 0)
    #: MACE's own restart reloads model, optimiser and scheduler but not the data order
    resume_is_exact = False

    @pytest.mark.slow
    def test_export_trains_under_mace_run_train_and_loads_in_maces_calculator(self, trained, frames, tmp_path):
        """``mace_run_train --config`` trains the export (epoch 1 as in the sweep); MACECalculator loads its model."""
        import subprocess

        model, reporter, _ = trained
        paths = model.export(tmp_path / "export")
        python = get_family("mace").python()
        run = tmp_path / "rerun"
        run.mkdir()
        result = subprocess.run([str(python.parent / "mace_run_train"), "--config", str(paths["config"]),
                                 "--max_num_epochs", "1"], cwd=run, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        log = next((run / "results").glob("*_train.txt")).read_text().splitlines()
        first = next(r for r in map(json.loads, log) if r.get("mode") == "eval" and r.get("epoch") == 0)
        assert 1e3 * first["mae_f"] == pytest.approx(reporter.metrics[0]["val_forces_mae"], rel=1e-6)
        # MACE's own calculator, in MACE's venv, on the exported model: the sweep's forces
        check = ("import sys, json, numpy as np\nfrom ase.io import read\nfrom mace.calculators import MACECalculator\n"
                 "calc = MACECalculator(model_paths=sys.argv[1], device='cpu', default_dtype='float64')\n"
                 "atoms = read(sys.argv[2])\natoms.calc = calc\nprint(json.dumps(atoms.get_forces().tolist()))\n")
        frame = tmp_path / "frame.xyz"
        frames[2][0].write(frame)
        out = subprocess.run([str(python), "-c", check, str(paths["model"]), str(frame)], capture_output=True,
                             text=True, timeout=600, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-2000:]
        forces = np.array(json.loads(out.stdout.strip().splitlines()[-1]))
        expected = model.predict([frames[2][0]])[0].forces
        np.testing.assert_allclose(forces, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
