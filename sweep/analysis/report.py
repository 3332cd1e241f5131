"""The sweep dashboard: one self-contained HTML page plus a PNG of every figure beside it.

The page (rendered from the Jinja2 template in ``dashboards/``) embeds each figure as a
base64 ``data:`` URI and needs no network. It holds:

- periodic-table heatmaps of % error and MAE of force, energy and stress per model, on one
  colour scale per quantity (green low, red high), from each element's exported model;
- the learning curves with their a·N^b fits, and the table of exponents;
- parity plots per element, from the runs' ``predictions.npz``;
- transfer heatmaps (element × cold→warm, cold→melt);
- phonon band structures per element, when given the folder `tm23-sweep phonons` wrote;
- every trial in a table that sorts on a click of its header;
- a link to each sweep's experiment in the MLflow UI, in its model-training view.

The output folder is built in a temporary sibling and swapped in whole.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sweep.analysis import plots
from sweep.analysis.best import TIE_RTOL, final_runs, pick_best
from sweep.analysis.runs import SweepRuns, is_hyperparameter, param_columns
from sweep.elements import ELEMENTS
from sweep.errors import InputError
from sweep.io import atomic_directory, atomic_write_bytes, atomic_write_json, atomic_write_text
from sweep.metrics import LABELS

#: The folder of the page template (and of the checked-in example dashboard).
DASHBOARDS_DIR = Path(__file__).resolve().parents[2] / "dashboards"
TEMPLATE = "report.html.j2"
PAGE = "index.html"
MANIFEST = "report.json"
HEATMAP_STATS = ("pct", "mae")
PREDICTIONS_ARTIFACT = "predictions.npz"
TABLE_METRICS = ("val_forces_mae", "test_forces_mae", "test_forces_pct", "test_energy_mae", "test_energy_pct",
                 "test_stress_mae", "test_stress_pct", "train_seconds", "log_likelihood")


@dataclass
class Figure:
    """One figure of the page: its PNG file name, title, caption and bytes."""

    section: str
    name: str
    title: str
    caption: str
    png: bytes
    wide: bool = False  # spans the page's width (parity plots, many-panel figures)

    @property
    def data_uri(self) -> str:
        """The PNG as a ``data:`` URI for the page."""
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


@dataclass
class ReportResult:
    """What :func:`build_report` wrote."""

    page: Path
    figures: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def heatmap_figures(final: pd.DataFrame) -> list[Figure]:
    """Periodic-table heatmaps per label × statistic × model, one colour scale per label × statistic."""
    figures = []
    models = sorted(final["model"].unique())
    for label in ("forces", "energy", "stress"):
        for stat in HEATMAP_STATS:
            metric = f"test_{label}_{stat}"
            if metric not in final.columns or final[metric].isna().all():
                continue
            by_model = {m: _values(final[final["model"] == m], metric) for m in models}
            limits = plots.shared_limits(*by_model.values())
            for model in models:
                title = f"{plots.model_name(model)}: test {plots.metric_title(metric)}"
                png = plots.heatmap_png(by_model[model], title, plots.metric_unit(metric), limits)
                figures.append(Figure("heatmaps", f"heatmap_{model}_{label}_{stat}.png", title,
                                      f"{len(by_model[model])} elements; colour scale shared by every model "
                                      f"({plots.format_value(limits[0])}–{plots.format_value(limits[1])} "
                                      f"{plots.metric_unit(metric)}); grey: not in this sweep.", png))
    return figures


def _values(rows: pd.DataFrame, metric: str) -> dict[str, float]:
    return {r["element"]: float(r[metric]) for _, r in rows.iterrows() if pd.notna(r[metric])}


def learning_curve_figures(table: pd.DataFrame, source: str) -> tuple[list[Figure], pd.DataFrame | None, str | None]:
    """Fig.-6 learning curves and the exponents table; a note instead when the sweep cannot be fitted."""
    from sweep.analysis.exponents import fit_exponents, learning_curve_points

    if table["n_frames"].isna().all():
        return [], None, "This sweep has no learning-curve runs."
    try:
        points = learning_curve_points(table, source=source)
        fits = fit_exponents(points, source=source)
    except InputError as exc:
        return [], None, f"Learning curves not fitted: {exc.line()}"
    figures = []
    for metric in fits["metric"].unique():
        png = plots.plot_learning_curves(points, fits, metric)
        figures.append(Figure("learning", f"learning_curves_{metric}.png",
                              f"Learning curves: {plots.metric_title(metric)}",
                              "Least-squares fit of ε = a·N^b in log–log space; "
                              "± is the 95% confidence half-width of b.",
                              png, wide=points["element"].nunique() > 2))
    return figures, fits, None


def parity_figures(runs: SweepRuns, final: pd.DataFrame, scratch: Path) -> tuple[list[Figure], list[str]]:
    """One parity figure per element, a row per model, from each exported run's ``predictions.npz``."""
    figures, missing = [], []
    for element in [e for e in ELEMENTS if e in set(final["element"])]:
        arrays = {}
        for _, run in final[final["element"] == element].iterrows():
            if PREDICTIONS_ARTIFACT not in runs.list_artifacts(run["run_id"]):
                missing.append(f"{element} {plots.model_name(run['model'])}")
                continue
            path = runs.download(run["run_id"], PREDICTIONS_ARTIFACT, scratch / run["run_id"])
            with np.load(path) as npz:
                arrays[run["model"]] = {k: npz[k] for k in npz.files}
        if arrays:
            figures.append(Figure("parity", f"parity_{element}.png", f"{element}: predicted vs reference",
                                  "Test frames of the exported model; red line: perfect agreement.",
                                  plots.parity_png(element, arrays), wide=True))
    return figures, missing


def transfer_figures(table: pd.DataFrame, tie_rtol: float = TIE_RTOL) -> list[Figure]:
    """Transfer heatmaps (% error of each label), one colour scale per label shared by the models."""
    runs = table[table["task"].isin(list(plots.TRANSFER_TASKS))]
    if runs.empty:
        return []
    chosen = []
    for (element, model, task), group in runs.groupby(["element", "model", "task"]):
        best = pick_best(group, model, tie_rtol)
        chosen.append(best[0] if best is not None else group.iloc[0])
    chosen = pd.DataFrame(chosen)
    figures = []
    for label in ("forces", "energy", "stress"):
        metric = f"test_{label}_pct"
        if metric in chosen.columns and chosen[metric].notna().any():
            figures.append(Figure("transfer", f"transfer_{label}_pct.png",
                                  f"Transfer from cold: {plots.metric_title(metric)}",
                                  "Trained on the cold trajectory, tested on the warm or the melt one.",
                                  plots.transfer_png(chosen, metric), wide=chosen["element"].nunique() > 8))
    return figures


def phonon_figures(folder: Path | None) -> list[Figure]:
    """The ``phonons_<El>.png`` of ``folder`` (written by ``tm23-sweep phonons``), in table order."""
    import json

    from sweep.analysis.phonons import output_paths

    figures = []
    for element in ELEMENTS if folder is not None else ():
        png, data = output_paths(folder, element)
        if not png.is_file():
            continue
        caption = "Reference black, models coloured; right: RMS frequency error per branch."
        if data.is_file():
            result = json.loads(data.read_text())
            errors = ", ".join(f"{plots.model_name(m)} {e['rms_thz']:.2f} THz" for m, e in result["models"].items())
            caption = (f"{result['reference']['label']} in black; RMS error over the path: {errors}. "
                       f"Supercell {'×'.join(map(str, result['supercell']))}, displacement "
                       f"{result['displacement_A']} Å.")
        figures.append(Figure("phonons", png.name, f"{element}: phonon band structure", caption, png.read_bytes(),
                              wide=True))
    return figures


def trial_table(table: pd.DataFrame) -> dict[str, Any]:
    """The trials for the template: header of (name, numeric) and rows of (text, sort key, numeric) cells."""
    models = table["model"].unique()
    shown = [c for c in param_columns(table)
             if any(is_hyperparameter(m, c.removeprefix("params.")) for m in models) or c == "params.n_train"]
    params = [c for c in shown if table[c].astype(str).nunique() > 1 or len(table) == 1]
    metrics = [m for m in TABLE_METRICS if m in table.columns]
    columns = ["element", "model", "task", "trial_id"] + params + metrics + ["run_id"]
    order = {s: i for i, s in enumerate(ELEMENTS)}
    cells = {c: [_cell(run.get(c)) for _, run in table.iterrows()] for c in columns}
    cells["element"] = [(e, order.get(e, 99), False) for e in table["element"]]  # sort in table order
    numeric = {c: c != "element" and all(n or t == "" for t, _, n in cells[c]) for c in columns}
    header = [(c.removeprefix("params."), numeric[c]) for c in columns]
    rows = [[(cells[c][i][0], cells[c][i][1], numeric[c]) for c in columns] for i in range(len(table))]
    return {"header": header, "rows": rows}


def _cell(value: Any) -> tuple[str, Any, bool]:
    """(display text, sort key, is a number) of one table value."""
    if isinstance(value, (bool, np.bool_)):
        return str(value), str(value), False
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value):
            return "", "", False
        return plots.format_value(float(value)), float(value), True
    if isinstance(value, (int, np.integer)):
        return str(value), int(value), True
    if value is None or value is pd.NA:
        return "", "", False
    return str(value), str(value), False


def check_out(out: Path) -> None:
    """Refuse ``--out`` unless it is new, empty, or an earlier report (it is replaced whole, never another folder)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise InputError(str(out), "--out", "exists and is not a tm23-sweep report folder; choose a new or empty one")


def render_page(context: dict[str, Any], template_dir: Path = DASHBOARDS_DIR, template: str = TEMPLATE) -> str:
    """Render the dashboard template with ``context`` (autoescaped)."""
    import jinja2

    if not (template_dir / template).exists():
        raise InputError(str(template_dir / template), "template", "dashboard template not found")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template_dir)),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)
    return env.get_template(template).render(**context)


def build_report(runs: SweepRuns, out: str | Path, tie_rtol: float = TIE_RTOL,
                 template_dir: Path = DASHBOARDS_DIR, progress: bool = False,
                 phonons: Path | None = None) -> ReportResult:
    """Write ``out/index.html`` (self-contained) and every figure as ``out/<name>.png``.

    ``phonons``: a folder of ``tm23-sweep phonons`` output; its band structures join the page.
    """
    out = Path(out)
    check_out(out)
    if phonons is not None and not Path(phonons).is_dir():
        raise InputError(str(phonons), "--phonons", "not a folder (expected the --out of `tm23-sweep phonons`)")
    table = runs.table
    final = final_runs(table, tie_rtol)
    notes: list[str] = []
    steps = ["heatmaps", "learning curves", "parity plots", "transfer", "page"]
    with _progress(progress, len(steps)) as advance, tempfile.TemporaryDirectory(prefix="tm23-report-") as scratch:
        figures = heatmap_figures(final) if not final.empty else []
        if final.empty:
            notes.append("No scored grid or full runs: no heatmaps or parity plots.")
        advance("learning curves")
        learning, fits, note = learning_curve_figures(table, runs.source)
        notes += [note] if note else []
        advance("parity plots")
        parity, missing = parity_figures(runs, final, Path(scratch)) if not final.empty else ([], [])
        if missing:
            notes.append(f"No predictions.npz for: {', '.join(missing)}.")
        advance("transfer")
        transfer = transfer_figures(table, tie_rtol)
        advance("page")
        figures += learning + parity + transfer + phonon_figures(phonons)
        context = {
            "title": f"tm23-sweep: {', '.join(runs.names)}",
            "sweeps": runs.names, "tracking_uri": runs.public_uri, "mlflow_links": mlflow_links(runs),
            "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "counts": {"runs": len(table), "elements": table["element"].nunique(), "models": table["model"].nunique(),
                       "tasks": ", ".join(sorted(table["task"].unique()))},
            "sections": _sections(figures),
            "best": _best_rows(final),
            "fits": _fit_rows(fits),
            "notes": notes,
            "trials": trial_table(table),
            "labels": LABELS,
        }
        html = render_page(context, template_dir)
        with atomic_directory(out) as tmp:
            written = [atomic_write_bytes(tmp / f.name, f.png) for f in figures]
            atomic_write_text(tmp / PAGE, html)
            atomic_write_json(tmp / MANIFEST, {"sweeps": runs.names, "tracking_uri": runs.public_uri,
                                               "trials": len(table), "figures": [f.name for f in figures],
                                               "notes": notes})
    return ReportResult(page=out / PAGE, figures=[out / p.name for p in written], notes=notes)


def mlflow_links(runs: SweepRuns) -> list[dict[str, str]]:
    """Each sweep's experiment in the MLflow UI (model-training view): ``{"sweep", "url"}``."""
    from sweep.integrations.mlflow import experiment_ids, ui_link

    found = experiment_ids(runs.tracking_uri, runs.names)
    return [{"sweep": name, "url": ui_link(runs.tracking_uri, found.get(name))} for name in runs.names]


SECTION_TITLES = {
    "heatmaps": "Errors across the d-block",
    "learning": "Learning curves",
    "parity": "Parity plots",
    "transfer": "Transfer from cold to warm and melt",
    "phonons": "Phonon band structures",
}
#: Sections left off the page when they have no figure (they need inputs beyond the sweep).
OPTIONAL_SECTIONS = ("phonons",)


def _sections(figures: list[Figure]) -> list[dict[str, Any]]:
    sections = [{"id": key, "title": title, "figures": [f for f in figures if f.section == key]}
                for key, title in SECTION_TITLES.items()]
    return [s for s in sections if s["figures"] or s["id"] not in OPTIONAL_SECTIONS]


def _best_rows(final: pd.DataFrame) -> list[dict[str, str]]:
    rows = []
    for _, r in final.iterrows():
        rows.append({"element": r["element"], "model": plots.model_name(r["model"]), "task": r["task"],
                     **{m: plots.format_value(float(r[m])) if m in r.index and pd.notna(r[m]) else "–"
                        for m in ("test_energy_mae", "test_forces_mae", "test_stress_mae",
                                  "test_energy_pct", "test_forces_pct", "test_stress_pct")},
                     "selection": r["selection"]})
    return rows


def _fit_rows(fits: pd.DataFrame | None) -> list[dict[str, str]]:
    if fits is None:
        return []
    return [{"element": r["element"], "model": plots.model_name(r["model"]), "variant": r["variant"] or "–",
             "metric": plots.metric_title(r["metric"]), "a": f"{r['a']:.4g}", "b": f"{r['b']:.3f}",
             "ci": f"[{r['b_low']:.3f}, {r['b_high']:.3f}]", "r2": f"{r['r2']:.3f}",
             "N": " ".join(map(str, r["N"]))} for _, r in fits.iterrows()]


class _progress:
    """A rich progress bar over the report's steps, or nothing."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.bar = enabled, total, None

    def __enter__(self):
        if self.enabled:
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.bar.start()
            self.task = self.bar.add_task("report: heatmaps", total=self.total)
        return self.advance

    def advance(self, description: str) -> None:
        """Mark a step done and name the next."""
        if self.bar is not None:
            self.bar.update(self.task, advance=1, description=f"report: {description}")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
