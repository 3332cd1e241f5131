"""Learning exponents: ε = a·N^b fitted by least squares in log–log space (the paper's Fig. 6).

Points come from the ``learning-curve:N`` runs of a sweep: one point per run, N from the task
and ε its final test error. A curve is one element × model × variant, where the variant is
the set of hyperparameters that differ between the element's learning-curve runs (for
example each ``l_max``), found automatically or named by the caller. The fit is
``log ε = log a + b log N`` (:func:`scipy.stats.linregress`); the confidence interval of
``b`` uses Student's t with n − 2 degrees of freedom on the slope's standard error.
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from sweep.analysis.runs import PARAM_PREFIX, is_hyperparameter, param_columns
from sweep.errors import InputError
from sweep.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from sweep.metrics import UNITS

#: Errors fitted by default: each label's test MAE.
DEFAULT_METRICS: tuple[str, ...] = ("test_forces_mae", "test_energy_mae", "test_stress_mae")
#: Hyperparameters that never define a variant: repeats differ by seed only.
IGNORED_PARAMS: frozenset[str] = frozenset({"seed"})
MIN_DISTINCT_N = 3


@dataclass(frozen=True)
class PowerLawFit:
    """ε = a·N^b with its goodness of fit and the confidence interval of b."""

    a: float
    b: float
    r2: float
    b_stderr: float
    b_low: float
    b_high: float
    confidence: float
    n_points: int
    n_distinct: int

    def predict(self, n: np.ndarray | float) -> np.ndarray:
        """ε at ``n`` frames."""
        return self.a * np.asarray(n, dtype=float) ** self.b


def fit_power_law(n: Sequence[float], eps: Sequence[float], confidence: float = 0.95,
                  source: str = "learning curve", field: str = "error") -> PowerLawFit:
    """Fit ε = a·N^b by least squares on (log N, log ε); needs ≥ 3 distinct N and ε > 0."""
    from scipy import stats

    n = np.asarray(n, dtype=float)
    eps = np.asarray(eps, dtype=float)
    if n.shape != eps.shape or n.ndim != 1:
        raise InputError(source, field, f"N and error must be two equal-length lists, got {n.shape} and {eps.shape}")
    distinct = np.unique(n)
    if len(distinct) < MIN_DISTINCT_N:
        shown = ", ".join(f"{v:g}" for v in distinct) or "none"
        raise InputError(source, field,
                         f"need at least {MIN_DISTINCT_N} distinct N, got {len(distinct)} ({shown}); cannot fit a·N^b")
    if not np.all(np.isfinite(n)) or np.any(n <= 0):
        raise InputError(source, field, f"N must be positive, got {n.tolist()}")
    bad = ~np.isfinite(eps) | (eps <= 0)
    if np.any(bad):
        k = int(np.argmax(bad))
        raise InputError(source, field, f"error must be positive to fit in log space, got {eps[k]:g} at N={n[k]:g}")
    x, y = np.log(n), np.log(eps)
    fit = stats.linregress(x, y)
    dof = len(x) - 2
    if dof > 0:
        half = stats.t.ppf(0.5 + confidence / 2, dof) * fit.stderr
    else:  # unreachable with 3 distinct N; kept so the formula never divides by zero
        half = math.inf
    r2 = float(fit.rvalue**2) if np.ptp(y) > 0 else 1.0
    return PowerLawFit(a=float(np.exp(fit.intercept)), b=float(fit.slope), r2=r2, b_stderr=float(fit.stderr),
                       b_low=float(fit.slope - half), b_high=float(fit.slope + half), confidence=confidence,
                       n_points=len(x), n_distinct=len(distinct))


def variant_params(group: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """Hyperparameters that tell one element and model's learning curves apart: they vary, not with N alone."""
    model = group["model"].iloc[0]
    out = []
    for column in param_columns(group):
        name = column[len(PARAM_PREFIX):]
        if name in IGNORED_PARAMS or name in exclude or not is_hyperparameter(model, name):
            continue
        values = group[column].astype(str)
        if values.nunique() < 2:
            continue
        # a param fixed by N (a frame count, a batch size scaled with N) is part of the axis, not a variant
        if _determined_by(group, values, "n_frames"):
            continue
        # nor is one fixed by a variant param already kept (num_features tied to l_max, say)
        if any(_determined_by(group, values, PARAM_PREFIX + kept) for kept in out):
            continue
        out.append(name)
    return out


def _determined_by(group: pd.DataFrame, values: pd.Series, column: str) -> bool:
    return bool((group.assign(_v=values).groupby(group[column].astype(str))["_v"].nunique() <= 1).all())


def variant_label(values: dict) -> str:
    """``l_max=2, num_features=16``; empty when the curve has no variants."""
    return ", ".join(f"{k}={_fmt(v)}" for k, v in values.items())


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def learning_curve_points(table: pd.DataFrame, metrics: Sequence[str] = DEFAULT_METRICS,
                          by: Sequence[str] | None = None, source: str = "sweep") -> pd.DataFrame:
    """One row per (run, metric) of the learning-curve runs: element, model, variant, N, metric, value.

    ``by`` names the variant params; by default they are found per element and model by
    :func:`variant_params`. Metrics absent from every run are skipped.
    """
    runs = table[table["n_frames"].notna()]
    if runs.empty:
        raise InputError(source, "tags.task", "no runs with task learning-curve:N to fit")
    rows = []
    for (element, model), group in runs.groupby(["element", "model"], sort=True):
        names = list(by) if by is not None else variant_params(group)
        for name in names:
            if PARAM_PREFIX + name not in group.columns:
                raise InputError(source, f"params.{name}", f"not a param of the {element} {model} runs")
        for _, run in group.iterrows():
            values = {name: run[PARAM_PREFIX + name] for name in names}
            for metric in metrics:
                if metric not in run.index:
                    continue
                rows.append({"element": element, "model": model, "variant": variant_label(values),
                             "variant_params": values, "N": int(run["n_frames"]), "metric": metric,
                             "value": float(run[metric]), "run_id": run["run_id"]})
    points = pd.DataFrame(rows)
    if points.empty:
        raise InputError(source, "metrics", f"none of {', '.join(metrics)} was logged by the learning-curve runs")
    return points


def fit_exponents(points: pd.DataFrame, confidence: float = 0.95, source: str = "sweep") -> pd.DataFrame:
    """Fit every curve of :func:`learning_curve_points`; one row per element × model × variant × metric."""
    rows = []
    keys = ["element", "model", "variant", "metric"]
    for (element, model, variant, metric), curve in points.groupby(keys, sort=True):
        if curve["value"].isna().all():  # a label this model does not log (no stress, say)
            continue
        what = f"{element} {model}" + (f" [{variant}]" if variant else "") + f" {metric}"
        fit = fit_power_law(curve["N"], curve["value"], confidence, source=source, field=what)
        rows.append({"element": element, "model": model, "variant": variant, "metric": metric,
                     "unit": _unit(metric), **asdict(fit),
                     "N": sorted(int(n) for n in curve["N"].unique()),
                     "variant_params": curve["variant_params"].iloc[0]})
    if not rows:
        raise InputError(source, "metrics", "every learning-curve error is missing; nothing to fit")
    return pd.DataFrame(rows)


def _unit(metric: str) -> str:
    parts = metric.split("_")
    if len(parts) == 3 and parts[1] in UNITS:
        return "%" if parts[2] == "pct" else UNITS[parts[1]]
    return ""


def write_exponents(fits: pd.DataFrame, points: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Write ``exponents.csv``, ``exponents.json`` and one Fig.-6 plot per metric into ``out_dir``.

    Everything is rendered before the first file is written, and each file is written atomically.
    """
    from sweep.analysis.plots import plot_learning_curves

    out_dir = Path(out_dir)
    csv = fits.assign(N=fits["N"].map(lambda v: " ".join(map(str, v))),
                      variant_params=fits["variant_params"].map(lambda v: variant_label(v)))
    buffer = io.StringIO()
    csv.to_csv(buffer, index=False, float_format="%.6g")
    document = {
        "model": "eps = a * N**b, least squares on (log N, log eps); b_low..b_high: t-interval on b",
        "fits": fits.to_dict(orient="records"),
        "points": points.drop(columns="variant_params").to_dict(orient="records"),
    }
    plots = {metric: plot_learning_curves(points, fits, metric) for metric in fits["metric"].unique()}
    written = {"csv": atomic_write_text(out_dir / "exponents.csv", buffer.getvalue()),
               "json": atomic_write_json(out_dir / "exponents.json", document)}
    for metric, png in plots.items():
        written[f"plot:{metric}"] = atomic_write_bytes(out_dir / f"learning_curves_{metric}.png", png)
    return written
