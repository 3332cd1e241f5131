"""``tm23-sweep data``: generate the embedded mini-TM23, ingest archives, inspect stores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from sweep.data.generate.labellers import DEFAULT_LABELLER
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
    out: Annotated[Path, typer.Option("--out", help="Folder to write the mini archive into (must not hold one).")],
    elements: Annotated[str, typer.Option(help="Comma-separated symbols, or 'all'.")] = "all",
    frames_per_temperature: Annotated[int, typer.Option(min=10, help="Frames per temperature (9:1 train:test).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed: same inputs, same bytes.")] = 0,
    labeller: Annotated[str, typer.Option(help="Who labels the frames: sevennet or chgnet (PBE level), or classical.")
                        ] = DEFAULT_LABELLER,
    jobs: Annotated[int, typer.Option(min=1, help="Trajectories generated at once (one core each).")] = 1,
    cache: Annotated[bool, typer.Option(help="Reuse and keep generated elements in $TM23_CACHE_DIR.")] = True,
) -> None:
    """Write a mini TM23 archive in the real layout: classical MD, frames labelled at PBE level; print each phase."""
    symbols = _elements(elements)
    from sweep.data.archive import scan_archive
    from sweep.data.generate import generate_archive
    from sweep.data.generate.cache import default_cache_root

    collection = generate_archive(out, symbols, frames_per_temperature=frames_per_temperature, seed=seed,
                                  progress=True, labeller=labeller, jobs=jobs,
                                  cache_root=default_cache_root() if cache else None)
    console.print(f"wrote {collection}")
    print_phases(archive_phases(scan_archive(collection)))


def archive_phases(contents) -> list:
    """The phase check of every trajectory of a scanned archive (train then test frames, in time order)."""
    from sweep.data.archive import SPLITS, read_extxyz
    from sweep.data.phase import check_phase

    checks = []
    for element in contents.elements:
        for temperature in contents.temperatures(element):
            frames = [f for split in SPLITS for f in read_extxyz(contents.per_temperature[(element, temperature, split)])]
            checks.append(check_phase(frames, element, temperature))
    return checks


def store_phases(store) -> list:
    """The phase check of every trajectory in a store."""
    from sweep.data.phase import check_phase

    return [check_phase(store.frames(element, temperature), element, temperature)
            for element in store.elements() for temperature in store.temperatures(element)]


def print_phases(checks) -> None:
    """A table of the phase checks, and one warning line per trajectory in the wrong phase."""
    table = Table("element", "temperature", "phase", "expected", "MSD slope (Å²/ps)", "MSD (Å²)", "Wendt–Abraham",
                  "mean P (GPa)", "mean |F| (eV/Å)", title="phase check")
    for c in checks:
        mark = "" if c.ok else "[bold red]"
        table.add_row(c.element, c.temperature, f"{mark}{c.phase}", str(c.expected), f"{c.msd_slope_A2_per_ps:.2f}",
                      f"{c.msd_final_A2:.2f}", f"{c.wendt_abraham:.2f}",
                      "n/a" if c.mean_pressure_GPa is None else f"{c.mean_pressure_GPa:.1f}",
                      "n/a" if c.mean_abs_force is None else f"{c.mean_abs_force:.2f}")
    console.print(table)
    for c in checks:
        if not c.ok:
            console.print(f"[bold yellow]warning:[/bold yellow] {c.describe()}")


@app.command()
def potentials() -> None:
    """List the labellers (package, version, citation) and each element's classical MD potential."""
    from sweep.data.generate import potential_table
    from sweep.data.generate.archive_writer import md_potential_name
    from sweep.data.generate.labellers import DEFAULT_LABELLER, LABELLERS

    labellers = Table("labeller", "package", "model", "level of theory", "citation", title="labellers")
    for lab in LABELLERS.values():
        name = f"{lab.name} (default)" if lab.name == DEFAULT_LABELLER else lab.name
        labellers.add_row(name, f"{lab.package}=={lab.version}", lab.model, lab.level_of_theory, lab.citation)
    console.print(labellers)
    table = Table("element", "pair style", "files", "fallback", "MD T scale", "MD driven by", "citation",
                  title="classical potentials (drive the MD unless named otherwise; label with --labeller classical)")
    for p in potential_table():
        driver = "" if p.md_driver == "classical" else \
            f"{md_potential_name(p, p.md_driven[0])} ({', '.join(p.md_driven)}), {p.md_timestep_fs:g} fs steps"
        table.add_row(p.element, p.pair_style, ", ".join(p.files), "yes" if p.fallback else "",
                      f"{p.md_temperature_scale:g}", driver, p.citation)
    console.print(table)


@app.command("calibrate-md")
def calibrate_md(
    elements: Annotated[str, typer.Option(help="Comma-separated symbols, or 'all'.")],
    frames_per_temperature: Annotated[int, typer.Option(min=10, help="Frames per trajectory (as generate).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the MD (as generate).")] = 0,
    jobs: Annotated[int, typer.Option(min=1, help="Elements calibrated at once (one core each).")] = 1,
) -> None:
    """Find the MD temperature scale nearest to 1 that puts each metal's cold, warm and melt in their phases."""
    from sweep.data.generate.calibration import calibrate

    symbols = _elements(elements)
    table = Table("element", "scale", "cold", "warm", "melt", title="MD temperature scale (× 0.25, 0.75, 1.25 Tmelt)")

    def report(outcomes) -> None:
        for outcome in outcomes:
            console.print(outcome.describe())
        last = outcomes[-1]
        phases = [f"{c.phase} ({c.msd_final_A2:.2f} Å²)" for c in last.checks]
        table.add_row(last.element, f"{last.scale:g}" if last.ok else "none found", *phases)

    calibrate(symbols, frames_per_temperature, seed, jobs=jobs, on_element=report)
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

    from sweep.data.archive import scan_archive

    if "://" in path or (Path(path) / MANIFEST).exists():
        store = FrameStore.open(path)
        _print_store(store)
        print_phases(store_phases(store))
    else:
        _print_archive(Path(path))
        print_phases(archive_phases(scan_archive(Path(path))))


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
