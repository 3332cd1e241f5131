"""Generate the embedded mini-TM23 and write it in the real archive's layout.

Per element: one vacancy supercell (seeded), then per temperature a Langevin trajectory
at 0.25/0.75/1.25 Tmelt driven by the element's classical potential (or by a labeller,
where no potential at hand melts the metal near its Tmelt; the melt first melted at
2 Tmelt), sampled every 50 fs after 5 ps, each frame labelled by the data set's labeller
(SevenNet-0 by default, PBE level). The first 90% of each trajectory's frames are train
and the last 10% test, as the archive's first 900 / last 100; the ``2700cwm`` files
concatenate the three temperatures.

Trajectories run in worker processes (one thread each, ``jobs`` at a time). Each element's
files are cached by their inputs (:mod:`sweep.data.generate.cache`). The collection is
built in a temporary sibling and renamed into place only when every element is done; an
existing collection, whoever wrote it, is never replaced.
"""

from __future__ import annotations

import math
import multiprocessing
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Sequence

import ase.io
import numpy as np
from ase import Atoms
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sweep.data.archive import COLLECTION_DIR, combined_filename, per_temperature_filename
from sweep.data.frames import relabel
from sweep.data.generate.cache import PROTOCOL_VERSION, ElementCache, element_key
from sweep.data.generate.labellers import DEFAULT_LABELLER, get_labeller
from sweep.data.generate.md import MDSettings, run_trajectory
from sweep.data.generate.potentials import PotentialInfo, potential_info
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


def generate_trajectory(symbol: str, label: str, frames_per_temperature: int, seed: int,
                        settings: MDSettings = MDSettings(), labeller: str = DEFAULT_LABELLER,
                        md_temperature_scale: float | None = None) -> list[Atoms]:
    """One trajectory of ``symbol`` at temperature ``label``: MD by the element's MD driver, labels by ``labeller``.

    The MD runs at ``md_temperature_scale`` × TM23's temperature (default: the potential's own
    scale, :attr:`PotentialInfo.md_temperature_scale`); each frame records both.
    """
    element = get_element(symbol)
    start, site = vacancy_supercell(element, _rng(seed, element.Z))
    md = potential_info(symbol)
    driver = md.driver(label)
    scale = md.md_temperature_scale if md_temperature_scale is None else md_temperature_scale
    who = get_labeller(labeller)
    base = {"element": symbol, "temperature": label, "vacancy_site": site,
            "n_perfect_supercell": len(perfect_supercell(element)), "md_potential": md_potential_name(md, label),
            "md_potential_fallback": md.fallback and driver == "classical",
            "protocol_version": PROTOCOL_VERSION, "tm23_temperature_K": element.temperature(label),
            "md_temperature_scale": scale, **who.describe()}
    premelt = scale * settings.premelt_factor * element.t_melt if label == "melt" else None
    frames = run_trajectory(start, get_labeller(driver).calculator(symbol), scale * element.temperature(label),
                            frames_per_temperature, _rng(seed, element.Z, TEMPERATURES.index(label) + 1),
                            md_settings(md, settings, label), info=base, premelt_K=premelt)
    if who.name == driver:  # the MD's calculator labelled the frames already
        return frames
    calculator = who.calculator(symbol)
    return [relabel(frame, calculator) for frame in frames]


def md_potential_name(md: PotentialInfo, temperature: str) -> str:
    """What drove one trajectory's MD, as its frames record it: the pair style, or the labeller's model."""
    driver = md.driver(temperature)
    return md.pair_style if driver == "classical" else get_labeller(driver).model


def md_drivers(md: PotentialInfo) -> str:
    """What drove an element's MD, as cache entries record it: one name, or each trajectory's where they differ."""
    names = {label: md_potential_name(md, label) for label in TEMPERATURES}
    if len(set(names.values())) == 1:
        return names[TEMPERATURES[0]]
    return ", ".join(f"{label}: {name}" for label, name in names.items())


def md_settings(md: PotentialInfo, settings: MDSettings, temperature: str | None = None) -> MDSettings:
    """``settings`` with the element's own MD step where its driver drives the trajectory at ``temperature``.

    Without ``temperature``: the settings of the driven trajectories (what cache entries record).
    """
    driven = md.md_driver != "classical" and (temperature is None or temperature in md.md_driven)
    if md.md_timestep_fs is None or not driven:
        return settings
    return settings.model_copy(update={"timestep_fs": md.md_timestep_fs})


def generate_element(symbol: str, frames_per_temperature: int, seed: int, settings: MDSettings = MDSettings(),
                     labeller: str = DEFAULT_LABELLER) -> dict[str, list[Atoms]]:
    """Labelled frames of one element at cold, warm and melt, by temperature label (in this process)."""
    return {label: generate_trajectory(symbol, label, frames_per_temperature, seed, settings, labeller)
            for label in TEMPERATURES}


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


def one_core_worker() -> None:
    """Initialiser of a generator worker process: torch on one thread (the pool gives the parallelism)."""
    import torch

    torch.set_num_threads(1)


def _element_inputs(symbol: str, frames_per_temperature: int, seed: int, settings: MDSettings,
                    labeller: str) -> dict:
    who, md = get_labeller(labeller), potential_info(symbol)
    return {"element": symbol, "frames_per_temperature": frames_per_temperature, "seed": seed,
            "md": md_settings(md, settings).model_dump(), "md_potential": md_drivers(md),
            "md_temperature_scale": md.md_temperature_scale, "labeller": who.describe()}


def generate_archive(
    out: Path,
    elements: Sequence[str],
    frames_per_temperature: int = 100,
    seed: int = 0,
    progress: bool = True,
    labeller: str = DEFAULT_LABELLER,
    settings: MDSettings = MDSettings(),
    cache_root: Path | None = None,
    jobs: int = 1,
) -> Path:
    """Generate the mini archive under ``out`` and return its ``benchmarking_master_collection`` folder.

    Writes ``{El}_{cold|warm|melt}_nequip_{train|test}.xyz`` and ``{El}_2700cwm_{train|test}.xyz``
    for each element, byte-identical for the same inputs. Elements found in the cache under
    ``cache_root`` are copied, the others generated in ``jobs`` worker processes (and cached).
    An existing collection at ``out`` is refused before anything is computed.
    """
    symbols = _check_request(elements, frames_per_temperature)
    get_labeller(labeller)
    collection = Path(out) / COLLECTION_DIR
    if collection.exists():
        raise InputError(collection, "--out", "an archive is already there and is never replaced; "
                         "choose another --out or remove it yourself")
    cache = ElementCache(cache_root) if cache_root is not None else None
    inputs = {s: _element_inputs(s, frames_per_temperature, seed, settings, labeller) for s in symbols}
    keys = {s: element_key(inputs[s]) for s in symbols}
    cached = {s: cache.find(s, keys[s]) for s in symbols} if cache else {}
    todo = [s for s in symbols if not cached.get(s)]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, disable=not progress) as bar, atomic_directory(collection, replace=False) as tmp, \
                tempfile.TemporaryDirectory(dir=tmp.parent, prefix=f".{COLLECTION_DIR}.build.") as build:
            task = bar.add_task(f"trajectories ({len(symbols) - len(todo)} elements cached)", total=3 * len(todo))
            for symbol in symbols:
                if cached.get(symbol):
                    for path in sorted(cached[symbol].glob("*.xyz")):
                        shutil.copy2(path, tmp / path.name)
            frames = _run_trajectories(todo, frames_per_temperature, seed, settings, labeller, jobs,
                                       on_done=lambda: bar.advance(task))
            for symbol in todo:
                folder = Path(build) / symbol
                folder.mkdir()
                for path in write_element(folder, symbol, frames[symbol]):
                    shutil.copy2(path, tmp / path.name)
                if cache is not None:
                    cache.store(symbol, keys[symbol], inputs[symbol], folder)
    except FileExistsError:
        raise InputError(collection, "--out", "an archive appeared there while generating; it is left as it is") \
            from None
    return collection


#: How much more an MD step costs when a labeller drives it than a classical potential (SevenNet-0
#: about 0.15 s per step on 31 atoms and one core, a MEAM about 1.5 ms).
LABELLER_STEP_COST = 100.0


def _expected_cost(symbol: str, label: str, frames_per_temperature: int, settings: MDSettings) -> float:
    """A trajectory's expected MD cost in atom-steps of a classical potential (for ordering the work only)."""
    md = potential_info(symbol)
    own = md_settings(md, settings, label)
    time_fs = own.equilibration_fs + frames_per_temperature * own.sample_interval_fs
    if label == "melt":
        time_fs += own.premelt_fs
    weight = 1.0 if md.driver(label) == "classical" else LABELLER_STEP_COST
    return own.steps(time_fs) * len(perfect_supercell(get_element(symbol))) * weight


def _run_trajectories(symbols: list[str], frames_per_temperature: int, seed: int, settings: MDSettings,
                      labeller: str, jobs: int, on_done) -> dict[str, dict[str, list[Atoms]]]:
    """Every (element, temperature) trajectory of ``symbols``, ``jobs`` worker processes at a time.

    The longest are submitted first, so that no long trajectory starts last and runs alone.
    """
    out: dict[str, dict[str, list[Atoms]]] = {s: {} for s in symbols}
    if not symbols:
        return out
    context = multiprocessing.get_context("spawn")  # LAMMPS and torch do not survive a fork
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=context, initializer=one_core_worker) as pool:
        pairs = sorted(((s, label) for s in symbols for label in TEMPERATURES),
                       key=lambda pair: -_expected_cost(*pair, frames_per_temperature, settings))
        futures = {pool.submit(generate_trajectory, s, label, frames_per_temperature, seed, settings, labeller):
                   (s, label) for s, label in pairs}
        for future in as_completed(futures):
            symbol, label = futures[future]
            out[symbol][label] = future.result()
            on_done()
    return out
