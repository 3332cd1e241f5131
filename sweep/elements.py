"""The 27 TM23 metals: the project's one table of elements and melting points.

Structures are the Materials Project ground states used by Owen et al. (npj Comput.
Mater. 2024); lattice constants are PBE values in Å; melting points are the
experimental ones the paper scales its trajectories by (cold, warm and melt are
0.25, 0.75 and 1.25 × Tmelt).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Structure = Literal["fcc", "bcc", "hcp", "alpha-Mn", "alpha-Hg"]
TemperatureLabel = Literal["cold", "warm", "melt"]

#: Trajectory temperature as a fraction of Tmelt, in the archive's order.
TEMPERATURE_FACTORS: dict[str, float] = {"cold": 0.25, "warm": 0.75, "melt": 1.25}
TEMPERATURES: tuple[str, ...] = tuple(TEMPERATURE_FACTORS)


class Element(BaseModel):
    """One TM23 metal: identity, d-block position, ground state and melting point."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    Z: int = Field(gt=0)
    group: int = Field(ge=4, le=12)
    period: int = Field(ge=4, le=6)
    structure: Structure
    a: float = Field(gt=0, description="PBE lattice constant a in Å")
    c: float | None = Field(default=None, gt=0, description="PBE lattice constant c in Å (hcp)")
    alpha_deg: float | None = Field(default=None, description="rhombohedral angle (alpha-Hg)")
    t_melt: float = Field(gt=0, description="experimental melting point in K")

    def temperature(self, label: str) -> float:
        """Trajectory temperature in K for ``cold``, ``warm`` or ``melt``."""
        if label not in TEMPERATURE_FACTORS:
            raise ValueError(f"unknown temperature label {label!r}; expected one of {TEMPERATURES}")
        return TEMPERATURE_FACTORS[label] * self.t_melt


def _e(symbol, Z, group, period, structure, a, t_melt, c=None, alpha_deg=None) -> Element:
    return Element(symbol=symbol, Z=Z, group=group, period=period, structure=structure,
                   a=a, c=c, alpha_deg=alpha_deg, t_melt=t_melt)


_TABLE = [
    # period 4
    _e("Ti", 22, 4, 4, "hcp", 2.936, 1941, c=4.647),
    _e("V", 23, 5, 4, "bcc", 2.998, 2183),
    _e("Cr", 24, 6, 4, "bcc", 2.836, 2180),
    _e("Mn", 25, 7, 4, "alpha-Mn", 8.603, 1519),
    _e("Fe", 26, 8, 4, "bcc", 2.833, 1811),
    _e("Co", 27, 9, 4, "hcp", 2.492, 1768, c=4.025),
    _e("Ni", 28, 10, 4, "fcc", 3.518, 1728),
    _e("Cu", 29, 11, 4, "fcc", 3.632, 1358),
    _e("Zn", 30, 12, 4, "hcp", 2.651, 693, c=4.968),
    # period 5
    _e("Zr", 40, 4, 5, "hcp", 3.234, 2128, c=5.168),
    _e("Nb", 41, 5, 5, "bcc", 3.308, 2750),
    _e("Mo", 42, 6, 5, "bcc", 3.163, 2896),
    _e("Tc", 43, 7, 5, "hcp", 2.764, 2430, c=4.420),
    _e("Ru", 44, 8, 5, "hcp", 2.724, 2607, c=4.302),
    _e("Rh", 45, 9, 5, "fcc", 3.834, 2237),
    _e("Pd", 46, 10, 5, "fcc", 3.943, 1828),
    _e("Ag", 47, 11, 5, "fcc", 4.149, 1235),
    _e("Cd", 48, 12, 5, "hcp", 3.030, 594, c=5.780),
    # period 6
    _e("Hf", 72, 4, 6, "hcp", 3.200, 2506, c=5.055),
    _e("Ta", 73, 5, 6, "bcc", 3.320, 3290),
    _e("W", 74, 6, 6, "bcc", 3.172, 3695),
    _e("Re", 75, 7, 6, "hcp", 2.777, 3459, c=4.483),
    _e("Os", 76, 8, 6, "hcp", 2.756, 3306, c=4.350),
    _e("Ir", 77, 9, 6, "fcc", 3.873, 2739),
    _e("Pt", 78, 10, 6, "fcc", 3.971, 2041),
    _e("Au", 79, 11, 6, "fcc", 4.159, 1337),
    _e("Hg", 80, 12, 6, "alpha-Hg", 3.005, 234, alpha_deg=70.53),
]

#: Symbol -> Element, in d-block order (period, then group).
ELEMENTS: dict[str, Element] = {e.symbol: e for e in _TABLE}
SYMBOLS: tuple[str, ...] = tuple(ELEMENTS)
#: The paper's learning-curve metals.
LEARNING_CURVE_ELEMENTS: tuple[str, ...] = ("Au", "Cu", "Os", "Ti")


def get_element(symbol: str) -> Element:
    """Return the table entry for ``symbol``; raise ``KeyError`` naming the valid symbols."""
    try:
        return ELEMENTS[symbol]
    except KeyError:
        raise KeyError(f"{symbol!r} is not a TM23 metal; expected one of {', '.join(SYMBOLS)}") from None


def parse_element_list(text: str) -> list[str]:
    """Parse ``"Au,Cu"`` or ``"all"`` into a list of validated symbols, in table order."""
    if text.strip().lower() == "all":
        return list(SYMBOLS)
    symbols = [s.strip() for s in text.split(",") if s.strip()]
    for s in symbols:
        get_element(s)
    return [s for s in SYMBOLS if s in symbols]
