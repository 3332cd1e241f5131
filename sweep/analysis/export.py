"""Export the best model per element and model family, in each family's native form.

Layout of the export folder (built in a temporary sibling and swapped in whole)::

    OUT/summary.csv, OUT/summary.md   the paper's Table 1 for the exported models
    OUT/manifest.json                 which run each model came from, and why it was chosen
    OUT/nequip/<El>/config.yaml       the run's Hydra config, as ``nequip-train`` runs it, its data
                                      paths pointed at the copies beside it
    OUT/nequip/<El>/train.xyz ...     those copies (the frames the model was trained on)
    OUT/nequip/<El>/<name>.nequip.zip the packaged model
    OUT/flare/<El>/settings.yaml      descriptor, r_cut, n_max, l_max, ζ, optimised hyperparameters,
                                      and every hyperparameter it was trained with
    OUT/flare/<El>/<name>.json        the trained SGP (``SGP_Calculator.from_file`` reloads it)
    OUT/flare/<El>/<mapped file>      the LAMMPS ``pair_style flare`` coefficients (B2 models)
    OUT/<model>/<El>/metrics.json     the run's own record (params, info, metrics)

Every file is copied from the run's MLflow artifacts (``export/`` and ``metrics.json``) and
written with :mod:`sweep.io.atomic`.
"""

from __future__ import annotations

import io
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from sweep.analysis.best import TIE_RTOL, final_runs
from sweep.analysis.plots import format_value, model_name
from sweep.analysis.runs import SweepRuns, hyperparameters, run_params
from sweep.errors import InputError
from sweep.io import atomic_directory, atomic_write_bytes, atomic_write_json, atomic_write_text

MANIFEST = "manifest.json"
EXPORT_ARTIFACT = "export"
RECORD_ARTIFACT = "metrics.json"
#: FLARE's kernel power ζ, under the names a search space may give it.
ZETA_PARAMS = ("zeta", "power", "kernel_power")
#: Where a run records its descriptor dimension (FLARE) and weight count (NequIP): params, then info.
DIMENSION_KEYS = ("n_descriptors", "n_d", "n_d_eq1")
WEIGHT_KEYS = ("n_weights", "num_weights")
#: Data files a NequIP export carries beside its config (the frames it was trained on).
DATA_SUFFIXES = (".xyz", ".extxyz")
SUMMARY_COLUMNS = (
    "element", "model", "descriptor", "n_descriptors", "n_weights", "train_seconds",
    "test_energy_mae", "test_energy_pct", "test_forces_mae", "test_forces_pct",
    "test_stress_mae", "test_stress_pct", "val_forces_mae", "log_likelihood",
    "task", "run_id", "config_hash", "selection", "folder",
)


@dataclass
class ExportResult:
    """What :func:`export_best` wrote."""

    out: Path
    summary: pd.DataFrame
    files: list[Path] = field(default_factory=list)


def _plain(value: Any) -> Any:
    """Numpy and pandas scalars as plain Python, NaN as None, for YAML and JSON."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA:
        return None
    return value


def _check_out(out: Path) -> None:
    # atomic_directory replaces the target whole: never let that be a folder we did not write
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise InputError(str(out), "--out", "exists and is not a tm23-sweep export folder; choose a new or empty one")


def _native_files(model: str, export_dir: Path, run_id: str) -> dict[str, Path]:
    """The files of a run's ``export/`` artifact, keyed by role; check the family's required ones."""
    files = sorted(p for p in export_dir.rglob("*") if p.is_file()) if export_dir.exists() else []
    source, what = f"run {run_id}", f"artifacts/{EXPORT_ARTIFACT}"
    if not files:
        raise InputError(source, what, "no exported model files; was the run trained with export on?")
    roles: dict[str, Path] = {}
    if model == "nequip":
        configs = [p for p in files if p.suffix in (".yaml", ".yml")]
        packages = [p for p in files if p.name.endswith(".nequip.zip")]
        if not configs or not packages:
            raise InputError(source, what,
                             f"NequIP export needs config.yaml and a .nequip.zip, found {[p.name for p in files]}")
        roles["config"] = next((p for p in configs if p.name == "config.yaml"), configs[0])
        roles["package"] = packages[0]
    elif model == "flare":
        models = [p for p in files if p.suffix == ".json"]
        mapped = ([p for p in files if p.suffix == ".flare"]
                  or [p for p in files if p.suffix not in (".json", ".yaml", ".yml")])
        if not models:
            raise InputError(source, what, f"FLARE export needs the SGP JSON, found {[p.name for p in files]}")
        roles["sgp"] = models[0]
        if mapped:  # FLARE maps B2 models only: a B1 export has no LAMMPS file
            roles["lammps"] = mapped[0]
    for p in files:
        if p not in roles.values():
            roles[f"file:{p.relative_to(export_dir)}"] = p
    return roles


def _hyperparameters(info: dict[str, Any], sgp_json: Path | None) -> dict[str, Any]:
    """FLARE's optimised hyperparameters: from the run's info, else from the SGP JSON's ``hyps``."""
    for key in ("hyperparameters", "hyps"):
        value = info.get(key)
        if isinstance(value, dict):
            return {k: _plain(v) for k, v in value.items()}
        if isinstance(value, list):
            labels = info.get("hyp_labels") or [f"hyp_{i}" for i in range(len(value))]
            return {str(k): _plain(v) for k, v in zip(labels, value)}
    sigmas = {k: _plain(v) for k, v in info.items() if k.startswith("sigma")}
    if sigmas:
        return sigmas
    if sgp_json is not None:
        try:
            model = json.loads(sgp_json.read_text())
            gp = model.get("gp_model", model)
            hyps, labels = gp.get("hyps"), gp.get("hyp_labels") or []
            if isinstance(hyps, list):
                labels = labels if len(labels) == len(hyps) else [f"hyp_{i}" for i in range(len(hyps))]
                return {str(k): _plain(v) for k, v in zip(labels, hyps)}
        except (ValueError, AttributeError):
            pass
    return {}


def flare_settings(run: pd.Series, info: dict[str, Any], files: dict[str, Path],
                   source: dict[str, Any]) -> dict[str, Any]:
    """The FLARE settings YAML: descriptor, r_cut, n_max, l_max, ζ, optimised hyperparameters, files."""
    params = {k: _plain(v) for k, v in run_params(run).items()}
    hyper = {k: _plain(v) for k, v in hyperparameters(run).items()}
    zeta = next((params[k] for k in ZETA_PARAMS if k in params), info.get("zeta", info.get("power")))
    return {
        "model": "flare",
        "element": run["element"],
        "descriptor": params.get("descriptor", info.get("descriptor")),
        "r_cut": params.get("r_cut", info.get("r_cut")),
        "n_max": params.get("n_max", info.get("n_max")),
        "l_max": params.get("l_max", info.get("l_max")),
        "zeta": zeta,
        "n_descriptors": _first(params, info, DIMENSION_KEYS),
        "optimised_hyperparameters": _hyperparameters(info, files.get("sgp")),
        "log_likelihood": _plain(run.get("log_likelihood", params.get("log_likelihood"))),
        "files": {"sgp_json": files["sgp"].name, "lammps_mapped": files["lammps"].name if "lammps" in files else None},
        "trained_with": hyper,  # every hyperparameter, the initial σ's among them
        "source": source,
    }


def _first(params: dict[str, Any], info: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for source in (params, info):
        for key in keys:
            if source.get(key) is not None:
                return _plain(source[key])
    return None


def _summary_row(run: pd.Series, info: dict[str, Any], folder: str) -> dict[str, Any]:
    params = run_params(run)
    row = {c: _plain(run.get(c)) for c in SUMMARY_COLUMNS if c in run.index}
    row.update({
        "descriptor": params.get("descriptor", info.get("descriptor")) if run["model"] == "flare" else None,
        "n_descriptors": _first(params, info, DIMENSION_KEYS) if run["model"] != "nequip" else None,
        "n_weights": _first(params, info, WEIGHT_KEYS) if run["model"] != "flare" else None,
        "folder": folder,
    })
    return {c: row.get(c) for c in SUMMARY_COLUMNS}


def point_config_at(config: str, data_files: list[str], directory: Path) -> str:
    """``config`` (NequIP YAML text) with absolute paths to ``data_files`` moved into ``directory``.

    The run's YAML names its training and validation files by absolute path inside the trial's
    work folder; the export carries copies, so the exported YAML must name those.
    """
    for name in data_files:
        pattern = re.compile(r"(?<=[\s:'\"])/[^\s'\"]*/" + re.escape(name) + r"(?=[\s'\"]|$)", re.M)
        config = pattern.sub(lambda _: str(directory / name), config)
    return config


def _duration(seconds: Any) -> str:
    if seconds is None or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _with_counts_as_ints(summary: pd.DataFrame) -> pd.DataFrame:
    # descriptor dimension and weight counts are integers; a model lacking one must not make them floats
    for column in ("n_descriptors", "n_weights"):
        try:
            summary[column] = pd.array(summary[column].tolist(), dtype="Int64")
        except (TypeError, ValueError):
            pass
    return summary


def _cell(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return format_value(value)
    return str(value)


def summary_markdown(summary: pd.DataFrame) -> str:
    """The summary as a markdown table in the manner of the paper's Table 1."""
    head = ["Element", "Model", "Descriptor", "Descriptor dim.", "Weights", "Training time",
            "E MAE (meV/atom)", "E (%)", "F MAE (meV/Å)", "F (%)", "S MAE (meV/Å³)", "S (%)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in summary.iterrows():
        cells = [r["element"], model_name(r["model"]), _cell(r["descriptor"]), _cell(r["n_descriptors"]),
                 _cell(r["n_weights"]), _duration(r["train_seconds"]),
                 *[_cell(r[f"test_{label}_{stat}"]) for label in ("energy", "forces", "stress")
                   for stat in ("mae", "pct")]]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("Test errors of the exported model of each element and model family; "
            "% error = MAE / mean absolute label × 100. "
            "Descriptor dim. is FLARE's n_d (Eq. 1); Weights is NequIP's trainable parameter count.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def export_best(runs: SweepRuns, out: str | Path, tie_rtol: float = TIE_RTOL, progress: bool = False) -> ExportResult:
    """Write the best model per element and model of ``runs`` into ``out`` (replaced whole, atomically)."""
    out = Path(out)
    _check_out(out)
    chosen = final_runs(runs.table, tie_rtol)
    if chosen.empty:
        raise InputError(runs.source, "tags.task", "no scored grid or full runs to export")
    rows, manifest, written = [], [], []
    with tempfile.TemporaryDirectory(prefix="tm23-export-") as scratch, atomic_directory(out) as tmp:
        for _, run in _iterate(chosen, progress):
            row, entry, files = _export_run(runs, run, Path(scratch) / run["run_id"], tmp, out.resolve())
            rows.append(row)
            manifest.append(entry)
            written += files
        summary = _with_counts_as_ints(pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS)))
        buffer = io.StringIO()
        summary.to_csv(buffer, index=False, float_format="%.6g")
        written.append(atomic_write_text(tmp / "summary.csv", buffer.getvalue()))
        written.append(atomic_write_text(tmp / "summary.md", summary_markdown(summary)))
        written.append(atomic_write_json(tmp / MANIFEST, {"sweeps": runs.names, "tie_rtol": tie_rtol,
                                                          "models": manifest}))
    return ExportResult(out=out, summary=summary, files=[out / p.relative_to(tmp) for p in written])


def _export_run(runs: SweepRuns, run: pd.Series, fetched: Path, tmp: Path,
                final: Path) -> tuple[dict[str, Any], dict[str, Any], list[Path]]:
    """Copy one run's native files into ``tmp/<model>/<element>``; ``final`` is where ``tmp`` will be.

    Returns its summary row, its manifest entry and the files written.
    """
    model, element, run_id = run["model"], run["element"], run["run_id"]
    artifacts = runs.list_artifacts(run_id)
    if EXPORT_ARTIFACT in artifacts:
        runs.download(run_id, EXPORT_ARTIFACT, fetched)
    export_dir = fetched / EXPORT_ARTIFACT
    files = _native_files(model, export_dir, run_id)
    info: dict[str, Any] = {}
    record = None
    if RECORD_ARTIFACT in artifacts:
        record = runs.download(run_id, RECORD_ARTIFACT, fetched)
        info = json.loads(record.read_text()).get("info", {}) or {}
    folder = Path(model) / element
    target = tmp / folder
    written = []
    data_files = [p.name for role, p in files.items() if role.startswith("file:") and p.suffix in DATA_SUFFIXES]
    for role, path in files.items():
        if role == "config":
            text = point_config_at(path.read_text(), data_files, final / folder)
            written.append(atomic_write_text(target / "config.yaml", text))
        else:
            written.append(atomic_write_bytes(target / path.relative_to(export_dir), path.read_bytes()))
    if record is not None:
        written.append(atomic_write_bytes(target / RECORD_ARTIFACT, record.read_bytes()))
    source = {"experiment": run["experiment"], "run_id": run_id, "task": run["task"],
              "trial_id": _plain(run.get("trial_id")), "config_hash": _plain(run.get("config_hash")),
              "tracking_uri": runs.tracking_uri, "selection": run["selection"]}
    if model == "flare":
        settings = flare_settings(run, info, files, source)
        written.append(atomic_write_text(target / "settings.yaml",
                                         yaml.safe_dump(settings, sort_keys=False, allow_unicode=True)))
    entry = source | {"element": element, "model": model, "folder": folder.as_posix(),
                      "files": sorted(p.name for p in target.iterdir())}
    return _summary_row(run, info, folder.as_posix()), entry, written


def _iterate(chosen: pd.DataFrame, progress: bool):
    if not progress:
        yield from chosen.iterrows()
        return
    from rich.progress import track

    yield from track(list(chosen.iterrows()), description="exporting best models", transient=True)
