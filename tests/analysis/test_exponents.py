"""Learning exponents: the fit recovers known power laws, its interval covers, bad curves are refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from sweep.analysis.exponents import (fit_exponents, fit_power_law, learning_curve_points, variant_params,
                                      write_exponents)
from sweep.analysis.runs import tidy
from sweep.errors import InputError

N = np.array([100, 300, 500, 700, 900])


def noisy_curve(seed: int, a: float = 2.0, b: float = -0.5, noise: float = 0.05, repeats: int = 1):
    """ε = a·N^b with seeded multiplicative log-normal noise."""
    rng = np.random.default_rng(seed)
    n = np.repeat(N, repeats)
    return n, a * n**b * np.exp(rng.normal(0, noise, n.size))


def test_exact_power_law_is_recovered_exactly():
    fit = fit_power_law(N, 2.0 * N**-0.5)
    assert fit.a == pytest.approx(2.0, rel=1e-10)
    assert fit.b == pytest.approx(-0.5, abs=1e-12)
    assert fit.r2 == pytest.approx(1.0)
    assert (fit.n_points, fit.n_distinct) == (5, 5)


def test_noisy_power_law_recovers_b_within_its_confidence_interval():
    n, eps = noisy_curve(seed=7)
    fit = fit_power_law(n, eps)
    assert fit.b_low < -0.5 < fit.b_high
    assert fit.b_low < fit.b < fit.b_high
    assert fit.b == pytest.approx(-0.5, abs=0.1)
    assert fit.a == pytest.approx(2.0, rel=0.5)
    assert 0.9 < fit.r2 <= 1.0
    # the interval is the t-interval on the slope's standard error, with n - 2 degrees of freedom
    from scipy import stats

    half = stats.t.ppf(0.975, len(n) - 2) * fit.b_stderr
    assert fit.b_high - fit.b == pytest.approx(half)
    assert fit.predict(100.0) == pytest.approx(fit.a * 100.0**fit.b)


def test_confidence_interval_covers_the_true_exponent_about_95_percent_of_the_time():
    def covered(seed, confidence):
        fit = fit_power_law(*noisy_curve(seed), confidence=confidence)
        return fit.b_low < -0.5 < fit.b_high

    assert 0.91 <= np.mean([covered(seed, 0.95) for seed in range(400)]) <= 0.99
    # a 50% interval covers about half the time: the width really follows the level
    assert 0.4 <= np.mean([covered(seed, 0.5) for seed in range(400)]) <= 0.6


def test_repeats_at_the_same_n_are_fitted_as_points():
    n, eps = noisy_curve(seed=3, repeats=3)
    fit = fit_power_law(n, eps)
    assert (fit.n_points, fit.n_distinct) == (15, 5)
    assert fit.b_low < -0.5 < fit.b_high


@pytest.mark.parametrize("n, eps, reason", [
    ([100, 300], [1.0, 0.6], "need at least 3 distinct N"),
    ([100, 100, 300, 300], [1.0, 1.1, 0.6, 0.5], "need at least 3 distinct N, got 2 (100, 300)"),
    ([100, 300, 500], [1.0, 0.0, 0.4], "error must be positive to fit in log space, got 0 at N=300"),
    ([100, 300, 500], [1.0, 0.5, -0.4], "error must be positive to fit in log space, got -0.4 at N=500"),
    ([100, 300, 500], [1.0, float("nan"), 0.4], "error must be positive"),
    ([0, 300, 500], [1.0, 0.5, 0.4], "N must be positive"),
])
def test_bad_curves_raise_one_line_input_errors(n, eps, reason):
    with pytest.raises(InputError) as info:
        fit_power_law(n, eps, source="sweep x", field="Au nequip test_forces_mae")
    line = info.value.line()
    assert "\n" not in line
    assert line.startswith("sweep x: Au nequip test_forces_mae: ")
    assert reason in line


def lc_table(rows):
    """A tidy runs table from plain dicts (element, model, task, params, metrics)."""
    records = []
    for i, r in enumerate(rows):
        rec = {"run_id": f"r{i}", "status": "FINISHED", "end_time": i, "experiment": "s", "trial_id": f"t{i}",
               "config_hash": f"h{i}", "element": r["element"], "model": r.get("model", "nequip"), "task": r["task"]}
        rec.update({f"params.{k}": v for k, v in r.get("params", {}).items()})
        rec.update(r.get("metrics", {}))
        records.append(rec)
    return tidy(records)


def synthetic_lc_table(b_by_lmax=None, ns=(100, 300, 500, 700, 900)):
    b_by_lmax = b_by_lmax or {0: -0.3, 1: -0.5, 2: -0.7}
    rows = []
    for l_max, b in b_by_lmax.items():
        for n in ns:
            rows.append({"element": "Au", "task": f"learning-curve:{n}",
                         "params": {"l_max": l_max, "num_features": 64 >> l_max, "seed": 0, "batch_size": n // 100, "r_max": 4.0,
                                    "n_weights": 1000 * (l_max + 1)},
                         "metrics": {"test_forces_mae": 2.0 * n**b, "test_energy_mae": 0.1 * n**(b / 2)}})
    rows.append({"element": "Au", "task": "grid", "params": {"l_max": 1}, "metrics": {"test_forces_mae": 1.0}})
    return lc_table(rows)


def test_variants_are_the_params_that_differ_but_not_those_tied_to_n_or_to_another_variant():
    table = synthetic_lc_table()
    group = table[table["n_frames"].notna()]
    # batch_size follows N (the axis), num_features and n_weights follow l_max, r_max is constant
    assert variant_params(group) == ["l_max"]


def test_fits_one_curve_per_element_model_variant_and_metric():
    points = learning_curve_points(synthetic_lc_table())
    fits = fit_exponents(points)
    assert len(fits) == 6
    forces = fits[fits["metric"] == "test_forces_mae"].set_index("variant")
    assert forces.loc["l_max=0", "b"] == pytest.approx(-0.3)
    assert forces.loc["l_max=2", "b"] == pytest.approx(-0.7)
    assert forces.loc["l_max=1", "a"] == pytest.approx(2.0)
    assert forces.loc["l_max=1", "N"] == [100, 300, 500, 700, 900]
    energy = fits[fits["metric"] == "test_energy_mae"].set_index("variant")
    assert energy.loc["l_max=1", "b"] == pytest.approx(-0.25)
    # --by overrides the detection: one curve over all l_max, still fitted, with repeats at each N
    pooled = fit_exponents(learning_curve_points(synthetic_lc_table(), ["test_forces_mae"], by=[]))
    assert len(pooled) == 1 and pooled.iloc[0]["n_points"] == 15


def test_too_few_n_in_one_curve_is_an_error_naming_it():
    table = synthetic_lc_table({0: -0.3}, ns=(100, 300))
    with pytest.raises(InputError, match=r"Au nequip test_\w+_mae: need at least 3 distinct N, got 2"):
        fit_exponents(learning_curve_points(table))
    no_curves = lc_table([{"element": "Au", "task": "grid", "metrics": {"test_forces_mae": 1.0}}])
    with pytest.raises(InputError, match="no runs with task learning-curve:N"):
        learning_curve_points(no_curves)
    with pytest.raises(InputError, match="params.zeta: not a param"):
        learning_curve_points(synthetic_lc_table(), by=["zeta"])


def test_write_exponents_writes_csv_json_and_a_plot_per_metric(tmp_path):
    points = learning_curve_points(synthetic_lc_table())
    fits = fit_exponents(points)
    written = write_exponents(fits, points, tmp_path / "out")
    csv = pd.read_csv(written["csv"])
    assert set(csv.columns) >= {"element", "model", "variant", "metric", "a", "b", "r2", "b_low", "b_high"}
    assert len(csv) == 6 and csv["r2"].min() > 0.999
    data = json.loads(written["json"].read_text())
    assert len(data["fits"]) == 6 and len(data["points"]) == 30
    assert {f["variant"] for f in data["fits"]} == {"l_max=0", "l_max=1", "l_max=2"}
    for metric in ("test_forces_mae", "test_energy_mae"):
        image = imread(written[f"plot:{metric}"])
        assert image.shape[0] > 200 and image.shape[1] > 200
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "exponents.csv", "exponents.json", "learning_curves_test_energy_mae.png", "learning_curves_test_forces_mae.png"]


def test_exponents_command_reads_the_sweep_from_mlflow(synthetic_sweep, tmp_path):
    from typer.testing import CliRunner

    from sweep.cli.analysis import app

    out = tmp_path / "exp"
    result = CliRunner().invoke(app, ["exponents", synthetic_sweep.name, "--tracking-uri", synthetic_sweep.uri,
                                      "--out", str(out), "--metric", "test_forces_mae"])
    assert result.exit_code == 0, result.output
    fits = pd.read_csv(out / "exponents.csv")
    # the synthetic sweep's learning curves: Au and Ti, NequIP, l_max 0 and 1, b near -0.35 and -0.5
    assert sorted(zip(fits["element"], fits["variant"])) == [("Au", "l_max=0"), ("Au", "l_max=1"),
                                                             ("Ti", "l_max=0"), ("Ti", "l_max=1")]
    assert (fits["b"] < 0).all() and (fits["b_low"] < fits["b"]).all() and (fits["b"] < fits["b_high"]).all()
    assert "ε = a·N^b" in result.output

    bad = CliRunner().invoke(app, ["exponents", "no-such-sweep", "--tracking-uri", synthetic_sweep.uri])
    assert isinstance(bad.exception, InputError)
    assert "no sweep named 'no-such-sweep'" in str(bad.exception)
