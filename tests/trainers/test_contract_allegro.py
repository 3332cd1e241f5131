"""Allegro passes the trainer contract (:mod:`sweep.trainers.contract`)."""

import pytest

from sweep.trainers.contract import TrainerContract

pytest.importorskip("allegro")


class TestAllegroContract(TrainerContract):
    family = "allegro"
    params = {"num_layers": 1, "l_max": 1, "num_scalar_features": 8, "num_tensor_features": 2,
              "scalar_embed_mlp_hidden_layers_width": 8, "allegro_mlp_hidden_layers_width": 8,
              "readout_mlp_hidden_layers_width": 8, "batch_size": 3, "max_epochs": 3}
    bad_value = ("num_tensor_features", 0)
    #: Lightning's resume restores weights, optimiser, EMA, scheduler and loop, not the shuffle order
    resume_is_exact = False

    @pytest.mark.slow
    def test_export_trains_under_stock_nequip_train_and_packages(self, trained, tmp_path):
        """Stock nequip-train (tm23-sweep not importable) trains the exported config: epoch 1 is the sweep's."""
        from tests.trainers.stock import nequip_package, nequip_train_one_epoch, stock_python

        model, reporter, _ = trained
        paths = model.export(tmp_path / "export")
        config = paths["config"].read_text()
        assert "sweep." not in config and "allegro.model.AllegroModel" in config
        python = stock_python(tmp_path / "stock-venv")
        rows = nequip_train_one_epoch(python, paths["config"].parent, tmp_path / "cli")
        first = next(float(r["val0_epoch/forces_mae"]) for r in rows if r.get("val0_epoch/forces_mae"))
        assert 1e3 * first == pytest.approx(reporter.metrics[0]["val_forces_mae"], rel=1e-6)
        assert nequip_package(python, tmp_path / "cli" / "best.ckpt", tmp_path / "stock.nequip.zip").is_file()
