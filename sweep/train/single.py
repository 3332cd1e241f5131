"""One training of one model on one element's task: train, score, save, export.

This is what ``tm23-sweep train`` runs directly and what every Ray Tune trial runs
inside its actor. Everything it writes lands under ``out_dir``:

- ``checkpoint/``: the trainer's own checkpoints (a rerun resumes from them);
- ``model/``: :meth:`TrainedModel.save` output;
- ``export/``: the model family's native artifacts;
- ``predictions.npz``: test labels and predictions (meV units), for parity plots;
- ``metrics.json``: validation and test metrics plus the model's info, written last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sweep.data.splits import SplitFrames
from sweep.io import atomic_write_bytes, atomic_write_json
from sweep.metrics import label_arrays, prediction_arrays, score
from sweep.train.threads import cpu_threads
from sweep.trainers.base import Reporter, TrainContext, get_trainer, null_reporter


@dataclass
class TrainingResult:
    """What a training produced: metrics (meV units), model info and artifact paths."""

    metrics: dict[str, float]
    info: dict[str, Any]
    params: dict[str, Any]
    artifacts: dict[str, Path] = field(default_factory=dict)
    out_dir: Path | None = None


#: The file that marks a folder as one that ``tm23-sweep train`` writes (and may write again).
TRAIN_MARKER = ".tm23-sweep-train"


def claim_out_dir(out_dir: Path) -> None:
    """Make ``out_dir`` a ``train`` output folder, refusing one that holds anything ``train`` did not write."""
    from sweep.errors import InputError

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(out_dir, "--out", "exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / TRAIN_MARKER).is_file():
        raise InputError(out_dir, "--out", "holds files `tm23-sweep train` did not write; choose another folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TRAIN_MARKER).touch()


def _save_predictions(path: Path, frames, predictions) -> None:
    import io

    ref, pred = label_arrays(frames), prediction_arrays(frames, predictions)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{f"ref_{k}": v for k, v in ref.items()}, **{f"pred_{k}": v for k, v in pred.items()})
    atomic_write_bytes(path, buffer.getvalue())


def run_training(model: str, params: Mapping[str, Any], split: SplitFrames, out_dir: Path,
                 reporter: Reporter = null_reporter, context: TrainContext | None = None,
                 export: bool = True) -> TrainingResult:
    """Train ``model`` with ``params`` on ``split``, score it on its test frames, write everything under ``out_dir``."""
    trainer_cls = get_trainer(model)
    hyper = trainer_cls.parse_params(params)
    context = context or TrainContext()
    if context.temperature_K is None:
        context.temperature_K = split.train_temperature_K
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    with cpu_threads(context.num_cpus):
        started = time.perf_counter()
        trained = trainer_cls().train(hyper, split.train, split.val, reporter, out_dir / "checkpoint", context)
        train_seconds = time.perf_counter() - started

        metrics: dict[str, float] = {}
        if split.val:
            metrics.update(score(split.val, trained.predict(split.val), prefix="val"))
        test_predictions = trained.predict(split.test)
    metrics.update(score(split.test, test_predictions, prefix="test"))
    metrics["train_seconds"] = train_seconds
    _save_predictions(out_dir / "predictions.npz", split.test, test_predictions)

    trained.save(out_dir / "model")
    artifacts = trained.export(out_dir / "export") if export else {}
    result = TrainingResult(metrics=metrics, info=dict(trained.info), params=hyper.model_dump(mode="json"),
                            artifacts=artifacts, out_dir=out_dir)
    atomic_write_json(out_dir / "metrics.json", {
        "model": model, "element": split.element, "task": split.task.name, "counts": split.counts(),
        "params": result.params, "info": result.info, "metrics": metrics,
        "artifacts": {k: str(v) for k, v in artifacts.items()},
    })
    return result
