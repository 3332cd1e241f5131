"""``tm23-sweep data``: generate the embedded mini-TM23, ingest archives, inspect stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sweep.elements import SYMBOLS, parse_element_list
from sweep.errors import InputError

app = typer.Typer(help="Archive, embedded dataset and Parquet store.", no_args_is_help=True)
console = Console()


def _elements(text: str, option: str = "--elements") -> list[str]:
    try:
        return parse_element_list(text)
    except KeyError as exc:
        raise InputError(option, "elements", exc.args[0]) from None


@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the mini archive into.")],
    elements: Annotated[str, typer.Option(help="Comma-separated symbols, or 'all'.")] = "all",
    frames_per_temperature: Annotated[int, typer.Option(min=10, help="Frames per temperature (9:1 train:test).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same bytes.")] = 0,
) -> None:
    """Write a mini TM23 archive in the real layout, labelled by published classical potentials."""
    symbols = _elements(elements)
    from sweep.data.generate import generate_archive

    collection = generate_archive(out, symbols, frames_per_temperature=frames_per_temperature,
                                  seed=seed, progress=True)
    console.print(f"wrote {collection}")


@app.command()
def potentials() -> None:
    """List each element's classical potential and its citation."""
    from sweep.data.generate import potential_table

    table = Table("element", "pair style", "files", "fallback", "citation")
    for p in potential_table():
        table.add_row(p.element, p.pair_style, ", ".join(p.files), "yes" if p.fallback else "", p.citation)
    console.print(table)


@app.command()
def ingest(
    archive: Annotated[Path, typer.Argument(help="Archive folder (or its benchmarking_master_collection).")],
    store: Annotated[str, typer.Option("--store", help="Store path or pyarrow filesystem URI.")],
    elements: Annotated[str, typer.Option(help="Comma-separated symbols, or 'all' present.")] = "all",
) -> None:
    """Validate an archive and add it to the Parquet store (atomic, idempotent)."""
    from sweep.data.store import ingest_archive

    wanted = None if elements == "all" else _elements(elements)
    opened = ingest_archive(archive, store, elements=wanted, progress=True)
    _print_store(opened)


@app.command()
def info(path: Annotated[str, typer.Argument(help="A store, or an archive folder.")]) -> None:
    """Report which elements, temperatures and splits a store or an archive holds."""
    from sweep.data.store import MANIFEST, FrameStore

    if "://" in path or (Path(path) / MANIFEST).exists():
        _print_store(FrameStore.open(path))
    else:
        _print_archive(Path(path))


def _print_store(store) -> None:
    rows = store.summary()
    table = Table("element", "temperature", "T (K)", "train", "test", title=f"store {store.uri}")
    for r in rows:
        table.add_row(r["element"], r["temperature"], f"{r['temperature_K']:.0f}", str(r["train"]), str(r["test"]))
    console.print(table)
    labels = {tuple(sorted(p.labels.items())) for p in store.manifest.partitions.values()}
    for entry in labels:
        d = dict(entry)
        console.print(f"labels: energy={d['energy_key']} forces={d['forces_key']} stress={d['stress_key']} "
                      f"({d['stress_components']} components) units {d['units']}, stress sign {d['stress_sign']} [assumed]")
    console.print(f"{len(store.elements())} elements, {len(rows)} trajectories, "
                  f"{sum(r['train'] + r['test'] for r in rows)} frames")


def _print_archive(path: Path) -> None:
    from sweep.data.archive import SPLITS, scan_archive
    from sweep.elements import TEMPERATURES

    contents = scan_archive(path)
    table = Table("element", *[f"{t} {s}" for t in TEMPERATURES for s in SPLITS], "2700cwm",
                  title=f"archive {contents.root}")
    for el in contents.elements:
        cells = [_count(contents.per_temperature.get((el, t, s))) for t in TEMPERATURES for s in SPLITS]
        combined = "/".join(_count(contents.combined.get((el, s))) for s in SPLITS)
        table.add_row(el, *cells, combined)
    console.print(table)
    missing = [s for s in SYMBOLS if s not in contents.elements]
    console.print(f"{len(contents.elements)} elements present" + (f"; absent: {', '.join(missing)}" if missing else ""))


def _count(path: Path | None) -> str:
    from sweep.data.archive import count_frames

    return "-" if path is None else str(count_frames(path))
