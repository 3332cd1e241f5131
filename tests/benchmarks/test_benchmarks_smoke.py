"""Smoke tests: each benchmark's core functions run on tiny inputs and return sane numbers (no timing asserts)."""

from __future__ import annotations

import importlib
import math
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


def test_fit_power_recovers_exponent():
    scaling = _load("scaling")
    a, b, r2 = scaling.fit_power([10, 30, 90], [0.5 * n ** 1.5 for n in (10, 30, 90)])
    assert a == pytest.approx(0.5) and b == pytest.approx(1.5) and r2 == pytest.approx(1.0)


def test_protocol_trials_match_shipped_spaces():
    from sweep.tune.space import SPACES_DIR, load_space

    scaling = _load("scaling")
    trials = scaling.protocol_trials(epochs=1000)
    for name in ("flare_b1", "flare_b2", "nequip", "nequip_lmax_learning_curve"):
        stage = "lc-space" if name == "nequip_lmax_learning_curve" else "grid"
        counted = sum(t["count"] for t in trials if t["space"] == name and t["stage"] == stage)
        assert counted == load_space(SPACES_DIR / f"{name}.yaml").total_trials()
    full = [t for t in trials if t["space"] == "nequip" and t["stage"] == "final" and t["n"] == 2430]
    assert [t["count"] for t in full] == [27]


def test_project_from_synthetic_measurement():
    scaling = _load("scaling")
    rows = [{"paper_n": n, "n_train": n // 10, "atoms": 31, "flare_s": 0.01 * n, "nequip_epoch_s": 0.001 * n}
            for n in (100, 300, 900)]
    p = scaling.project({"rows": rows, "flare_config_factor": 2.0}, epochs=10, atoms_factor=1.0,
                        gpu_speedup=10.0, gpus=4, cpus=16)
    assert p["fits"]["flare"][1] == pytest.approx(1.0) and p["fits"]["nequip"][1] == pytest.approx(1.0)
    assert p["nequip_gpu_h"] == pytest.approx(p["nequip_cpu_h"] / 10.0)
    assert p["flare_cpu_h"] > 0 and p["wall_h"] >= p["flare_cpu_h"] / 16
    args = type("A", (), {"gpus": 4, "cpus": 16, "epochs": 10, "atoms_factor": 1.0, "gpu_speedup": 10.0})
    text = scaling.markdown(p, args, {"rows": rows})
    assert text.startswith("| space | stage |") and "assumed" in text


def test_scaling_measure_tiny(tmp_path):
    scaling = _load("scaling")
    meas = scaling.measure(10, (500, 900), nequip_epochs=2, work=tmp_path, progress=lambda _: None,
                           labeller="classical")
    assert [r["paper_n"] for r in meas["rows"]] == [500, 900]
    assert meas["rows"][0]["n_train"] < meas["rows"][1]["n_train"]
    for row in meas["rows"]:
        assert row["flare_s"] > 0 and row["nequip_epoch_s"] > 0
    assert meas["flare_config_factor"] > 0


def test_nequip_gpu_measure_tiny_cpu(tmp_path):
    bench = _load("nequip_gpu")
    r = bench.measure(5, epochs=2, device="cpu", work=tmp_path, params={"num_features": 4, "l_max": 0},
                      labeller="classical")
    assert r["epochs"] == 2 and r["batches"] >= 1 and r["n_train"] > 0
    assert 0.0 < r["loader_share"] < 1.0
    assert r["epoch_wall_median"] >= r["compute_s_per_epoch"] > 0
    assert r["util_source"] and r["util_mean"] > 0 and not math.isnan(r["util_mean"])


def test_time_to_best_spaces_are_valid():
    from sweep.tune.space import parse_space

    ttb = _load("time_to_best")
    for model, grid in (("flare", 24), ("nequip", 16)):
        loaded = parse_space(ttb.space_text(model, None, quick=True), "grid")
        assert loaded.space.search.algorithm == "grid" and loaded.group_size(0) == grid
        assert [g.element for g in loaded.groups] == ["Cu", "Ti"]
        strat = parse_space(ttb.space_text(model, {"samples": 4, "seed": 1, "grace": 2}, quick=True), "tpe")
        assert strat.space.search.algorithm == "tpe" and strat.space.scheduler.kind == "asha"
        assert strat.group_size(0) == 4 and strat.space.search.seed == 1


def test_fraction_to_best():
    ttb = _load("time_to_best")
    rows = [{"mae": 10.0, "compute": 1.0}, {"mae": 5.09, "compute": 2.0}, {"mae": 5.0, "compute": 3.0}]
    assert ttb.fraction_to_best(rows, target=5.0, grid_compute=12.0) == (pytest.approx(0.25), True)
    assert ttb.fraction_to_best(rows[:1], target=5.0, grid_compute=10.0) == (pytest.approx(0.1), False)


def test_random_order_needs_half_the_grid_for_a_single_winner():
    ttb = _load("time_to_best")
    grid = [{"mae": 5.0 + i, "compute": 1.0} for i in range(24)]  # one configuration within 2%
    assert ttb.random_order_fraction(grid, target=5.0) == (1, pytest.approx((23 / 2 + 1) / 24))
    # the winner costs 5 of the 28: the other 23 come before it half the time
    grid[0]["compute"] = 5.0
    assert ttb.random_order_fraction(grid, target=5.0) == (1, pytest.approx((23 / 2 + 5) / 28))
    # every configuration within reach: the first one does, at its mean cost
    assert ttb.random_order_fraction(grid, target=100.0) == (24, pytest.approx(1 / 24))


def test_flare_sharing_space_and_ledger_comparison():
    from sweep.tune.ledger import LedgerRecord
    from sweep.tune.space import parse_space

    bench = _load("flare_sharing")
    for quick, size in ((True, 16), (False, 48)):
        loaded = parse_space(bench.space_text(quick), "grid")
        assert loaded.group_size(0) == size and loaded.space.studies[0].resources.cpus == 1

    def record(digest, mae, seconds, shared, computed):
        tally = {"shared": shared, "computed": computed, "compute_s": 0.5 * computed, "reused": 3, "reused_s": 1.0}
        return LedgerRecord(config_hash=digest, status="finished", model="flare", element="Cu", task="grid", seed=0,
                            params={"descriptor": "B2", "r_cut": 4.5, "n_max": 6, "l_max": 2},
                            metrics={"val_forces_mae": mae, "train_seconds": seconds, "trial_wall_s": seconds},
                            info={"descriptors": tally, "prediction_descriptors": tally}, work_dir="w", finished_at=0.0)

    on = [record("a", 10.0, 1.0, True, 2), record("b", 20.0, 1.0, True, 0)]
    off = [record("a", 10.0, 9.0, False, 4), record("b", 20.5, 9.0, False, 4)]
    max_abs, max_rel, compared, missing = bench.metric_differences(on, off)
    assert (max_abs, compared, missing) == (0.5, 2, []) and max_rel == pytest.approx(0.5 / 20.5)
    assert bench.metric_differences(on[:1], off)[3] == ["b"]
    assert bench.descriptor_seconds(on) == {"computed": 4.0, "compute_s": 2.0, "reused": 12.0, "reused_s": 4.0}
    assert bench.shared_flags(on) == {True} and bench.shared_flags(off) == {False}
    assert bench.descriptor_settings(on) == 1


def test_nequip_sharing_space_totals_and_epoch_share(emt_cu_frames, tmp_path):
    from types import SimpleNamespace

    from sweep.tune.ledger import LedgerRecord
    from sweep.tune.space import parse_space

    bench = _load("nequip_sharing")
    loaded = parse_space(bench.space_text(2), "grid")
    assert loaded.group_size(0) == 8 and loaded.space.studies[0].resources.cpus == 1

    def record(digest, mae, seconds, reused):
        return LedgerRecord(config_hash=digest, status="finished", model="nequip", element="Cu", task="grid", seed=0,
                            params={}, metrics={"val_forces_mae": mae, "train_seconds": seconds, "trial_wall_s": 9.0},
                            info={"train_cpu_seconds": seconds / 2, "data_cache": {"frames_reused": reused}},
                            work_dir="w", finished_at=0.0)

    on = [record("a", 10.0, 1.0, 4), record("b", 20.0, 2.0, 6)]
    off = [record("a", 10.0, 3.0, 0), record("b", 20.5, 1.0, 0)]
    assert bench.metric_differences(on, off) == {"val_forces_mae": (0.5, pytest.approx(0.5 / 20.5))}
    runs = [SimpleNamespace(records=on, wall_s=5.0), SimpleNamespace(records=off, wall_s=7.0)]
    t = bench.totals(runs)
    assert (t["wall_s"], t["train_seconds"], t["cpu_seconds"], t["frames_reused"]) == (6.0, 2.0, 1.0, 5.0)

    share = bench.nl_epoch_share(emt_cu_frames[0][:6], emt_cu_frames[0][6:8], 3, tmp_path)
    assert share["epochs"] == 3 and 0 < share["share"] < 1 and share["training_nl_s"] > 0


def test_asha_fraction_is_successive_halving_cost():
    from sweep.tune.space import SchedulerSettings

    scaling = _load("scaling")
    assert scaling.asha_fraction(SchedulerSettings()) == 1.0
    # rungs 20, 60, 180, 540 of 1000 epochs, a third passing each
    nequip = SchedulerSettings(kind="asha", grace_period=20, reduction_factor=3, max_t=1000)
    expected = (20 + 40 / 3 + 120 / 9 + 360 / 27 + 460 / 81) / 1000
    assert scaling.asha_fraction(nequip) == pytest.approx(expected)
    assert scaling.asha_fraction(SchedulerSettings(kind="asha", grace_period=5, max_t=5)) == 1.0


def test_faults_script_prints_a_line_per_kind():
    """The script end to end on its cheapest kind (the fault tests under tests/faults/ cover every kind)."""
    import subprocess

    out = subprocess.run([sys.executable, str(BENCH / "faults.py"), "--only", "interrupted-write", "--kills", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-5] == "every fault survived", lines
    for line, kind in zip(lines[-4:], ("ingest", "ledger", "export", "report")):
        counts = re.match(rf"interrupted write \({kind}\): injected (\d+), survived (\d+), half-written 0", line)
        assert counts and counts.group(1) == counts.group(2) == "1", line


def test_cluster_overheads_read_from_ledger_timings(tmp_path):
    import json

    cluster = _load("cluster")
    (tmp_path / "ledger").mkdir()
    for i, timings in enumerate([{"resolve_s": 0.1, "setup_s": 0.2, "logging_s": 0.3, "run_training_s": 4.0},
                                 {"resolve_s": 0.5, "setup_s": 0.5, "logging_s": 1.0, "run_training_s": 5.0},
                                 {}]):
        (tmp_path / "ledger" / f"{i}.json").write_text(json.dumps({"timings": timings}))
    found = cluster.overheads(tmp_path)
    assert found["overhead_s"] == pytest.approx([0.6, 2.0])  # the record without timings is left out
    assert found["run_training_s"] == [4.0, 5.0]


def test_warm_start_replay_on_a_synthetic_table():
    """A neighbour whose best is the target's best: the warm replay finds it first, the cold one later."""
    import itertools
    import json

    warm_start = _load("warm_start")
    grid_text = _load("time_to_best").space_text("flare", None, True, ["Cu", "Ag"])
    points = [dict(zip(("r_cut", "n_max", "l_max", "zeta"), v))
              for v in itertools.product([3.5, 4.5, 5.5], [3, 5], [1, 2], [1, 2])]
    best = {"r_cut": 5.5, "n_max": 5, "l_max": 2, "zeta": 1}

    def table_for(offset):
        return {json.dumps(p, sort_keys=True): (10.0 + offset + 0.1 * i if p != best else 5.0, 1.0)
                for i, p in enumerate(points)}

    table = {"Cu": table_for(0.0), "Ag": table_for(1.0)}
    (row,) = warm_start.compare(grid_text, table, ["Cu"], seeds=3, samples=8)
    assert row["grid_best"] == 5.0 and row["grid_compute"] == 24.0
    assert row["warm"] == [(1 / 24, True)] * 3  # the first trial is Ag's best
    assert all(f >= 1 / 24 for f, _ in row["cold"])
    assert warm_start.median_fraction(row["warm"]) <= warm_start.median_fraction(row["cold"])


@pytest.mark.parametrize("packing, share, cpus", [(1, 1.0, 16), (4, 0.25, 4), (8, 0.125, 2)])
def test_gpu_packing_spaces_share_one_gpu(packing, share, cpus):
    from sweep.tune.space import parse_space

    gpu_packing = _load("gpu_packing")
    loaded = parse_space(gpu_packing.space_text(16, packing, 16, 5), "pack.yaml")
    assert loaded.total_trials() == 16
    resources = loaded.space.studies[0].resources
    assert (resources.gpus, resources.cpus) == (share, cpus)
    assert gpu_packing.trials_per_hour(16, 1800.0) == 32.0


def test_flare_cost_grows_linearly_past_the_sparse_cap():
    scaling = _load("scaling")
    assert scaling.flare_cap_frames() == 300  # max_sparse 3000 / sparse_per_frame 10
    rows = [{"n_train": n, "flare_s": 0.01 * n ** 2} for n in (50, 100, 200)]
    fit = scaling.fit_power([r["n_train"] for r in rows], [r["flare_s"] for r in rows])
    slope, status = scaling.beyond_cap_slope(rows, fit, cap=300)
    assert status.startswith("assumed") and slope == pytest.approx(2 * 0.01 * 300)
    at_cap = scaling.flare_cost(300, fit, 300, (slope, status))
    assert scaling.flare_cost(2430, fit, 300, (slope, status)) == pytest.approx(at_cap + slope * 2130)
    # two sizes measured past the cap give the slope
    past = rows + [{"n_train": 300, "flare_s": 900.0}, {"n_train": 900, "flare_s": 1500.0}]
    assert scaling.beyond_cap_slope(past, fit, cap=300) == (pytest.approx(1.0), "measured")


def test_winner_ranks_and_the_grace_that_keeps_the_winner():
    import pandas as pd

    ttb = _load("time_to_best")
    # config "w" starts worst and ends best: ASHA with a short grace would stop it
    curves = {"w": [9, 8, 4, 1], "a": [5, 4, 3, 3], "b": [6, 5, 4, 4], "c": [7, 6, 5, 5], "d": [1, 2, 2, 2],
              "e": [8, 7, 6, 6]}
    history = pd.DataFrame([{"config_hash": k, "element": "Cu", "step": step, "value": v}
                            for k, values in curves.items() for step, v in enumerate(values, 1)])
    ranks = ttb.winner_ranks(history, "Cu")
    assert ranks == {1: (6, 6), 2: (6, 6), 3: (3, 6), 4: (1, 6)}
    assert ttb.safe_grace(ranks, 3.0) == 4  # only a grace of all four reports keeps "w"
    assert ttb.safe_grace({1: (1, 6), 2: (1, 6), 3: (1, 6)}, 3.0) == 1


def test_a_grid_winner_retrained_under_other_seeds(sweep_store, tmp_path):
    ttb = _load("time_to_best")
    params = {"descriptor": "B2", "r_cut": 4.0, "n_max": 2, "l_max": 1, "sparse_per_frame": 3, "maxiter": 5}
    spread = ttb.seed_spread("flare", "Cu", params, Path(sweep_store), range(2), tmp_path)
    assert [seed for seed, _, _ in spread] == [0, 1]
    assert all(math.isfinite(v) and v > 0 and math.isfinite(t) and t > 0 for _, v, t in spread)
    assert ttb.spread_text([10.0, 12.0, 20.0]) == "10.0–20.0 (range 83% of the median)"


def test_warm_over_cold_never_leaves_the_median_undefined():
    import statistics

    ws = _load("warm_start")
    assert ws.warm_over_cold(0.1, 0.4) == pytest.approx(0.25)
    assert ws.warm_over_cold(0.1, math.inf) == 0.0  # cold's median seed never got there
    assert ws.warm_over_cold(math.inf, math.inf) == math.inf  # neither: no gain
    ratios = [ws.warm_over_cold(w, c) for w, c in ((0.149, 0.234), (math.inf, math.inf), (0.131, 0.242), (0.031, 0.248))]
    assert statistics.median(ratios) == pytest.approx((0.149 / 0.234 + 0.131 / 0.242) / 2)
