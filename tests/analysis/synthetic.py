"""Synthetic sweeps logged with the real MLflow API into a temporary sqlite store.

Runs are logged the way ``sweep/tune/trainable.py`` logs a trial: tags element, model, task,
trial_id, config_hash (which covers the task) and sweep; as params the hyperparameters, the
bookkeeping (seed, counts, resources) and the model's scalar info (``n_d``, ``num_weights``,
``log_likelihood`` ...); final metrics in meV units; artifacts ``export/`` (the trainers' file
names), ``metrics.json``, ``predictions.npz`` and ``config.json``. The model files are
placeholders; the end-to-end test with real models lives with the pipeline.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweep.elements import ELEMENTS

SWEEP = "demo-sweep"
FLARE_HYPERPARAMETERS = {"sigma": 1.7, "sigma_e": 0.0012, "sigma_f": 0.047, "sigma_s": 0.0051}


@dataclass
class SyntheticSweep:
    """A tmp sqlite MLflow store and helpers to log runs into one experiment."""

    root: Path
    name: str = SWEEP
    run_ids: list[str] = field(default_factory=list)

    def __post_init__(self):
        from mlflow.tracking import MlflowClient

        self.root.mkdir(parents=True, exist_ok=True)
        self.uri = f"sqlite:///{self.root / 'mlruns.db'}"
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_id = self.client.create_experiment(
            self.name, artifact_location=(self.root / "artifacts" / self.name).as_uri())
        self._staging = self.root / "staging"

    def sibling(self, name: str) -> "SyntheticSweep":
        """Another experiment in the same store (creating a store costs seconds)."""
        return SyntheticSweep(self.root, name)

    def log(self, element: str, model: str, task: str, hyper: dict, metrics: dict, *,
            artifacts: bool = True, status: str = "FINISHED", history: dict | None = None,
            trial: int | None = None, seed: int = 0) -> str:
        """Log one trial; with ``artifacts`` also export/, metrics.json, predictions.npz and config.json."""
        from mlflow.entities import Metric, Param, RunTag

        config_hash = hashlib.sha1(json.dumps([model, element, task, hyper], sort_keys=True).encode()).hexdigest()[:16]
        trial_id = f"trial_{len(self.run_ids):05d}" if trial is None else f"trial_{trial:05d}"
        tags = {"element": element, "model": model, "task": task, "trial_id": trial_id,
                "config_hash": config_hash, "sweep": self.name}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=f"{model}-{element}-{task}-{config_hash[:8]}")
        run_id = run.info.run_id
        n_train = int(task.split(":")[1]) // 10 if task.startswith("learning-curve") else 18
        counts = {"train": n_train, "val": 2, "test": 5}
        info = model_info(model, hyper, metrics)
        params = {**hyper, "seed": 0, "n_train": counts["train"], "n_val": counts["val"], "n_test": counts["test"],
                  "num_cpus": 1, "gpus": 0}
        params.update({(k if k not in hyper else f"info_{k}"): v for k, v in info.items()
                       if isinstance(v, (int, float, str, bool))})
        history_metrics = [Metric(k, float(v), 0, step) for k, values in (history or {}).items()
                           for step, v in enumerate(values)]
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), 0, 0) for k, v in metrics.items()] + history_metrics,
            params=[Param(k, str(v)) for k, v in params.items()],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )
        if artifacts:
            stage = self._staging / run_id
            (stage / "export").mkdir(parents=True)
            for name, data in native_placeholders(model, element, stage / "export").items():
                (stage / "export" / name).write_bytes(data)
            (stage / "metrics.json").write_text(json.dumps({
                "model": model, "element": element, "task": task, "counts": counts,
                "params": hyper, "info": info, "metrics": metrics, "artifacts": {}}))
            (stage / "predictions.npz").write_bytes(predictions_npz(metrics, seed))
            (stage / "config.json").write_text(json.dumps({"model": model, "params": hyper, "config_hash": config_hash}))
            self.client.log_artifacts(run_id, str(stage))
        self.client.set_terminated(run_id, status)
        self.run_ids.append(run_id)
        return run_id


def model_info(model: str, hyper: dict, metrics: dict) -> dict:
    """The trainers' info dict, as far as the analysis reads it."""
    if model == "flare":
        n_d = descriptor_dimension(hyper["n_max"], hyper["l_max"])
        return {"model": "flare", "descriptor": hyper["descriptor"], "n_species": 1, "n_descriptors": n_d,
                "n_d": n_d, "n_d_eq1": n_d,
                "zeta": hyper["zeta"], "log_likelihood": metrics.get("log_likelihood", 0.0), "n_sparse": 180,
                "hyperparameters": dict(FLARE_HYPERPARAMETERS), "train_time_s": metrics.get("train_seconds", 1.0)}
    return {"model": "nequip", "n_weights": num_weights(hyper["l_max"], hyper["num_layers"]),
            "num_weights": num_weights(hyper["l_max"], hyper["num_layers"]), "epochs": 12,
            "train_seconds": metrics.get("train_seconds", 1.0), "type_names": ["X"]}


def native_placeholders(model: str, element: str, export_dir: Path | None = None) -> dict[str, bytes]:
    """Placeholder files named as each trainer's ``export`` names them.

    A NequIP config names its data files by absolute path in the trial's export folder, as
    the real one does.
    """
    if model == "nequip":
        where = export_dir or Path("/trial/work/export")
        config = (f"run:\n- train\n- val\nseed: 0\ndata:\n  _target_: nequip.data.datamodule.ASEDataModule\n"
                  f"  train_file_path: {where / 'train.xyz'}\n  val_file_path: {where / 'val.xyz'}\n"
                  f"  ase_args:\n    format: extxyz\nmodel_type_names:\n- {element}\n")
        return {"config.yaml": config.encode(), "train.xyz": f"1\n\n{element} 0 0 0\n".encode(),
                "val.xyz": f"1\n\n{element} 0 0 1\n".encode(), "model.nequip.zip": b"PK\x05\x06" + bytes(18)}
    return {"flare_sgp.json": json.dumps({"gp_model": {"hyps": list(FLARE_HYPERPARAMETERS.values())}}).encode(),
            "lmp.flare": f"DATE: synthetic CONTRIBUTOR: tm23-sweep\n{element}\n".encode()}


def predictions_npz(metrics: dict, seed: int) -> bytes:
    """Test labels and predictions in meV units whose MAEs roughly match ``metrics``."""
    rng = np.random.default_rng(seed)
    n_frames, n_atoms = 5, 31
    ref = {"energy": -4200 + rng.normal(0, 15, n_frames), "forces": rng.normal(0, 600, n_frames * n_atoms * 3),
           "stress": rng.normal(0, 8, n_frames * 6)}
    arrays = {}
    for label, values in ref.items():
        mae = metrics.get(f"test_{label}_mae", 1.0)
        arrays[f"ref_{label}"] = values
        arrays[f"pred_{label}"] = values + rng.laplace(0, mae, values.shape)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def difficulty(element: str) -> float:
    """The paper's trend, made up: early groups (IV–VIII) are harder than IX–XI."""
    e = ELEMENTS[element]
    return 1.0 + 0.35 * max(0, 9 - e.group) + 0.15 * (e.period - 4)


def scores(element: str, model: str, scale: float = 1.0, rng: np.random.Generator | None = None) -> dict[str, float]:
    """Plausible final metrics for one run (meV units, %)."""
    rng = rng or np.random.default_rng(0)
    base = difficulty(element) * scale * (1.4 if model == "flare" else 1.0) * rng.uniform(0.9, 1.1)
    out = {"test_energy_mae": 1.5 * base, "test_forces_mae": 40 * base, "test_stress_mae": 0.4 * base,
           "val_forces_mae": 41 * base, "train_seconds": 30 * rng.uniform(0.5, 2)}
    out.update({"test_energy_pct": out["test_energy_mae"] / 42, "test_forces_pct": out["test_forces_mae"] / 6.0,
                "test_stress_pct": out["test_stress_mae"] / 0.08})
    for k in ("energy", "forces", "stress"):
        out[f"test_{k}_rmse"] = 1.3 * out[f"test_{k}_mae"]
    if model == "flare":
        out["log_likelihood"] = 1000.0 - 10 * base
    return out


def descriptor_dimension(n_max: int, l_max: int) -> int:
    """The paper's Eq. 1 for one species, B2."""
    return (n_max + 1) * n_max // 2 * (l_max + 1)


def num_weights(l_max: int, num_layers: int) -> int:
    """A made-up weight count growing with l_max."""
    return 5000 + 3000 * l_max * num_layers


def flare_params(r_cut: float, l_max: int, n_max: int = 6) -> dict:
    """FLARE B2 hyperparameters (FlareParams names)."""
    return {"descriptor": "B2", "radial_basis": "chebyshev", "r_cut": r_cut, "n_max": n_max, "l_max": l_max,
            "zeta": 2, "sigma": 2.0, "sigma_e": 0.001, "sigma_f": 0.05, "sigma_s": 0.005}


def nequip_params(l_max: int, num_layers: int = 2) -> dict:
    """NequIP hyperparameters (NequIPParams names); num_features follows l_max as in the paper."""
    return {"r_max": 4.0, "num_layers": num_layers, "l_max": l_max, "num_features": 64 >> (2 * l_max),
            "learning_rate": 0.01, "batch_size": 5, "seed": 0}


def populate(sweep: SyntheticSweep, elements=("Au", "Cu", "Os", "Ti"), learning_elements=("Au", "Ti"),
             ns=(100, 300, 500), seed: int = 0) -> None:
    """The paper's tasks, small: grid (2 configs per model), full, transfer, learning curves (l_max 0, 1)."""
    rng = np.random.default_rng(seed)
    for element in elements:
        for model, configs in (("flare", [flare_params(4.5, 2), flare_params(5.0, 3)]),
                               ("nequip", [nequip_params(1), nequip_params(2)])):
            grid_scores = [scores(element, model, s, rng) for s in (1.2, 1.0)]
            for params, metrics in zip(configs, grid_scores):
                sweep.log(element, model, "grid", params, metrics, artifacts=False)
            sweep.log(element, model, "full", configs[1], scores(element, model, 0.8, rng), seed=int(rng.integers(1 << 30)))
            for task, factor in (("transfer-warm", 1.6), ("transfer-melt", 2.8)):
                sweep.log(element, model, task, configs[1], scores(element, model, factor, rng), artifacts=False)
        if element in learning_elements:
            for l_max, b in ((0, -0.35), (1, -0.5)):
                for n in ns:
                    factor = (n / 100.0) ** b * float(np.exp(rng.normal(0, 0.03)))
                    metrics = scores(element, "nequip", 2.0 * factor, np.random.default_rng(n + l_max))
                    sweep.log(element, "nequip", f"learning-curve:{n}", nequip_params(l_max), metrics,
                              artifacts=False, history={"val_forces_mae": [3 * metrics["val_forces_mae"],
                                                                           metrics["val_forces_mae"]]})
