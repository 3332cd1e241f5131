"""`tm23-sweep phonons`: tiny FLARE and NequIP models of EMT Cu, exported, against the labeller (SevenNet-0) as reference."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from sweep.cli import main
from sweep.errors import InputError
from sweep.trainers.base import TrainContext, get_trainer
from sweep.trainers.contract import Recorder

pytest.importorskip("phonopy")

#: Small trainings: a few seconds each on one CPU (the contract suite's sizes).
TINY = {
    "flare": {"r_cut": 4.5, "n_max": 4, "l_max": 2, "sparse_per_frame": 8, "block_size": 4, "optimize_every": 8},
    "nequip": {"num_layers": 2, "num_features": 8, "l_max": 1, "radial_mlp_width": 8, "batch_size": 3,
               "max_epochs": 3},
}


@pytest.fixture(scope="module")
def export_dir(emt_cu_frames, tmp_path_factory) -> Path:
    """An export folder laid out as `tm23-sweep export` writes it: EXPORT/<model>/Cu/<native files>."""
    train, val = emt_cu_frames
    root = tmp_path_factory.mktemp("phonons-export")
    context = TrainContext(device="cpu", num_cpus=1, seed=0, temperature_K=1000.0)
    for name, params in TINY.items():
        trainer = get_trainer(name)
        model = trainer().train(trainer.parse_params(params), train, val, Recorder(), root / "work" / name, context)
        model.export(root / "export" / name / "Cu")
    return root / "export"


@pytest.fixture(scope="module")
def phonons_out(export_dir, tmp_path_factory) -> Path:
    """The folder `tm23-sweep phonons EXPORT --element Cu` wrote (2×2×2 supercell, 11 q-points a segment)."""
    out = tmp_path_factory.mktemp("phonons") / "out"
    code = main(["phonons", str(export_dir), "--element", "Cu", "--supercell", "2", "--npoints", "11",
                 "--out", str(out)])
    assert code == 0
    return out


def test_phonons_of_every_model_and_the_reference(export_dir, phonons_out):
    out = phonons_out
    png, data = out / "phonons_Cu.png", out / "phonons_Cu.json"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    result = json.loads(data.read_text())
    assert result["element"] == "Cu" and result["supercell"] == [2, 2, 2] and result["supercell_atoms"] == 32
    assert set(result["models"]) == {"flare", "nequip"}
    labels = result["path"]["labels"]
    assert labels[0] == "Γ" and "X" in labels and "L" in labels

    for name, bands in [("reference", result["reference"]), *result["models"].items()]:
        frequencies = [np.array(f) for f in bands["frequencies_thz"]]
        assert all(f.shape[1] == 3 for f in frequencies), name  # one atom per primitive cell: three branches
        assert all(np.isfinite(f).all() for f in frequencies), name
        assert max(abs(v) for v in bands["gamma_acoustic_thz"]) < 0.05, (name, bands["gamma_acoustic_thz"])
        assert np.abs(frequencies[0][0]).max() < 0.05, name  # the path starts at Γ
        assert max(f.max() for f in frequencies) > 1.0, name  # a crystal, not a gas
    for name, error in result["models"].items():
        assert math.isfinite(error["rms_thz"]) and error["rms_thz"] > 0, name
        assert len(error["rms_per_branch_thz"]) == 3 and all(math.isfinite(v) for v in error["rms_per_branch_thz"])
        assert error["max_abs_thz"] >= error["rms_thz"]



def test_a_rerun_replaces_its_own_files(export_dir, phonons_out, tmp_path):
    out = tmp_path / "again"
    shutil.copytree(phonons_out, out)
    assert main(["phonons", str(export_dir), "--element", "Cu", "--supercell", "2", "--npoints", "3",
                 "--out", str(out)]) == 0
    assert len(json.loads((out / "phonons_Cu.json").read_text())["path"]["distances"][0]) == 3


def test_the_dashboard_shows_the_phonon_figure(synthetic_sweep, phonons_out, tmp_path):
    from sweep.analysis.report import _sections, build_report
    from sweep.analysis.runs import load_runs

    runs = load_runs(synthetic_sweep.name, tracking_uri=synthetic_sweep.uri)
    result = build_report(runs, tmp_path / "dash", phonons=phonons_out)
    assert (tmp_path / "dash" / "phonons_Cu.png").read_bytes() == (phonons_out / "phonons_Cu.png").read_bytes()
    html = result.page.read_text()
    assert 'id="phonons"' in html and 'data-file="phonons_Cu.png"' in html and "Cu: phonon band structure" in html
    assert "phonons" not in [s["id"] for s in _sections([])]  # no phonons folder: no empty section
    with pytest.raises(InputError) as info:
        build_report(runs, tmp_path / "bad", phonons=tmp_path / "nowhere")
    assert info.value.field == "--phonons" and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("args, needle", [
    (["--element", "Xx"], "--element: 'Xx' is not a TM23 metal"),
    (["--element", "Os"], "--element: no exported model for Os"),
    (["--element", "Cu", "--supercell", "2x0x2"], "--supercell"),
])
def test_bad_input_is_one_line_naming_the_field(export_dir, tmp_path, capsys, args, needle):
    code = main(["phonons", str(export_dir), *args, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and needle in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def test_missing_export_and_a_users_file_are_refused(export_dir, tmp_path, capsys):
    assert main(["phonons", str(tmp_path / "nowhere"), "--element", "Cu", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tmp_path / 'nowhere'}: EXPORT:") and "\n" not in err
    users = tmp_path / "mine"
    users.mkdir()
    (users / "phonons_Cu.json").write_text('{"mine": true}')
    assert main(["phonons", str(export_dir), "--element", "Cu", "--out", str(users)]) == 2
    assert "was not written by `tm23-sweep phonons`" in capsys.readouterr().err
    assert (users / "phonons_Cu.json").read_text() == '{"mine": true}' and not (users / "phonons_Cu.png").exists()
