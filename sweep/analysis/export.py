"""Export the best model per element and model family, in each family's native form.

Layout of the export folder (built in a temporary sibling and swapped in whole)::

    OUT/summary.csv, OUT/summary.md   the paper's Table 1 for the exported models
    OUT/manifest.json                 which run each model came from, and why it was chosen
    OUT/<model>/<El>/<native files>   the family's own export files, by role (its record's
                                      ``exports``; e.g. NequIP's config.yaml, its data files and
                                      model.nequip.zip, FLARE's SGP JSON and LAMMPS file)
    OUT/<model>/<El>/<extras>         files the family adds (e.g. FLARE's settings.yaml)
    OUT/<model>/<El>/metrics.json     the run's own record (params, info, metrics)

A config that names its data files by absolute path (``ExportFile.names_data_files``) is
pointed at the copies beside it. What each family exports, and how its files are recognised,
is its record in :mod:`sweep.trainers.family`.

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

from sweep.analysis.best import TIE_RTOL, final_runs
from sweep.analysis.plots import format_value, model_name
from sweep.analysis.runs import SweepRuns, hyperparameters
from sweep.errors import InputError
from sweep.io import atomic_directory, atomic_write_bytes, atomic_write_json, atomic_write_text
from sweep.trainers.family import ModelInfo

MANIFEST = "manifest.json"
EXPORT_ARTIFACT = "export"
RECORD_ARTIFACT = "metrics.json"
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


def check_out(out: Path) -> None:
    """Refuse ``--out`` unless it is new, empty, or an earlier export (it is replaced whole, never another folder)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise InputError(str(out), "--out", "exists and is not a tm23-sweep export folder; choose a new or empty one")


def _native_files(model: str, export_dir: Path, run_id: str) -> dict[str, Path]:
    """The files of a run's ``export/`` artifact, keyed by the family's roles; check the required ones."""
    from sweep.trainers.family import get_family

    files = sorted(p for p in export_dir.rglob("*") if p.is_file()) if export_dir.exists() else []
    source, what = f"run {run_id}", f"artifacts/{EXPORT_ARTIFACT}"
    if not files:
        raise InputError(source, what, "no exported model files; was the run trained with export on?")
    family = get_family(model)
    roles: dict[str, Path] = {}
    for spec in family.exports:
        match = next((p for p in files if spec.matches(p.name) and p not in roles.values()), None)
        if match is not None:
            roles[spec.role] = match
        elif spec.required:
            raise InputError(source, what, f"{family.display_name} export needs {spec.pattern} ({spec.description}), "
                                           f"found {[p.name for p in files]}")
    for p in files:
        if p not in roles.values():
            roles[f"file:{p.relative_to(export_dir)}"] = p
    return roles


def _summary_row(run: pd.Series, info: ModelInfo, folder: str) -> dict[str, Any]:
    row = {c: _plain(run.get(c)) for c in SUMMARY_COLUMNS if c in run.index}
    row.update({"descriptor": info.descriptor, "n_descriptors": info.n_descriptors, "n_weights": info.n_weights,
                "folder": folder})
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
    from sweep.trainers.family import families

    known = families()
    notes: dict[str, list[str]] = {}
    for m in dict.fromkeys(summary["model"]):
        if m in known and known[m].size_note:
            notes.setdefault(known[m].size_note, []).append(known[m].display_name)
    sizes = [f"{note} ({', '.join(names)})" for note, names in notes.items()]
    note = ("Test errors of the exported model of each element and model family; "
            "% error = MAE / mean absolute label × 100." + (" " + "; ".join(sizes) + "." if sizes else ""))
    return "\n".join(lines) + "\n\n" + note + "\n"


def export_best(runs: SweepRuns, out: str | Path, tie_rtol: float = TIE_RTOL, progress: bool = False) -> ExportResult:
    """Write the best model per element and model of ``runs`` into ``out`` (replaced whole, atomically)."""
    out = Path(out)
    check_out(out)
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
    from sweep.trainers.family import get_family

    family = get_family(model)
    files = _native_files(model, export_dir, run_id)
    info = ModelInfo()
    record = None
    if RECORD_ARTIFACT in artifacts:
        record = runs.download(run_id, RECORD_ARTIFACT, fetched)
        info = ModelInfo.of(json.loads(record.read_text()).get("info"))
    folder = Path(model) / element
    target = tmp / folder
    if not target.resolve().is_relative_to(Path(tmp).resolve()):  # tags are checked on load; never trust them
        raise InputError(f"run {run_id}", "tags", f"export folder {folder} leaves the export")
    written = []
    names_data = {spec.role for spec in family.exports if spec.names_data_files}
    others = [p.name for role, p in files.items() if role not in names_data]
    for role, path in files.items():
        if role in names_data:
            text = point_config_at(path.read_text(), others, final / folder)
            written.append(atomic_write_text(target / path.relative_to(export_dir), text))
        else:
            written.append(atomic_write_bytes(target / path.relative_to(export_dir), path.read_bytes()))
    if record is not None:
        written.append(atomic_write_bytes(target / RECORD_ARTIFACT, record.read_bytes()))
    source = {"experiment": run["experiment"], "run_id": run_id, "task": run["task"],
              "trial_id": _plain(run.get("trial_id")), "config_hash": _plain(run.get("config_hash")),
              "tracking_uri": runs.public_uri, "selection": run["selection"]}
    extras = family.extra_export_files({k: _plain(v) for k, v in hyperparameters(run).items()}, info, files,
                                       {"element": element, **source})
    for name, text in extras.items():
        written.append(atomic_write_text(target / name, text))
    entry = source | {"element": element, "model": model, "folder": folder.as_posix(),
                      "files": sorted(p.name for p in target.iterdir())}
    return _summary_row(run, info, folder.as_posix()), entry, written


def _iterate(chosen: pd.DataFrame, progress: bool):
    if not progress:
        yield from chosen.iterrows()
        return
    from rich.progress import track

    yield from track(list(chosen.iterrows()), description="exporting best models", transient=True)
