"""``tm23-sweep demo``: the main job on the embedded default (Au, Cu, Os, Ti).

Each stage is skipped when its output is already there, so a rerun resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
DEMO_ELEMENTS = ("Au", "Cu", "Os", "Ti")


def demo(
    out: Annotated[Path, typer.Option(help="Folder for every demo output.")] = Path("demo-output"),
    frames_per_temperature: Annotated[int, typer.Option(min=10)] = 100,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Generate and ingest the embedded mini-TM23 for Au, Cu, Os and Ti, then summarise it."""
    from sweep.cli.data import _print_store
    from sweep.data import FrameStore, ingest_archive
    from sweep.data.archive import COLLECTION_DIR
    from sweep.data.generate import generate_archive

    archive = out / "archive"
    store_path = out / "store"
    if not (archive / COLLECTION_DIR).is_dir():
        console.rule("1. generate the embedded mini-TM23")
        generate_archive(archive, DEMO_ELEMENTS, frames_per_temperature=frames_per_temperature, seed=seed)
    else:
        console.print(f"[dim]archive present: {archive}[/dim]")
    console.rule("2. ingest into the Parquet store")
    ingest_archive(archive, store_path, progress=True)
    _print_store(FrameStore.open(store_path))
    console.print(f"archive: {archive / COLLECTION_DIR}\nstore:   {store_path}")
