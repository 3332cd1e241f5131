"""The dashboard's figures as PNG bytes (matplotlib, Agg, no pyplot state).

- :func:`heatmap_png`: a d-block periodic-table heatmap (the paper's Figs. 2–5), groups IV–XII
  as columns and periods 4–6 as rows, laid out from :mod:`sweep.elements`;
- :func:`plot_learning_curves`: log–log learning curves with their a·N^b fits (Fig. 6);
- :func:`parity_png`: predicted against reference energy, force and stress, per model;
- :func:`transfer_png`: element × {cold→warm, cold→melt} errors, per model.

Every function returns PNG bytes; callers write them with :mod:`sweep.io.atomic` and embed them.
"""

from __future__ import annotations

import io
import math
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # before anything else of matplotlib: no display on clusters

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator  # noqa: E402

from sweep.elements import ELEMENTS  # noqa: E402
from sweep.metrics import UNITS  # noqa: E402

#: Green (low error) to red (high error), shared by every heatmap.
CMAP = "RdYlGn_r"
EMPTY_COLOUR = "#d9d9d9"
GROUPS: tuple[int, ...] = tuple(range(4, 13))
PERIODS: tuple[int, ...] = (4, 5, 6)
ROMAN = {4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII", 9: "IX", 10: "X", 11: "XI", 12: "XII"}
LABEL_NAMES = {"energy": "energy", "forces": "force", "stress": "stress"}
STAT_NAMES = {"mae": "MAE", "rmse": "RMSE", "pct": "% error"}
TRANSFER_TASKS = {"transfer-warm": "cold→warm", "transfer-melt": "cold→melt"}
DPI = 130
PARITY_DPI = 110  # one per element, each a dense scatter: keeps a 27-metal page to a few MB


def _family(model: str):
    from sweep.trainers.family import families

    return families().get(model)


def model_name(model: str) -> str:
    """Display name of a model family, from its record (``flare`` → ``FLARE``); else the name itself."""
    family = _family(model)
    return family.display_name if family is not None else model


def model_marker(model: str) -> str:
    """Matplotlib marker of a model family in learning-curve plots (``D`` for an unknown one)."""
    family = _family(model)
    return family.marker if family is not None else "D"


def metric_title(metric: str) -> str:
    """``test_forces_pct`` → ``force % error``."""
    parts = metric.split("_")
    if len(parts) == 3:
        return f"{LABEL_NAMES.get(parts[1], parts[1])} {STAT_NAMES.get(parts[2], parts[2])}"
    return metric


def metric_unit(metric: str) -> str:
    """``%`` for % errors, else the label's unit (meV/atom, meV/Å, meV/Å³)."""
    parts = metric.split("_")
    if len(parts) == 3 and parts[2] == "pct":
        return "%"
    return UNITS.get(parts[1], "") if len(parts) == 3 else ""


def format_value(value: float) -> str:
    """Three significant figures at most, no exponent for the ranges errors live in."""
    if value is None or not math.isfinite(value):
        return ""
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.2g}"


def dblock_grid(values: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """The d-block as two 3 × 9 arrays (rows periods 4–6, columns groups 4–12): values and symbols.

    Cells of elements absent from ``values`` hold NaN; every cell's symbol comes from the table.
    """
    unknown = set(values) - set(ELEMENTS)
    if unknown:
        raise KeyError(f"not TM23 metals: {', '.join(sorted(unknown))}")
    grid = np.full((len(PERIODS), len(GROUPS)), np.nan)
    symbols = np.full((len(PERIODS), len(GROUPS)), "", dtype=object)
    for symbol, element in ELEMENTS.items():
        row, col = PERIODS.index(element.period), GROUPS.index(element.group)
        symbols[row, col] = symbol
        if symbol in values and values[symbol] is not None:
            grid[row, col] = float(values[symbol])
    return grid, symbols


def shared_limits(*value_sets: Mapping[str, float] | Sequence[float]) -> tuple[float, float]:
    """One (vmin, vmax) for several heatmaps so their colours compare; (0, 1) when all are empty."""
    numbers = []
    for values in value_sets:
        items = values.values() if isinstance(values, Mapping) else values
        numbers += [float(v) for v in items if v is not None and math.isfinite(float(v))]
    if not numbers:
        return 0.0, 1.0
    low, high = min(numbers), max(numbers)
    if high <= low:
        high = low + (abs(low) or 1.0) * 0.1
    return low, high


def _png(fig: Figure, dpi: int = DPI) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return buffer.getvalue()


def _text_colour(rgba) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.45 else "white"


def _cell_grid(ax, n_cols: int, n_rows: int, linewidth: float) -> None:
    """Heatmap frame: labels on top, white lines between cells, no ticks or spines."""
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_xticks(np.arange(-0.5, n_cols), minor=True)
    ax.set_yticks(np.arange(-0.5, n_rows), minor=True)
    ax.grid(which="minor", color="white", linewidth=linewidth)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)


def heatmap_png(values: Mapping[str, float], title: str, unit: str,
                limits: tuple[float, float] | None = None) -> bytes:
    """A d-block heatmap of ``values`` (symbol → number): symbol and value in each cell, absent cells grey."""
    grid, symbols = dblock_grid(values)
    vmin, vmax = limits or shared_limits(values)
    cmap = matplotlib.colormaps[CMAP].with_extremes(bad=EMPTY_COLOUR)
    norm = Normalize(vmin=vmin, vmax=vmax)

    fig = Figure(figsize=(10.5, 4.2))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="equal")
    for row in range(grid.shape[0]):
        for col in range(grid.shape[1]):
            value = grid[row, col]
            colour = "#8c8c8c" if np.isnan(value) else _text_colour(cmap(norm(value)))
            ax.text(col, row - 0.17, symbols[row, col], ha="center", va="center", fontsize=15,
                    fontweight="bold", color=colour)
            ax.text(col, row + 0.25, format_value(value) if not np.isnan(value) else "–", ha="center",
                    va="center", fontsize=10.5, color=colour)
    ax.set_xticks(range(len(GROUPS)), [ROMAN[g] for g in GROUPS], fontsize=11)
    ax.set_yticks(range(len(PERIODS)), [f"period {p}" for p in PERIODS], fontsize=11)
    _cell_grid(ax, len(GROUPS), len(PERIODS), linewidth=2.5)
    ax.set_title(title, fontsize=13, pad=26)
    bar = fig.colorbar(image, ax=ax, fraction=0.025, pad=0.02, shrink=0.85)
    bar.set_label(unit, fontsize=11)
    return _png(fig)


def plot_learning_curves(points: pd.DataFrame, fits: pd.DataFrame, metric: str) -> bytes:
    """Fig. 6: ε against N on log–log axes, one panel per element, points and fitted lines, b in the legend."""
    points = points[points["metric"] == metric]
    fits = fits[fits["metric"] == metric]
    elements = [e for e in ELEMENTS if e in set(points["element"])]
    ncols = min(4, max(1, len(elements)))
    nrows = math.ceil(len(elements) / ncols)
    fig = Figure(figsize=(4.3 * ncols, 3.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, element in zip(axes.flat, elements):
        curves = fits[fits["element"] == element]
        colours = [matplotlib.colormaps["tab10"](i % 10) for i in range(len(curves))]
        for colour, (_, fit) in zip(colours, curves.iterrows()):
            mine = points[(points["element"] == element) & (points["model"] == fit["model"])
                          & (points["variant"] == fit["variant"])]
            ax.scatter(mine["N"], mine["value"], color=colour, marker=model_marker(fit["model"]), s=28, zorder=3)
            n = np.geomspace(mine["N"].min(), mine["N"].max(), 50)
            name = model_name(fit["model"]) + (f" {fit['variant']}" if fit["variant"] else "")
            half = (fit["b_high"] - fit["b_low"]) / 2
            ax.plot(n, fit["a"] * n ** fit["b"], color=colour, lw=1.6,
                    label=f"{name}: b = {fit['b']:.2f} ± {half:.2f}, R² = {fit['r2']:.2f}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = sorted(points.loc[points["element"] == element, "N"].unique())
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())  # log minor labels (2×10²) would crowd the N ticks
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_title(element, fontsize=13, fontweight="bold")
        ax.set_xlabel("training frames N")
        ax.set_ylabel(f"{metric_title(metric)} ({metric_unit(metric)})")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper right")
    for ax in list(axes.flat)[len(elements):]:
        ax.set_visible(False)
    fig.suptitle(rf"Learning curves, $\varepsilon = a\,N^{{b}}$: {metric_title(metric)}", fontsize=13)
    return _png(fig)


def parity_png(element: str, predictions: Mapping[str, Mapping[str, np.ndarray]]) -> bytes:
    """Predicted against reference energy, force and stress of ``element``; one row per model.

    ``predictions`` maps a model to the arrays of ``predictions.npz`` (``ref_forces``, ``pred_forces``, ...).
    """
    from sweep.metrics import LABELS, error_stats

    models = list(predictions)
    fig = Figure(figsize=(12, 3.7 * len(models)), layout="constrained")
    axes = fig.subplots(len(models), len(LABELS), squeeze=False)
    for r, model in enumerate(models):
        arrays = predictions[model]
        for c, label in enumerate(LABELS):
            ax = axes[r, c]
            ref = np.asarray(arrays.get(f"ref_{label}", []), dtype=float).ravel()
            pred = np.asarray(arrays.get(f"pred_{label}", []), dtype=float).ravel()
            ax.set_title(f"{element} {model_name(model)}: {LABEL_NAMES[label]}", fontsize=11)
            if ref.size == 0 or ref.shape != pred.shape:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
                continue
            ax.scatter(ref, pred, s=4 if ref.size > 2000 else 10, alpha=0.35 if ref.size > 2000 else 0.7,
                       color="#1f77b4", edgecolors="none", rasterized=True)
            low, high = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
            pad = 0.04 * (high - low or 1.0)
            ax.plot([low - pad, high + pad], [low - pad, high + pad], color="#d62728", lw=1)
            ax.set_xlim(low - pad, high + pad)
            ax.set_ylim(low - pad, high + pad)
            ax.set_aspect("equal")
            stats = error_stats(pred, ref)
            ax.text(0.04, 0.95, f"MAE {format_value(stats['mae'])} {UNITS[label]}\n{format_value(stats['pct'])} %",
                    transform=ax.transAxes, va="top", fontsize=9,
                    bbox=dict(boxstyle="round", facecolor="white", alpha=0.8, edgecolor="#cccccc"))
            ax.set_xlabel(f"reference ({UNITS[label]})")
            ax.set_ylabel(f"predicted ({UNITS[label]})")
            ax.grid(True, alpha=0.3)
    return _png(fig, dpi=PARITY_DPI)


def transfer_png(table: pd.DataFrame, metric: str, limits: tuple[float, float] | None = None) -> bytes:
    """Transfer errors: rows model × {cold→warm, cold→melt}, columns elements, value in each cell.

    ``table`` has columns ``element``, ``model``, ``task`` and ``metric``, one row per transfer run.
    """
    elements = [e for e in ELEMENTS if e in set(table["element"])]
    rows = [(m, t) for m in sorted(table["model"].unique()) for t in TRANSFER_TASKS]
    grid = np.full((len(rows), len(elements)), np.nan)
    for _, run in table.iterrows():
        if run["task"] in TRANSFER_TASKS and pd.notna(run.get(metric)):
            grid[rows.index((run["model"], run["task"])), elements.index(run["element"])] = float(run[metric])
    vmin, vmax = limits or shared_limits(grid[np.isfinite(grid)].tolist())
    cmap = matplotlib.colormaps[CMAP].with_extremes(bad=EMPTY_COLOUR)
    norm = Normalize(vmin=vmin, vmax=vmax)
    fig = Figure(figsize=(max(5.0, 0.78 * len(elements) + 3.2), 0.72 * len(rows) + 1.6))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, norm=norm, aspect="auto")
    for r in range(grid.shape[0]):
        for c in range(grid.shape[1]):
            value = grid[r, c]
            colour = "#555555" if np.isnan(value) else _text_colour(cmap(norm(value)))
            ax.text(c, r, format_value(value) if not np.isnan(value) else "–", ha="center", va="center",
                    fontsize=9.5, color=colour)
    ax.set_xticks(range(len(elements)), elements, fontsize=11, fontweight="bold")
    ax.set_yticks(range(len(rows)), [f"{model_name(m)} {TRANSFER_TASKS[t]}" for m, t in rows], fontsize=10)
    _cell_grid(ax, len(elements), len(rows), linewidth=2)
    ax.set_title(f"Transfer from cold: {metric_title(metric)}", fontsize=12, pad=22)
    bar = fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    bar.set_label(metric_unit(metric))
    return _png(fig)
