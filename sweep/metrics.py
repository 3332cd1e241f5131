"""The paper's error metrics: MAE, RMSE and % error = MAE / mean |label| × 100 (Eq. 2).

Labels are energy per atom, force components and stress components; errors are
reported in meV/atom, meV/Å and meV/Å³. Metric keys are ``<prefix>_<label>_<stat>``,
e.g. ``test_forces_mae`` or ``val_energy_pct``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms

LABELS: tuple[str, ...] = ("energy", "forces", "stress")
UNITS: dict[str, str] = {"energy": "meV/atom", "forces": "meV/Å", "stress": "meV/Å³"}
STATS: tuple[str, ...] = ("mae", "rmse", "pct")


def error_stats(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and % error (MAE / mean |reference| × 100) of two arrays, in their units."""
    predicted = np.asarray(predicted, dtype=float).ravel()
    reference = np.asarray(reference, dtype=float).ravel()
    if predicted.shape != reference.shape:
        raise ValueError(f"shape mismatch: predicted {predicted.shape} vs reference {reference.shape}")
    if reference.size == 0:
        raise ValueError("no labels to score")
    err = predicted - reference
    mae = float(np.mean(np.abs(err)))
    mav = float(np.mean(np.abs(reference)))
    return {
        "mae": mae,
        "rmse": float(np.sqrt(np.mean(err**2))),
        "pct": float(100.0 * mae / mav) if mav > 0 else float("nan"),
    }


def label_arrays(frames: Sequence[Atoms]) -> dict[str, np.ndarray]:
    """Reference labels of ``frames`` in meV units: energy per atom, force and stress components."""
    energy = np.array([f.get_potential_energy() / len(f) for f in frames])
    forces = np.concatenate([f.get_forces().ravel() for f in frames])
    stress = np.concatenate([f.get_stress(voigt=True).ravel() for f in frames])
    return {"energy": 1e3 * energy, "forces": 1e3 * forces, "stress": 1e3 * stress}


def prediction_arrays(frames: Sequence[Atoms], predictions: Sequence) -> dict[str, np.ndarray]:
    """Predicted labels in the same layout and units as :func:`label_arrays`."""
    energy = np.array([p.energy / len(f) for f, p in zip(frames, predictions)])
    forces = np.concatenate([np.asarray(p.forces).ravel() for p in predictions])
    stress = np.concatenate([np.asarray(p.stress).ravel() for p in predictions])
    return {"energy": 1e3 * energy, "forces": 1e3 * forces, "stress": 1e3 * stress}


def score(frames: Sequence[Atoms], predictions: Sequence, prefix: str = "test") -> dict[str, float]:
    """Every metric of every label, keyed ``<prefix>_<label>_<stat>``."""
    ref = label_arrays(frames)
    pred = prediction_arrays(frames, predictions)
    out: dict[str, float] = {}
    for label in LABELS:
        for stat, value in error_stats(pred[label], ref[label]).items():
            out[f"{prefix}_{label}_{stat}"] = value
    return out


def evaluate(model, frames: Sequence[Atoms], prefix: str = "test") -> dict[str, float]:
    """Predict ``frames`` with ``model`` (a :class:`~sweep.trainers.base.TrainedModel`) and score them."""
    return score(frames, model.predict(frames), prefix=prefix)
