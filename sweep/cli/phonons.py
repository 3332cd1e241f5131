"""``tm23-sweep phonons EXPORT --element El``: phonon bands of every exported model against the labeller."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from sweep.analysis.phonons import DEFAULT_DISTANCE, DEFAULT_NPOINTS, MIN_SUPERCELL_LENGTH
from sweep.errors import InputError

console = Console()


def _supercell(text: str | None) -> tuple[int, int, int] | None:
    """``"2"`` → (2, 2, 2), ``"4x4x3"`` → (4, 4, 3); ``None`` → the default."""
    if text is None:
        return None
    try:
        repeats = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(None, "--supercell", f"{text!r}: expected N or NxNxN") from None
    if len(repeats) == 1:
        repeats = repeats * 3
    if len(repeats) != 3 or min(repeats) < 1:
        raise InputError(None, "--supercell", f"{text!r}: expected N or NxNxN with positive N")
    return repeats


def phonons(
    export: Annotated[Path, typer.Argument(help="A `tm23-sweep export` folder (EXPORT/<model>/<El>/...).",
                                           show_default=False)],
    element: Annotated[str, typer.Option("--element", help="Element symbol, e.g. Cu.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for phonons_<El>.png and phonons_<El>.json.")] = Path(
        "phonons"),
    supercell: Annotated[Optional[str], typer.Option(
        "--supercell",
        help=f"Repeats of the unit cell, N or NxNxN (default: every vector ≥ {MIN_SUPERCELL_LENGTH:g} Å).")] = None,
    distance: Annotated[float, typer.Option("--distance", help="Finite displacement in Å.")] = DEFAULT_DISTANCE,
    npoints: Annotated[int, typer.Option("--npoints", min=2, help="q-points per path segment.")] = DEFAULT_NPOINTS,
    labeller: Annotated[Optional[str], typer.Option(
        "--labeller", help="Reference: the labeller of the data (default: the embedded data's, chgnet).")] = None,
    device: Annotated[str, typer.Option("--device", help="Device of the models' calculators (cpu, cuda).")] = "cpu",
) -> None:
    """Phonon band structures (the paper's Fig. 8): every exported model of an element against the reference."""
    from sweep.analysis import phonons as bands

    bands.element_record(element)
    bands.model_exports(export, element)
    bands.check_out(out, element)  # before anything is computed: a folder of the user's is never touched
    with console.status("phonons") as status:
        result = bands.compute(export, element, supercell=_supercell(supercell), distance=distance, npoints=npoints,
                               labeller=labeller, device=device,
                               progress=lambda what: status.update(f"phonons: {what}"))
    png, data = bands.write(result, out)
    top = max(float(f.max()) for f in result.reference.frequencies)
    console.print(f"{element}: reference max {top:.2f} THz, Γ acoustic "
                  f"{max(abs(v) for v in result.reference.gamma_acoustic):.3g} THz")
    for name, error in result.errors.items():
        console.print(f"  {result.models[name].label}: RMS {error['rms_thz']:.3f} THz, max |Δν| "
                      f"{error['max_abs_thz']:.3f} THz, Γ acoustic "
                      f"{max(abs(v) for v in result.models[name].gamma_acoustic):.3g} THz")
    console.print(f"wrote {png} and {data}")
