"""Phonon band structures of exported models against the data's labeller (the TM23 paper's Fig. 8).

For one element, every model exported under ``EXPORT/<model>/<El>/`` (the layout of
:mod:`sweep.analysis.export`) and the labeller of the embedded data are each turned into an
ASE calculator (the family record's ``calculator``; :mod:`sweep.data.generate.labellers`),
and phonopy computes their harmonic band structures by finite displacements:

- the crystal is the element's ground state at its PBE lattice constants
  (:func:`sweep.data.generate.structures.unit_cell`), the supercell a diagonal repeat of it
  (default: every vector at least :data:`MIN_SUPERCELL_LENGTH` Å);
- the path is the standard one of the primitive cell's Bravais lattice (Setyawan & Curtarolo,
  as ASE's ``Cell.bandpath`` gives it: Γ-X-W-K-Γ-L-U-W-L-K|U-X for fcc, Γ-M-K-Γ-A-L-H-A|L-M|K-H
  for hcp, Γ-H-N-Γ-P-H|P-N for bcc);
- force constants are phonopy's own from the displaced supercells' forces, with no sum rule
  imposed, so the acoustic frequencies at Γ show how well a model keeps translational invariance.

The error of a model is the RMS difference of its frequencies from the reference's, per branch
(branches numbered by frequency at each q-point) and over all of them, in THz. :func:`write`
puts a PNG (bands on the left, error per branch on the right) and a JSON of every frequency and
error into a folder, as ``phonons_<El>.png`` and ``phonons_<El>.json``.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sweep.errors import InputError

#: Default displacement (Å), larger than phonopy's 0.01 Å: with ``--labeller chgnet``, CHGNet 0.3.0's force on a displaced
#: Cu atom is not linear in the displacement (F/d at 0.01 Å is 60% of F/d at 0.04 Å), and at
#: 0.01 Å its Cu and Os bands have imaginary branches (-0.7 THz); at 0.03 Å Cu's have none.
DEFAULT_DISTANCE = 0.03
#: Default supercell: the smallest diagonal repeat of the unit cell with every vector this long (Å).
MIN_SUPERCELL_LENGTH = 10.0
#: q-points per segment of the path.
DEFAULT_NPOINTS = 51
REFERENCE = "reference"
KIND = "tm23-sweep phonons"
PHONOPY_PRIMITIVE = {"fcc": "F", "bcc": "I", "hcp": "P"}
GREEK = {"G": "Γ"}


@dataclass
class Bands:
    """One calculator's band structure along the path: per segment, distances and frequencies (THz)."""

    name: str
    label: str
    distances: list[np.ndarray]
    frequencies: list[np.ndarray]  # per segment, shape (n_q, n_branches), ascending at each q
    gamma_acoustic: list[float]  # the three frequencies of smallest |ν| at Γ
    source: dict[str, Any] = field(default_factory=dict)

    def stacked(self) -> np.ndarray:
        """Every q-point's frequencies, shape (all q, n_branches)."""
        return np.concatenate(self.frequencies)


@dataclass
class PhononResult:
    """Band structures of one element: the reference, each model, the path and each model's errors."""

    element: str
    structure: str
    supercell: tuple[int, int, int]
    distance: float
    ticks: list[float]
    tick_labels: list[str]
    reference: Bands
    models: dict[str, Bands]
    errors: dict[str, dict[str, Any]]
    n_atoms_supercell: int = 0
    n_displacements: int = 0


# --- inputs ------------------------------------------------------------------------------------


def element_record(symbol: str):
    """The element's table entry; an unknown symbol is a one-line :class:`InputError` on ``--element``."""
    from sweep.elements import get_element

    try:
        return get_element(symbol)
    except KeyError as exc:
        raise InputError(None, "--element", exc.args[0]) from None


def model_exports(export_dir: str | Path, element: str) -> dict[str, Path]:
    """``{family name: EXPORT/<family>/<El>}`` for every model of ``element`` in the export folder.

    A folder that is no family's is skipped; none at all is a one-line :class:`InputError`.
    """
    from sweep.trainers.family import families

    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise InputError(str(export_dir), "EXPORT", "not a folder (expected a `tm23-sweep export` folder)")
    known = families()
    found = {name: export_dir / name / element for name in known if (export_dir / name / element).is_dir()}
    if not found:
        present = sorted(p.name for p in export_dir.iterdir() if p.is_dir())
        raise InputError(str(export_dir), "--element",
                         f"no exported model for {element}: no <model>/{element}/ folder of a known family "
                         f"({', '.join(known)}); model folders present: {', '.join(present) or 'none'}")
    return found


# --- computation ---------------------------------------------------------------------------------


def default_supercell(element: str) -> tuple[int, int, int]:
    """The smallest diagonal repeat of the unit cell with every vector ≥ :data:`MIN_SUPERCELL_LENGTH`."""
    from sweep.data.generate.structures import supercell_repeats, unit_cell

    return tuple(int(n) for n in supercell_repeats(unit_cell(element), MIN_SUPERCELL_LENGTH))


def make_phonopy(element: str, supercell: tuple[int, int, int], distance: float):
    """A ``Phonopy`` on the element's unit cell with displacements generated."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    from sweep.data.generate.structures import unit_cell

    record = element_record(element)
    cell = unit_cell(record)
    atoms = PhonopyAtoms(symbols=cell.get_chemical_symbols(), cell=cell.cell.array,
                         scaled_positions=cell.get_scaled_positions())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # phonopy 4 warns that 'auto' differs from v3's default
        phonon = Phonopy(atoms, supercell_matrix=np.diag(supercell),
                         primitive_matrix=PHONOPY_PRIMITIVE.get(record.structure, "auto"))
    phonon.generate_displacements(distance=distance)
    return phonon


def band_path(phonon, npoints: int = DEFAULT_NPOINTS):
    """The standard path of the primitive cell: (q-points per segment, connections, labels of the ends).

    Labels are one per segment end: ``labels[i]`` is (start, end) of segment ``i``.
    """
    from ase.cell import Cell
    from phonopy.phonon.band_structure import get_band_qpoints_and_path_connections

    path = Cell(phonon.primitive.cell).bandpath(npoints=0)
    points = path.special_points
    strokes = [s for s in path.path.split(",") if s]
    names = [_split_labels(s) for s in strokes]
    qpoints, connections = get_band_qpoints_and_path_connections(
        [[points[n] for n in stroke] for stroke in names], npoints=npoints)
    ends = [(a, b) for stroke in names for a, b in zip(stroke[:-1], stroke[1:])]
    return qpoints, connections, ends


def _split_labels(stroke: str) -> list[str]:
    """``"GX1Y"`` → ``["G", "X1", "Y"]`` (ASE names special points by a letter and optional digits)."""
    names: list[str] = []
    for ch in stroke:
        if ch.isdigit() and names:
            names[-1] += ch
        else:
            names.append(ch)
    return names


def ase_atoms(cell):
    """An ASE ``Atoms`` of a ``PhonopyAtoms`` (periodic)."""
    from ase import Atoms

    return Atoms(cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True)


def band_structure(phonon, calculator, qpoints, connections, name: str, label: str,
                   source: dict[str, Any] | None = None) -> Bands:
    """Forces of ``calculator`` on the displaced supercells → force constants → bands along ``qpoints``."""
    forces = []
    for displaced in phonon.supercells_with_displacements:
        atoms = ase_atoms(displaced)
        atoms.calc = calculator
        forces.append(np.array(atoms.get_forces(), dtype=float))
    phonon.forces = np.array(forces)
    phonon.produce_force_constants(show_drift=False)
    phonon.run_band_structure(qpoints, path_connections=connections)
    bands = phonon.get_band_structure_dict()
    frequencies = [np.asarray(f, dtype=float) for f in bands["frequencies"]]
    phonon.run_qpoints([[0.0, 0.0, 0.0]])
    at_gamma = np.asarray(phonon.get_qpoints_dict()["frequencies"][0], dtype=float)
    acoustic = sorted(at_gamma, key=abs)[:3]
    return Bands(name=name, label=label, distances=[np.asarray(d, dtype=float) for d in bands["distances"]],
                 frequencies=frequencies, gamma_acoustic=[float(v) for v in acoustic], source=source or {})


def band_errors(model: Bands, reference: Bands) -> dict[str, Any]:
    """RMS and max |Δν| (THz) of ``model`` against ``reference``, over all branches and per branch."""
    diff = model.stacked() - reference.stacked()
    return {"rms_thz": float(np.sqrt(np.mean(diff ** 2))),
            "max_abs_thz": float(np.abs(diff).max()),
            "rms_per_branch_thz": [float(v) for v in np.sqrt(np.mean(diff ** 2, axis=0))]}


def compute(export_dir: str | Path, element: str, supercell: tuple[int, int, int] | None = None,
            distance: float = DEFAULT_DISTANCE, npoints: int = DEFAULT_NPOINTS, labeller: str | None = None,
            device: str = "cpu", progress: Callable[[str], None] | None = None) -> PhononResult:
    """Band structures of every exported model of ``element`` and of the labeller, with their errors."""
    from sweep.data.generate.labellers import DEFAULT_LABELLER, float32_default, get_labeller
    from sweep.trainers.family import get_family

    record = element_record(element)
    exports = model_exports(export_dir, element)  # before anything heavy: bad input fails at once
    if supercell is not None and (len(supercell) != 3 or min(supercell) < 1):
        raise InputError(None, "--supercell", f"expected three positive repeats, got {supercell}")
    if not (0.0 < distance <= 0.2):
        raise InputError(None, "--distance", f"{distance} Å: expected 0 < distance ≤ 0.2")
    supercell = tuple(supercell) if supercell is not None else default_supercell(element)
    say = progress or (lambda _: None)
    phonon = make_phonopy(element, supercell, distance)
    qpoints, connections, ends = band_path(phonon, npoints)

    chosen = get_labeller(labeller or DEFAULT_LABELLER)
    say(f"reference ({chosen.name} {chosen.model})")
    with float32_default():
        reference = band_structure(phonon, chosen.calculator(element), qpoints, connections, REFERENCE,
                                   f"reference: {chosen.name} ({chosen.model})", chosen.describe())
    models: dict[str, Bands] = {}
    for name, folder in exports.items():
        family = get_family(name)
        say(family.display_name)
        calculator = family.calculator_from_export(folder, device=device)
        models[name] = band_structure(phonon, calculator, qpoints, connections, name, family.display_name,
                                      {"export": str(folder)})
    ticks, labels = _ticks(reference.distances, ends, connections)
    return PhononResult(element=element, structure=record.structure, supercell=supercell, distance=distance,
                        ticks=ticks, tick_labels=labels, reference=reference, models=models,
                        errors={n: band_errors(b, reference) for n, b in models.items()},
                        n_atoms_supercell=len(phonon.supercell), n_displacements=len(phonon.displacements))


def _ticks(distances: list[np.ndarray], ends: list[tuple[str, str]], connections: list[bool]):
    """Tick positions and labels (``K|U`` where the path jumps) along the path."""
    pretty = lambda n: GREEK.get(n[0], n[0]) + n[1:]  # noqa: E731
    ticks, labels = [float(distances[0][0])], [pretty(ends[0][0])]
    for i, (segment, (start, end)) in enumerate(zip(distances, ends)):
        ticks.append(float(segment[-1]))
        if connections[i] or i == len(distances) - 1:
            labels.append(pretty(end))
        else:
            labels.append(f"{pretty(end)}|{pretty(ends[i + 1][0])}")
    return ticks, labels


# --- output --------------------------------------------------------------------------------------


def family_style(name: str) -> tuple[str, str]:
    """(colour, marker) of a model family: tab10 by its place among the known families, the record's marker."""
    import matplotlib

    from sweep.trainers.family import families

    known = list(families())
    index = known.index(name) if name in known else len(known)
    family = families().get(name)
    return matplotlib.colormaps["tab10"](index % 10), family.marker if family is not None else "D"


def plot_png(result: PhononResult) -> bytes:
    """Bands (reference black, models coloured) beside a panel of each model's RMS error per branch."""
    from matplotlib.figure import Figure

    from sweep.analysis.plots import _png

    fig = Figure(figsize=(11.5, 4.8), layout="constrained")
    bands_ax, error_ax = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.25]})
    _plot_bands(bands_ax, result.reference, "black", label=result.reference.label, lw=1.8, zorder=3)
    for name, bands in result.models.items():
        colour, marker = family_style(name)
        error = result.errors[name]["rms_thz"]
        _plot_bands(bands_ax, bands, colour, label=f"{bands.label} (RMS {error:.2f} THz)", lw=1.3, ls="--",
                    marker=marker, ms=3.5, markevery=8)
    for t in result.ticks:
        bands_ax.axvline(t, color="#999999", lw=0.7)
    bands_ax.axhline(0, color="#999999", lw=0.7)
    bands_ax.set_xticks(result.ticks, result.tick_labels)
    bands_ax.set_xlim(result.ticks[0], result.ticks[-1])
    bands_ax.set_ylabel("frequency (THz)")
    bands_ax.set_title(f"{result.element} ({result.structure}): phonon bands, supercell "
                       f"{'×'.join(map(str, result.supercell))}, displacement {result.distance:g} Å", fontsize=11)
    bands_ax.legend(fontsize=8.5, loc="lower right")

    n_branches = result.reference.frequencies[0].shape[1]
    width = 0.8 / max(1, len(result.models))
    for k, name in enumerate(result.models):
        colour, _ = family_style(name)
        per_branch = result.errors[name]["rms_per_branch_thz"]
        error_ax.bar(np.arange(1, n_branches + 1) + (k - (len(result.models) - 1) / 2) * width, per_branch,
                     width=width, color=colour, label=result.models[name].label)
    error_ax.set_xticks(range(1, n_branches + 1))
    error_ax.set_xlabel("branch (by frequency)")
    error_ax.set_ylabel("RMS error vs reference (THz)")
    error_ax.set_title("error per branch", fontsize=11)
    error_ax.grid(True, axis="y", alpha=0.3)
    if result.models:
        error_ax.legend(fontsize=8.5)
    return _png(fig)


def _plot_bands(ax, bands: Bands, colour, label: str, **style) -> None:
    """Every branch of every segment in one colour; one legend entry."""
    for i, (x, f) in enumerate(zip(bands.distances, bands.frequencies)):
        for j in range(f.shape[1]):
            ax.plot(x, f[:, j], color=colour, label=label if i == j == 0 else None, **style)


def _bands_json(bands: Bands) -> dict[str, Any]:
    return {"label": bands.label, **bands.source,
            "gamma_acoustic_thz": bands.gamma_acoustic,
            "frequencies_thz": [np.round(f, 6).tolist() for f in bands.frequencies]}


def as_json(result: PhononResult) -> dict[str, Any]:
    """Everything of ``result`` as plain JSON: path, every frequency (THz) and every error."""
    return {
        "kind": KIND, "element": result.element, "structure": result.structure,
        "supercell": list(result.supercell), "supercell_atoms": result.n_atoms_supercell,
        "displacements": result.n_displacements, "displacement_A": result.distance,
        "sum_rule_imposed": False,
        "path": {"ticks": result.ticks, "labels": result.tick_labels,
                 "distances": [np.round(d, 6).tolist() for d in result.reference.distances]},
        "reference": _bands_json(result.reference),
        "models": {n: {**_bands_json(b), **result.errors[n]} for n, b in result.models.items()},
    }


def output_paths(out: str | Path, element: str) -> tuple[Path, Path]:
    """(PNG, JSON) paths of ``element``'s band structure in folder ``out``."""
    out = Path(out)
    return out / f"phonons_{element}.png", out / f"phonons_{element}.json"


def check_out(out: str | Path, element: str) -> None:
    """Refuse ``--out`` unless it is a folder (or new) whose phonons files of ``element``, if any, are ours."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(str(out), "--out", "exists and is not a folder")
    png, data = output_paths(out, element)
    if data.exists():
        try:
            ours = json.loads(data.read_text()).get("kind") == KIND
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise InputError(str(data), "--out", "exists and was not written by `tm23-sweep phonons`; "
                                                  "choose another folder")
    elif png.exists():
        raise InputError(str(png), "--out", "exists without its phonons JSON; choose another folder")


def write(result: PhononResult, out: str | Path) -> tuple[Path, Path]:
    """Write ``phonons_<El>.png`` and ``phonons_<El>.json`` into ``out`` (each replaced atomically)."""
    from sweep.io import atomic_write_bytes, atomic_write_json

    check_out(out, result.element)
    payload = as_json(result)
    for name, error in payload["models"].items():
        if not all(math.isfinite(v) for v in [error["rms_thz"], *error["rms_per_branch_thz"]]):
            raise InputError(result.models[name].source.get("export"), "frequencies",
                             "the model's band structure is not finite")
    png_path, json_path = output_paths(out, result.element)
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(json_path, payload)  # first: a PNG is never left without its JSON
    atomic_write_bytes(png_path, plot_png(result))
    return png_path, json_path
