"""Generate the embedded mini-TM23 and write it in the real archive's layout.

Per element: one vacancy supercell (seeded), then per temperature a Langevin
trajectory at 0.25/0.75/1.25 Tmelt labelled by the element's classical potential.
The first 90% of each trajectory's frames are train and the last 10% test, as the
archive's first 900 / last 100; the ``2700cwm`` files concatenate the three
temperatures. The whole collection is built in a temporary sibling and swapped in,
so an interrupted run leaves no half-written archive.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import ase.io
import numpy as np
from ase import Atoms
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sweep.data.archive import COLLECTION_DIR, combined_filename, per_temperature_filename
from sweep.data.generate.md import MDSettings, run_trajectory
from sweep.data.generate.potentials import calculator_for, potential_info
from sweep.data.generate.structures import perfect_supercell, vacancy_supercell
from sweep.elements import TEMPERATURES, get_element
from sweep.errors import InputError
from sweep.io.atomic import atomic_directory

#: The archive's test share of each trajectory (100 of 1000 frames).
TEST_FRACTION = 0.1


def split_counts(n_frames: int) -> tuple[int, int]:
    """(train, test) counts of one trajectory: the last 10% (at least one frame) are test."""
    n_test = max(1, math.floor(n_frames * TEST_FRACTION + 0.5))
    return n_frames - n_test, n_test


def _rng(seed: int, *keys: int) -> np.random.Generator:
    """An independent, reproducible stream for one (seed, element, temperature) combination."""
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def generate_element(
    symbol: str,
    frames_per_temperature: int,
    seed: int,
    settings: MDSettings = MDSettings(),
    on_frame=None,
    on_temperature=None,
) -> dict[str, list[Atoms]]:
    """Labelled frames of one element at cold, warm and melt, by temperature label.

    ``on_temperature(label)`` is called before each trajectory and ``on_frame(k)``
    after each sampled frame (for progress display).
    """
    element = get_element(symbol)
    start, site = vacancy_supercell(element, _rng(seed, element.Z))
    n_perfect = len(perfect_supercell(element))
    info = potential_info(symbol)
    out: dict[str, list[Atoms]] = {}
    for t_index, label in enumerate(TEMPERATURES):
        if on_temperature is not None:
            on_temperature(label)
        base = {"element": symbol, "temperature": label, "vacancy_site": site, "n_perfect_supercell": n_perfect,
                "potential": info.pair_style, "potential_fallback": info.fallback}
        out[label] = run_trajectory(start, calculator_for(symbol), element.temperature(label),
                                    frames_per_temperature, _rng(seed, element.Z, t_index + 1), settings,
                                    info=base, on_frame=on_frame)
    return out


def write_element(folder: Path, symbol: str, frames: dict[str, list[Atoms]]) -> list[Path]:
    """Write one element's per-temperature and combined train/test files into ``folder``."""
    written = []
    combined: dict[str, list[Atoms]] = {"train": [], "test": []}
    for label in TEMPERATURES:
        n_train, _ = split_counts(len(frames[label]))
        parts = {"train": frames[label][:n_train], "test": frames[label][n_train:]}
        for split, part in parts.items():
            path = folder / per_temperature_filename(symbol, label, split)
            ase.io.write(path, part, format="extxyz")
            written.append(path)
            combined[split] += part
    for split, part in combined.items():
        path = folder / combined_filename(symbol, split)
        ase.io.write(path, part, format="extxyz")
        written.append(path)
    return written


def _check_request(elements: Sequence[str], frames_per_temperature: int) -> list[str]:
    symbols = []
    for s in elements:
        try:
            symbols.append(get_element(s).symbol)
        except KeyError as exc:
            raise InputError(None, "elements", str(exc.args[0])) from None
    if not symbols:
        raise InputError(None, "elements", "no element given")
    if len(set(symbols)) != len(symbols):
        raise InputError(None, "elements", f"repeated element in {', '.join(symbols)}")
    if frames_per_temperature < 2:
        raise InputError(None, "frames_per_temperature",
                         f"{frames_per_temperature} is too few: a train and a test frame are needed")
    return symbols


def generate_archive(
    out: Path,
    elements: Sequence[str],
    frames_per_temperature: int = 100,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Generate the mini archive under ``out`` and return its ``benchmarking_master_collection`` folder.

    Writes ``{El}_{cold|warm|melt}_nequip_{train|test}.xyz`` and ``{El}_2700cwm_{train|test}.xyz``
    for each element, byte-identical for the same ``seed``. An existing collection at that
    place is replaced whole, and only once every element has been generated.
    """
    symbols = _check_request(elements, frames_per_temperature)
    collection = Path(out) / COLLECTION_DIR
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress) as bar, atomic_directory(collection) as tmp:
        overall = bar.add_task("elements", total=len(symbols))
        frames_task = bar.add_task("", total=frames_per_temperature)
        for symbol in symbols:
            def on_temperature(label: str, symbol=symbol) -> None:
                bar.reset(frames_task, total=frames_per_temperature, description=f"{symbol} {label}")

            frames = generate_element(symbol, frames_per_temperature, seed,
                                      on_frame=lambda _k: bar.advance(frames_task), on_temperature=on_temperature)
            write_element(tmp, symbol, frames)
            bar.advance(overall)
    return collection
