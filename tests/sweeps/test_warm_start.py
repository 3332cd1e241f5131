"""Warm starts across metals: neighbours' best points go first into a metal's Optuna search."""

from __future__ import annotations

import pytest

from sweep.tune.ledger import Ledger, LedgerRecord
from sweep.tune.search import SPEC_KEY, GroupedSearcher
from sweep.tune.space import parse_space, point_key
from sweep.tune.warm_start import in_space, neighbours_first, warm_starts_for

SPACE = """
elements: [Cu, Ag, Ti]
task: grid
search: {{algorithm: tpe, num_samples: 8, startup_trials: 2, seed: 3, warm_start: {warm}}}
studies:
  - model: flare
    params:
      r_cut: {{grid: [3.5, 4.0, 4.5, 5.0, 5.5]}}
      n_max: {{grid: [3, 4, 5, 6]}}
      zeta: {{choice: [1, 2]}}
"""


def test_neighbours_go_same_group_then_next_door_then_same_structure():
    order = neighbours_first("Cu", ["Ti", "Pt", "Ni", "Au", "Zn", "Ag", "Fe", "Cu"])
    assert order[:2] == ["Ag", "Au"]  # group 11
    assert order[2:4] == ["Ni", "Zn"]  # period 4, one group away
    assert order[4] == "Pt"  # fcc like Cu
    assert set(order[5:]) == {"Ti", "Fe"} and "Cu" not in order


def test_a_point_outside_the_targets_space_is_not_offered():
    searched = parse_space(SPACE.format(warm="true"), "s.yaml").searched(0)
    assert in_space({"r_cut": 4.0, "n_max": 5, "zeta": 2, "l_max": 3}, searched) == {"r_cut": 4.0, "n_max": 5,
                                                                                      "zeta": 2}
    assert in_space({"r_cut": 4.2, "n_max": 5, "zeta": 2}, searched) is None  # not a grid value
    assert in_space({"r_cut": 4.0, "zeta": 2}, searched) is None  # a searched name missing


def _suggest_all(searcher, n):
    out = []
    for i in range(n):
        config = searcher.suggest(f"t{i}")
        out.append((f"t{i}", config[SPEC_KEY]))
    return out


def _searcher(tmp_path, warm: str, name="now"):
    loaded = parse_space(SPACE.format(warm=warm), "s.yaml")
    return GroupedSearcher(loaded, warm_starts_for(loaded, tmp_path, name))


def test_a_neighbours_best_so_far_is_tried_next_once_it_has_its_startup_results(tmp_path):
    searcher = _searcher(tmp_path, "true")
    first = _suggest_all(searcher, 6)  # two rounds over Cu, Ag, Ti: nothing finished yet, nothing enqueued
    assert searcher.warm_points() == {"flare/Cu/grid": [], "flare/Ag/grid": [], "flare/Ti/grid": []}
    ag = [(tid, spec["params"]) for tid, spec in first if spec["element"] == "Ag"]
    for value, (tid, _) in zip((0.30, 0.10), ag):
        searcher.on_trial_complete(tid, {"val_forces_mae": value})
    best_ag = ag[1][1]
    (_, cu), = [x for x in _suggest_all_from(searcher, 6, 3) if x[1]["element"] == "Cu"]
    assert cu["params"] == best_ag  # Cu's next trial is Ag's best, group 11
    assert cu["warm_from"] == "Ag"  # marked, so that ASHA lets it run and MLflow tags it
    assert all("warm_from" not in spec for _, spec in first)  # TPE's own draws are not
    # Ti (group 4, hcp) has no close neighbour but still gets the only finished one, Ag
    assert searcher.warm_points()["flare/Ti/grid"] == [best_ag]
    assert searcher.warm_points()["flare/Ag/grid"] == []  # never its own


def _suggest_all_from(searcher, start, n):
    return [(f"t{i}", searcher.suggest(f"t{i}")[SPEC_KEY]) for i in range(start, start + n)]


def test_an_earlier_sweeps_best_seeds_the_first_trial_and_the_flag_turns_it_off(tmp_path):
    earlier = {"r_cut": 5.5, "n_max": 6, "zeta": 1, "l_max": 2}
    worse = {"r_cut": 3.5, "n_max": 3, "zeta": 1, "l_max": 2}
    for digest, params, value in (("a" * 16, earlier, 0.05), ("b" * 16, worse, 0.5)):
        Ledger(tmp_path / "before").put(LedgerRecord(
            config_hash=digest, status="finished", model="flare", element="Au", task="grid", seed=0, params=params,
            metrics={"val_forces_mae": value}, work_dir="w", finished_at=1.0))
    on = _suggest_all(_searcher(tmp_path, "true"), 3)
    assert [spec["params"] for _, spec in on if spec["element"] in ("Cu", "Ag")] == [
        {"r_cut": 5.5, "n_max": 6, "zeta": 1}] * 2  # group 11, like Au: Au's best first
    off = _suggest_all(_searcher(tmp_path, "false"), 3)
    assert {"r_cut": 5.5, "n_max": 6, "zeta": 1} not in [spec["params"] for _, spec in off]


POINTS = [{"r_cut": r, "n_max": n, "zeta": z} for r in (3.5, 4.0, 4.5, 5.0, 5.5) for n in (3, 4, 5, 6) for z in (1, 2)]
AGREED, RUNNER_UP = {"r_cut": 4.5, "n_max": 5, "zeta": 2}, {"r_cut": 5.5, "n_max": 5, "zeta": 2}
BESTS = {e: {"r_cut": r, "n_max": 6, "zeta": 1} for e, r in (("Ag", 3.5), ("Au", 4.0), ("Ni", 5.0))}


def _table(element: str, scale: float) -> list[tuple[float, dict]]:
    """A neighbour's results over the whole SPACE grid: its own best, AGREED 5% and RUNNER_UP 10% worse, the rest
    50% and more."""
    off = {point_key(BESTS[element]): 0.0, point_key(AGREED): 0.05, point_key(RUNNER_UP): 0.1}
    return [(scale * (1 + off.get(point_key(p), 0.5 + 0.01 * i)), p) for i, p in enumerate(POINTS)]


def test_after_the_nearest_neighbours_best_come_the_points_its_neighbours_agree_on():
    from sweep.tune.warm_start import WarmStarts

    searched = parse_space(SPACE.format(warm="true"), "s.yaml").searched(0)
    # scales a hundredfold apart: regret is relative to each neighbour's own best
    scales = {"Ag": 0.01, "Au": 1.0, "Ni": 0.1}
    warm = WarmStarts(neighbours=3, earlier={("flare", "grid", e): _table(e, s) for e, s in scales.items()})
    assert warm.candidates("flare", "grid", "Cu", searched) == [
        ("Ag", BESTS["Ag"]),  # the nearest one's best first (group 11, lighter than Au)
        ("Ag+Au+Ni", AGREED),  # 5% off each one's best: nobody's best, best on average
        ("Ag+Au+Ni", RUNNER_UP),  # 10% off
    ]
    # a new best for Ag in this sweep goes first at the next call (tables are kept between calls)
    warm.add_result("flare", "grid", "Ag", POINTS[0], 0.001)
    assert warm.candidates("flare", "grid", "Cu", searched)[0] == ("Ag", POINTS[0])
    # neighbours that tried no point in common agree on nothing: their bests, closest first
    sparse = WarmStarts(neighbours=3, earlier={("flare", "grid", e): [(s, BESTS[e]), (2 * s, POINTS[i])]
                                               for i, (e, s) in enumerate(scales.items())})
    assert sparse.candidates("flare", "grid", "Cu", searched) == [(e, BESTS[e]) for e in ("Ag", "Au", "Ni")]


def test_grid_search_takes_no_warm_start(tmp_path):
    loaded = parse_space(SPACE.format(warm="true").replace("algorithm: tpe", "algorithm: grid")
                         .replace("choice: [1, 2]", "grid: [1, 2]"), "s.yaml")
    assert warm_starts_for(loaded, tmp_path, "now") is None


@pytest.mark.parametrize("bad", ["warm_start: 3", "warm_neighbours: 0"])
def test_bad_warm_start_settings_name_the_field(bad):
    from sweep.errors import InputError

    text = SPACE.format(warm="true").replace("warm_start: true", bad)
    with pytest.raises(InputError, match="search.warm"):
        parse_space(text, "s.yaml")


def test_an_unreadable_earlier_sweep_is_skipped_not_fatal(tmp_path):
    from sweep.tune.warm_start import earlier_results

    good = {"r_cut": 5.5, "n_max": 6, "zeta": 1}
    Ledger(tmp_path / "good").put(LedgerRecord(
        config_hash="c" * 16, status="finished", model="flare", element="Au", task="grid", seed=0, params=good,
        metrics={"val_forces_mae": 0.05}, work_dir="w", finished_at=1.0))
    Ledger(tmp_path / "stopped").put(LedgerRecord(
        config_hash="d" * 16, status="stopped", model="flare", element="Ag", task="grid", seed=0, params=good,
        metrics={"val_forces_mae": 0.01}, work_dir="w", finished_at=1.0))
    (tmp_path / "broken" / "ledger").mkdir(parents=True)
    (tmp_path / "broken" / "ledger" / "x.json").write_text("{not json")
    found = earlier_results(tmp_path, "now", "val_forces_mae")
    assert found == {("flare", "grid", "Au"): [(0.05, good)]}  # neither the stopped trial nor the broken sweep


def test_the_no_warm_start_choice_is_saved_with_the_sweep_and_kept_when_it_continues(tmp_path):
    from sweep.tune.runner import SWEEP_FILE, _define, _read_info

    loaded = parse_space(SPACE.format(warm="true"), "s.yaml")
    sweep_dir = tmp_path / "runs" / "s"
    sweep_dir.mkdir(parents=True)
    info = _define(sweep_dir, tmp_path / "s.yaml", loaded, str(tmp_path / "store"), tmp_path / "runs", False)
    assert info.warm_start is False and _read_info(sweep_dir / SWEEP_FILE).warm_start is False
    (sweep_dir / "ledger").mkdir()  # started: the saved choice now holds
    again = _define(sweep_dir, tmp_path / "s.yaml", loaded, str(tmp_path / "store"), tmp_path / "runs", True)
    assert again.warm_start is False


def test_run_offers_the_no_warm_start_flag():
    from typer.testing import CliRunner

    from sweep.cli import app

    out = CliRunner().invoke(app, ["run", "--help"], terminal_width=200)
    assert out.exit_code == 0 and "--no-warm-start" in out.output


#: A tiny FLARE space over r_cut; FIRST grids it for Au, THEN searches it for Cu with TPE and ASHA.
TINY = """
elements: [{element}]
task: full
search: {search}
scheduler: {scheduler}
studies:
  - model: flare
    resources: {{cpus: 1}}
    params:
      r_cut: {{grid: [3.5, 4.5]}}
      n_max: 2
      l_max: 1
      sparse_per_frame: 3
      block_size: 4
      maxiter: 10
"""
FIRST = TINY.format(element="Au", search="{algorithm: grid}", scheduler="{kind: none}")
THEN = TINY.format(element="Cu", search="{algorithm: tpe, num_samples: 2, startup_trials: 1, seed: 0}",
                   scheduler="{kind: asha, grace_period: 1, reduction_factor: 2}")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_later_sweep_tries_its_neighbours_best_first_runs_it_to_the_end_and_tags_it(tmp_path, sweep_store):
    from tests.sweeps.conftest import cli, mlflow_runs, write_space

    runs = tmp_path / "runs"
    for name, text in (("first", FIRST), ("then", THEN)):
        out = cli("run", str(write_space(tmp_path, text, f"{name}.yaml")), "--store", sweep_store,
                  "--runs-dir", str(runs), "--num-cpus", "1", "--no-live")
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    au_best = min(Ledger(runs / "first").records(), key=lambda r: r.metrics["val_forces_mae"])
    cu = mlflow_runs(runs, "then")
    assert len(cu) == 2
    warm = cu[cu["tags.warm_from"] == "Au"]
    assert len(warm) == 1 and float(warm["params.r_cut"].iloc[0]) == au_best.params["r_cut"]
    record, = [r for r in Ledger(runs / "then").records() if r.mlflow_run_id == warm["run_id"].iloc[0]]
    assert record.status == "finished"  # ASHA may stop the other trial, never this one
