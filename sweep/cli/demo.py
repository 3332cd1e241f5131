"""``tm23-sweep demo``: the main job on the embedded default (Au, Cu, Os, Ti).

Generate and ingest the mini-TM23, run the paper's pipeline with FLARE B2 and NequIP on
small grids, fit the learning exponents, export the best configurations and write the
dashboard. Every stage skips or resumes what is already done, so a rerun resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
DEMO_ELEMENTS = ("Au", "Cu", "Os", "Ti")
DEMO_SPACE = "demo_pipeline"
DEMO_NAME = "demo"


def demo(
    out: Annotated[Path, typer.Option(help="Folder for every demo output.")] = Path("demo-output"),
    frames_per_temperature: Annotated[int, typer.Option(min=10)] = 100,
    seed: Annotated[int, typer.Option()] = 0,
    num_cpus: Annotated[int | None, typer.Option(min=1, help="CPUs for Ray (default: all).")] = None,
) -> None:
    """Run the main job on the embedded mini-TM23: data, pipeline, exponents, export, dashboard."""
    import os
    import time

    from sweep.cli import analysis as analysis_cli
    from sweep.cli.data import _print_store, print_phases, store_phases
    from sweep.cli.sweeps import _report
    from sweep.data import FrameStore, ingest_archive
    from sweep.data.archive import COLLECTION_DIR
    from sweep.data.generate import generate_archive
    from sweep.analysis.phonons import compute as phonon_bands
    from sweep.analysis.phonons import write as write_phonons
    from sweep.data.generate.cache import default_cache_root
    from sweep.integrations.mlflow import ui_link
    from sweep.tune.pipeline import run_pipeline

    started = time.perf_counter()
    out = out.absolute()
    archive, store_path, runs = out / "archive", out / "store", out / "runs"

    console.rule("1/6 the embedded mini-TM23: generate and ingest")
    if not (archive / COLLECTION_DIR).is_dir():
        generate_archive(archive, DEMO_ELEMENTS, frames_per_temperature=frames_per_temperature, seed=seed,
                         jobs=num_cpus or os.cpu_count() or 1, cache_root=default_cache_root())
    else:
        console.print(f"[dim]archive present: {archive}[/dim]")
    ingest_archive(archive, store_path, progress=True)
    _print_store(FrameStore.open(store_path))
    print_phases(store_phases(FrameStore.open(store_path)))

    console.rule("2/6 pipeline: grid search, then full, transfer and learning curves")
    summary = run_pipeline(DEMO_SPACE, str(store_path), name=DEMO_NAME, runs_dir=runs, num_cpus=num_cpus,
                           loopback_only=True)
    _report(summary.grid)
    if not summary.complete:
        if summary.final is not None:
            _report(summary.final)
        console.print("[red]the pipeline did not finish every trial; rerun `make demo` to resume[/red]")
        raise typer.Exit(1)
    _report(summary.final)
    names = [f"{DEMO_NAME}-grid", f"{DEMO_NAME}-final"]

    console.rule("3/6 learning exponents ε = a·N^b")
    analysis_cli.exponents(names=[f"{DEMO_NAME}-final"], runs_dir=runs, tracking_uri=None, out=out / "exponents",
                           by=None, metric=None, confidence=0.95)
    console.rule("4/6 best configuration per element, in native form")
    analysis_cli.export(names=names, out=out / "export", runs_dir=runs, tracking_uri=None, tie_rtol=0.01)
    console.rule("5/6 phonon band structures of the exported models against the labeller")
    for element in DEMO_ELEMENTS:
        result = phonon_bands(out / "export", element)
        write_phonons(result, out / "phonons")
        console.print(f"{element}: " + ", ".join(f"{name} RMS {e['rms_thz']:.2f} THz" for name, e in result.errors.items()))
    console.rule("6/6 dashboard")
    analysis_cli.report(names=names, out=out / "report", runs_dir=runs, tracking_uri=None, tie_rtol=0.01,
                        template_dir=None, phonons=out / "phonons")

    console.rule(f"done in {time.perf_counter() - started:.0f} s")
    console.print(f"store:      {store_path}\nsweeps:     {runs}\nexponents:  {out / 'exponents'}\n"
                  f"export:     {out / 'export'}\ndashboard:  {out / 'report' / 'index.html'}")
    console.print(f"MLflow UI:  .venv/bin/tm23-sweep ui --runs-dir {runs}   then open", highlight=False)
    for result in (summary.grid, summary.final):
        console.print(f"  {result.name}: {ui_link(result.tracking_uri, result.experiment_id)}", highlight=False,
                      soft_wrap=True)
