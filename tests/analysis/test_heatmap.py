"""The d-block heatmap: all 27 metals in their cells, the shared colour scale, the PNG."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from matplotlib.image import imread

from sweep.analysis.plots import (CMAP, GROUPS, PERIODS, dblock_grid, format_value, heatmap_png, shared_limits,
                                  transfer_png)
from sweep.elements import ELEMENTS

# The d-block as the paper draws it: periods 4-6 by groups IV-XII.
EXPECTED_LAYOUT = [
    ["Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn"],
    ["Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd"],
    ["Hf", "Ta", "W", "Re", "Os", "Ir", "Pt", "Au", "Hg"],
]


def all_27_values():
    """A distinct value per metal: Z + period/10, so a misplaced metal cannot go unnoticed."""
    return {s: e.Z + e.period / 10 for s, e in ELEMENTS.items()}


def test_all_27_metals_sit_in_their_d_block_cells():
    values = all_27_values()
    assert len(values) == 27
    grid, symbols = dblock_grid(values)
    assert grid.shape == symbols.shape == (3, 9)
    assert symbols.tolist() == EXPECTED_LAYOUT
    for row, period in enumerate(PERIODS):
        for col, group in enumerate(GROUPS):
            symbol = EXPECTED_LAYOUT[row][col]
            assert (ELEMENTS[symbol].period, ELEMENTS[symbol].group) == (period, group)
            assert grid[row, col] == values[symbol]
    assert not np.isnan(grid).any()


def test_missing_metals_leave_empty_cells_and_unknown_symbols_are_refused():
    grid, symbols = dblock_grid({"Au": 3.0, "Ti": 9.0})
    assert np.isfinite(grid).sum() == 2
    assert grid[2, 7] == 3.0 and grid[0, 0] == 9.0
    assert symbols[1, 4] == "Ru" and np.isnan(grid[1, 4])
    with pytest.raises(KeyError, match="Xx"):
        dblock_grid({"Xx": 1.0})


def test_heatmap_png_of_all_27_is_written_and_coloured_green_to_red(tmp_path):
    from sweep.io import atomic_write_bytes

    values = {s: float(i) for i, s in enumerate(ELEMENTS)}  # Ti lowest, Hg highest
    path = atomic_write_bytes(tmp_path / "heatmap.png", heatmap_png(values, "FLARE: test force % error", "%"))
    image = imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 800
    # RdYlGn_r runs from green (low) to red (high)
    low, high = matplotlib.colormaps[CMAP](0.0), matplotlib.colormaps[CMAP](1.0)
    assert low[1] > low[0] and high[0] > high[1]
    # both ends of the scale appear in the picture: the Ti cell green, the Hg cell red
    rgb = (image[..., :3] * 255).round().astype(int).reshape(-1, 3)
    for colour in (low, high):
        target = (np.array(colour[:3]) * 255).round().astype(int)
        assert (np.abs(rgb - target).max(axis=1) <= 3).sum() > 500


def test_limits_are_shared_and_values_formatted():
    assert shared_limits({"Au": 2.0}, {"Cu": 8.0, "Ti": float("nan")}) == (2.0, 8.0)
    assert shared_limits({}) == (0.0, 1.0)
    low, high = shared_limits([5.0])
    assert low == 5.0 and high > low
    assert [format_value(v) for v in (123.4, 12.34, 1.234, 0.01234)] == ["123", "12.3", "1.23", "0.012"]


def test_transfer_png_is_an_image():
    import pandas as pd

    table = pd.DataFrame([{"element": e, "model": m, "task": t, "test_forces_pct": 10.0 + i}
                          for i, (e, m, t) in enumerate([("Au", "flare", "transfer-warm"), ("Au", "flare", "transfer-melt"),
                                                         ("Ti", "nequip", "transfer-melt")])])
    image = imread(io.BytesIO(transfer_png(table, "test_forces_pct")))
    assert image.ndim == 3 and image.shape[1] > 300
