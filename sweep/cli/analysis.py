"""``tm23-sweep exponents | export | report``: a sweep's science outputs, from its MLflow runs.

``app`` carries the three commands without a group name, so that
``parent.add_typer(app)`` makes them top-level commands of ``tm23-sweep``.
Each reads the sweep's experiment(s) from ``--tracking-uri`` if given, else from where the sweeps
log: $MLFLOW_TRACKING_URI, else ``sqlite:///<--runs-dir>/mlruns.db`` (runs dir default ``./runs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()

Names = Annotated[list[str], typer.Argument(help="Sweep name(s): the MLflow experiment(s) to read.",
                                            show_default=False)]
RunsDir = Annotated[Optional[Path], typer.Option(
    "--runs-dir", help="Runs root holding mlruns.db [default: ./runs; $MLFLOW_TRACKING_URI wins].")]
TrackingUri = Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (overrides all).")]
TieRtol = Annotated[float, typer.Option(
    "--tie-rtol", min=0.0, help="FLARE: force MAEs within this fraction of the best tie; the higher likelihood wins.")]


def _load(names: list[str], runs_dir: Path | None, tracking_uri: str | None):
    from sweep.analysis.runs import load_runs

    with console.status("reading runs from MLflow"):
        return load_runs(names, runs_dir=runs_dir, tracking_uri=tracking_uri)


@app.command()
def exponents(
    names: Names,
    runs_dir: RunsDir = None,
    tracking_uri: TrackingUri = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Output folder [default: <runs-dir>/analysis/<NAME>].")] = None,
    by: Annotated[Optional[list[str]], typer.Option(
        "--by", help="Hyperparameter(s) telling curves apart, e.g. l_max [default: those that differ].")] = None,
    metric: Annotated[Optional[list[str]], typer.Option(
        "--metric", help="Error(s) to fit [default: test MAE of energy, forces, stress].")] = None,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Confidence level of b's interval.")] = 0.95,
) -> None:
    """Fit learning exponents ε = a·N^b (log–log least squares) per element, model and variant."""
    from sweep.analysis.exponents import DEFAULT_METRICS, fit_exponents, learning_curve_points, write_exponents
    from rich import box

    from sweep.analysis.plots import format_value, metric_title, model_name

    runs = _load(names, runs_dir, tracking_uri)
    points = learning_curve_points(runs.table, metric or DEFAULT_METRICS, by=by, source=runs.source)
    fits = fit_exponents(points, confidence=confidence, source=runs.source)
    out = out or (runs_dir or Path("runs")) / "analysis" / "-".join(names)
    written = write_exponents(fits, points, out)
    table = Table(title=f"ε = a·N^b (b with its {confidence:.0%} confidence interval)", box=box.SIMPLE_HEAD,
                  show_edge=False, collapse_padding=True, pad_edge=False)
    for name in ("El", "model", "variant", "error", "a", "b", "CI of b", "R²", "N"):
        table.add_column(name, no_wrap=True)
    for _, f in fits.iterrows():
        table.add_row(f["element"], model_name(f["model"]), f["variant"] or "-", metric_title(f["metric"]),
                      format_value(f["a"]), f"{f['b']:.3f}", f"[{f['b_low']:.2f}, {f['b_high']:.2f}]",
                      f"{f['r2']:.3f}", f"{min(f['N'])}–{max(f['N'])}")
    console.print(table)
    for path in written.values():
        console.print(f"wrote {path}")


@app.command()
def export(
    names: Names,
    out: Annotated[Path, typer.Option("--out", help="Export folder (replaced whole, atomically).")],
    runs_dir: RunsDir = None,
    tracking_uri: TrackingUri = None,
    tie_rtol: TieRtol = 0.01,
) -> None:
    """Export the best config per element and model in native form, with a Table-1 summary."""
    from sweep.analysis.export import check_out, export_best

    check_out(out)  # before anything is read: a folder of the user's is never touched
    runs = _load(names, runs_dir, tracking_uri)
    result = export_best(runs, out, tie_rtol=tie_rtol, progress=True)
    console.print((result.out / "summary.md").read_text())
    console.print(f"exported {len(result.summary)} models to {result.out}")


@app.command()
def report(
    names: Names,
    out: Annotated[Path, typer.Option("--out", help="Dashboard folder (replaced whole, atomically).")],
    runs_dir: RunsDir = None,
    tracking_uri: TrackingUri = None,
    tie_rtol: TieRtol = 0.01,
    template_dir: Annotated[Optional[Path], typer.Option(
        "--template-dir", help="Folder holding report.html.j2 [default: dashboards/].")] = None,
    phonons: Annotated[Optional[Path], typer.Option(
        "--phonons", help="Folder written by `tm23-sweep phonons`: its band structures join the page.")] = None,
) -> None:
    """Write a self-contained HTML dashboard and a PNG of every figure."""
    from sweep.analysis.report import DASHBOARDS_DIR, build_report, check_out

    check_out(out)
    runs = _load(names, runs_dir, tracking_uri)
    result = build_report(runs, out, tie_rtol=tie_rtol, template_dir=template_dir or DASHBOARDS_DIR, progress=True,
                          phonons=phonons)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"wrote {result.page} and {len(result.figures)} figures")
