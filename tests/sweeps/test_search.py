"""From a space to Tune: per-group Optuna searches and per-group ASHA, without a cluster."""

from __future__ import annotations

from collections import Counter

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.variant_generator import generate_variants

from sweep.tune.search import GroupedScheduler, GroupedSearcher, build_search, group_key, variant_param_space
from sweep.tune.space import parse_space

SPACE = """
elements: [Cu, Ti]
task: full
search: {{algorithm: {algorithm}, num_samples: {n}, seed: 3}}
scheduler: {{kind: {scheduler}, grace_period: 1, reduction_factor: 2, max_t: 10}}
studies:
  - model: nequip
    params:
      l_max: {{{kind}: [0, 1, 2]}}
      learning_rate: {{{kind}: [0.01, 0.005]}}
      max_epochs: 2
"""


def _space(algorithm="optuna-grid", n=1, scheduler="none", kind="grid"):
    return parse_space(SPACE.format(algorithm=algorithm, n=n, scheduler=scheduler, kind=kind), "s.yaml")


def _drain(searcher: GroupedSearcher) -> list[dict]:
    configs, i = [], 0
    while True:
        config = searcher.suggest(f"t{i}")
        if config == Searcher.FINISHED:
            return configs
        configs.append(config)
        searcher.on_trial_complete(f"t{i}", {"val_forces_mae": float(i)})
        i += 1


def test_optuna_grid_covers_each_group_exactly_once():
    loaded = _space("optuna-grid")
    configs = _drain(GroupedSearcher(loaded))
    assert len(configs) == loaded.total_trials() == 2 * 6
    per_group = Counter(group_key(c) for c in configs)
    assert per_group == {"nequip/Cu/full": 6, "nequip/Ti/full": 6}
    points = {(group_key(c), c["spec"]["params"]["l_max"], c["spec"]["params"]["learning_rate"]) for c in configs}
    assert len(points) == 12  # every grid point of every element, none twice
    # round-robin: the elements advance together
    assert [c["spec"]["element"] for c in configs[:4]] == ["Cu", "Ti", "Cu", "Ti"]


def test_tpe_spends_num_samples_per_group_and_survives_save_restore(tmp_path):
    loaded = _space("tpe", n=4, kind="choice")
    searcher = GroupedSearcher(loaded)
    first = [searcher.suggest(f"a{i}") for i in range(3)]
    for i in range(3):
        searcher.on_trial_complete(f"a{i}", {"val_forces_mae": 1.0 + i})
    searcher.save(str(tmp_path / "s.pkl"))
    restored = GroupedSearcher(loaded)
    restored.restore(str(tmp_path / "s.pkl"))
    rest = _drain(restored)
    assert len(first) + len(rest) == 8
    assert Counter(group_key(c) for c in first + rest) == {"nequip/Cu/full": 4, "nequip/Ti/full": 4}


def test_tpe_on_a_grid_never_issues_a_point_twice_while_untried_ones_remain():
    loaded = _space("tpe", n=6, kind="grid")  # 6 samples of a 6-point grid per element
    searcher = GroupedSearcher(loaded)
    configs = _drain(searcher)
    assert len(configs) == 12
    for element in ("Cu", "Ti"):
        points = [(c["spec"]["params"]["l_max"], c["spec"]["params"]["learning_rate"])
                  for c in configs if c["spec"]["element"] == element]
        assert sorted(points) == sorted((l, lr) for l in (0, 1, 2) for lr in (0.01, 0.005)), points
    # the withdrawn repeats are failed asks of the inner study, not results it learns from
    study = searcher._inner["nequip/Cu/full"]._ot_study
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == 6


def test_variant_space_expands_per_element_grids():
    loaded = _space("grid")
    variants = [spec for _, spec in generate_variants(variant_param_space(loaded))]
    assert len(variants) == loaded.total_trials() == 12
    seen = {(v["spec"]["element"], v["spec"]["params"]["l_max"], v["spec"]["params"]["learning_rate"]) for v in variants}
    assert len(seen) == 12
    search_alg, space, scheduler, num_samples = build_search(loaded)
    assert space and scheduler is None and num_samples == 1


def _trial(element: str, n: int, warm_from: str | None = None) -> Trial:
    config = {"spec": {"study": 0, "model": "nequip", "element": element, "task": "full", "params": {}}}
    if warm_from:
        config["spec"]["warm_from"] = warm_from
    return Trial("run_trial", config=config, stub=True, trial_id=f"{element}{n}")


def test_asha_compares_trials_only_within_their_group():
    loaded = _space("grid", scheduler="asha")
    _, _, scheduler, _ = build_search(loaded)
    assert isinstance(scheduler, GroupedScheduler)
    cu = [_trial("Cu", i) for i in range(4)]
    ti = [_trial("Ti", i) for i in range(4)]
    for t in cu + ti:
        scheduler.on_trial_add(None, t)
    decisions = {}
    # Ti is much harder than Cu: one ASHA over both would stop every Ti trial
    for k, t in enumerate(cu):
        decisions[t.trial_id] = scheduler.on_trial_result(None, t, {"training_iteration": 1,
                                                                    "val_forces_mae": 10.0 + k})
    for k, t in enumerate(ti):
        decisions[t.trial_id] = scheduler.on_trial_result(None, t, {"training_iteration": 1,
                                                                    "val_forces_mae": 100.0 + k})
    assert decisions["Ti0"] == TrialScheduler.CONTINUE  # best of its own group
    assert decisions["Ti3"] == TrialScheduler.STOP
    assert decisions["Cu3"] == TrialScheduler.STOP
    assert set(scheduler._by_group) == {"nequip/Cu/full", "nequip/Ti/full"}


def test_asha_never_stops_a_warm_start_point_but_ranks_others_against_it():
    _, _, scheduler, _ = build_search(_space("grid", scheduler="asha"))
    good, warm, plain, late = _trial("Cu", 0), _trial("Cu", 1, warm_from="Ag"), _trial("Cu", 2), _trial("Cu", 3)
    for t in (good, warm, plain, late):
        scheduler.on_trial_add(None, t)

    def report(trial, value):
        return scheduler.on_trial_result(None, trial, {"training_iteration": 1, "val_forces_mae": value})

    assert report(good, 10.0) == TrialScheduler.CONTINUE
    assert report(warm, 50.0) == TrialScheduler.CONTINUE  # Ag's best, behind at the first rung, runs on
    assert report(plain, 50.0) == TrialScheduler.STOP  # the same value stops a trial TPE drew
    # the warm point's value sits in the rung (η = 2, median cutoff): 40 beats the median of 10, 50
    # and 50, where without the warm point's 50 it would fall behind the median of 10 and 50
    assert report(late, 40.0) == TrialScheduler.CONTINUE
    rung = scheduler._by_group["nequip/Cu/full"]._brackets[0]._rungs[-1][1]
    assert rung[warm.trial_id] == -50.0
