"""``settings.yaml`` of a FLARE export: descriptor, r_cut, n_max, l_max, ζ and the optimised σ's (light)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

HYPERPARAMETER_NAMES = ("sigma", "sigma_e", "sigma_f", "sigma_s")


def _plain(value: Any) -> Any:
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def optimised_hyperparameters(info, sgp_json: Path | None) -> dict[str, float]:
    """(σ, σ_e, σ_f, σ_s) after training: from the run's info, else from the SGP JSON's ``hyps``."""
    if info.hyperparameters:
        return {k: _plain(v) for k, v in info.hyperparameters.items()}
    if sgp_json is not None and sgp_json.is_file():
        try:
            hyps = json.loads(sgp_json.read_text()).get("hyps")
        except ValueError:
            hyps = None
        if isinstance(hyps, list) and len(hyps) == len(HYPERPARAMETER_NAMES):
            return dict(zip(HYPERPARAMETER_NAMES, map(float, hyps)))
    return {}


def settings_file(params: dict[str, Any], info, files: dict[str, Path], source: dict[str, Any]) -> dict[str, str]:
    """``{"settings.yaml": text}`` for one exported FLARE model (``info`` is its ModelInfo)."""
    source = dict(source)
    element = source.pop("element", None)
    params = {k: _plain(v) for k, v in params.items()}
    settings = {
        "model": "flare",
        "element": element,
        "descriptor": params.get("descriptor", info.descriptor),
        "r_cut": params.get("r_cut"),
        "n_max": params.get("n_max"),
        "l_max": params.get("l_max"),
        "zeta": params.get("zeta"),
        "n_descriptors": info.n_descriptors,
        "optimised_hyperparameters": optimised_hyperparameters(info, files.get("sgp")),
        "log_likelihood": _plain(info.log_likelihood),
        "files": {"sgp_json": files["sgp"].name, "lammps_mapped": files["lammps"].name if "lammps" in files else None},
        "trained_with": params,  # every hyperparameter, the initial σ's among them
        "source": source,
    }
    return {"settings.yaml": yaml.safe_dump(settings, sort_keys=False, allow_unicode=True)}
