"""The periodic trend of the paper's Fig. 2: how a model's error follows the d-band filling.

The paper finds early transition metals harder to fit than late ones. Here a metal's d-electron
count is the nominal one of its group, d^(g-2) s² (Ti 2 ... Ni 8, Cu 9, Zn 10), and the trend is
the Spearman rank correlation between that count and a per-metal error: negative when early
metals have the larger errors.
"""

from __future__ import annotations

from typing import Mapping

from pydantic import BaseModel, ConfigDict
from scipy.stats import spearmanr

from sweep.analysis.plots import heatmap_png
from sweep.elements import get_element


def d_electron_count(symbol: str) -> int:
    """The nominal d-electron count of ``symbol``: its group minus two (d^(g-2) s²)."""
    return get_element(symbol).group - 2


class Trend(BaseModel):
    """Spearman's ρ between d-electron count and an error, over ``n`` metals, with its p-value."""

    model_config = ConfigDict(frozen=True)

    rho: float
    p_value: float
    n: int

    def describe(self, what: str) -> str:
        """One line naming the correlation and what it says."""
        direction = "early metals are harder" if self.rho < 0 else "late metals are harder"
        return (f"Spearman ρ(d-electron count, {what}) = {self.rho:+.2f} over {self.n} metals "
                f"(p = {self.p_value:.2g}): {direction}")


def trend(errors: Mapping[str, float]) -> Trend:
    """The Spearman correlation between d-electron count and ``errors`` (symbol → error)."""
    symbols = sorted(errors, key=lambda s: get_element(s).Z)
    if len(symbols) < 3:
        raise ValueError(f"a trend needs at least 3 metals, got {len(symbols)}")
    result = spearmanr([d_electron_count(s) for s in symbols], [errors[s] for s in symbols])
    return Trend(rho=float(result.statistic), p_value=float(result.pvalue), n=len(symbols))


def periodic_figure(errors: Mapping[str, float], title: str, unit: str = "%") -> bytes:
    """The d-block heatmap of ``errors`` (the analogue of the paper's Fig. 2), as PNG bytes."""
    return heatmap_png(dict(errors), title, unit)
