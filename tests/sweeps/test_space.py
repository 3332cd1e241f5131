"""Search-space YAML: the shipped spaces load, and every bad key or value is one line naming file and key."""

from __future__ import annotations

import pytest

from sweep.errors import InputError
from sweep.tune.ledger import config_hash
from sweep.tune.resources import NodeCapacity, check_feasible, trial_resources
from sweep.tune.space import DerivedParam, load_space, parse_space, shipped_spaces

GOOD = """
elements: [Cu, Au]
task: full
studies:
  - model: flare
    resources: {cpus: 2}
    params:
      r_cut: {grid: [4.0, 5.0]}
      n_max: 4
  - model: nequip
    resources: {cpus: 1, gpus: auto}
    params:
      l_max: {grid: [0, 1, 2]}
      num_features: {from: l_max, map: {0: 2, 1: 4, 2: 8}}
      max_epochs: 3
"""


def _error(text: str, source: str = "bad.yaml") -> InputError:
    with pytest.raises(InputError) as info:
        parse_space(text, source)
    return info.value


def test_shipped_spaces_all_load():
    totals = {p.name: load_space(p).total_trials() for p in shipped_spaces()}
    assert {"demo.yaml", "flare_b1.yaml", "flare_b2.yaml", "nequip.yaml", "nequip_lmax_learning_curve.yaml"} <= set(totals)
    assert totals["demo.yaml"] == 8
    # Cu and Ti: l_max 0-3; Au and Os: l_max 0-5; five training-set sizes each
    assert totals["nequip_lmax_learning_curve.yaml"] == (2 * 4 + 2 * 6) * 5
    # the paper spaces run TPE + ASHA: a quarter of each metal's grid (B1: 12 of 40, B2 and NequIP: 24 of 96)
    assert (totals["flare_b1.yaml"], totals["flare_b2.yaml"], totals["nequip.yaml"]) == (27 * 12, 27 * 24, 27 * 24)
    for name, grid in (("flare_b1.yaml", 4 * 5 * 2), ("flare_b2.yaml", 4 * 4 * 3 * 2), ("nequip.yaml", 3 * 2 ** 5)):
        space = load_space(next(p for p in shipped_spaces() if p.name == name)).space
        assert space.search.algorithm == "tpe" and space.scheduler.kind == "asha"
        grid_size = 1
        for spec in space.studies[0].params.values():
            grid_size *= len(spec.values()) if hasattr(spec, "values") and callable(spec.values) else 1
        assert grid_size == grid and space.search.num_samples * 27 == totals[name]


def test_learning_curve_features_follow_l_max():
    loaded = load_space(next(p for p in shipped_spaces() if p.name == "nequip_lmax_learning_curve.yaml"))
    au = next(i for i, s in enumerate(loaded.space.studies) if "Au" in (s.elements or []))
    assert loaded.resolve_params(au, {"l_max": 5})["num_features"] == 64
    assert loaded.resolve_params(au, {"l_max": 0})["num_features"] == 2
    assert {g.task for g in loaded.groups} == {f"learning-curve:{n}" for n in (100, 300, 500, 700, 900)}


def test_groups_and_resolved_params():
    loaded = parse_space(GOOD, "good.yaml")
    assert [g.key for g in loaded.groups] == ["flare/Cu/full", "flare/Au/full", "nequip/Cu/full", "nequip/Au/full"]
    assert loaded.total_trials() == 2 * 2 + 2 * 3
    assert loaded.resolve_params(1, {"l_max": 2}) == {"max_epochs": 3, "l_max": 2, "num_features": 8}
    assert isinstance(loaded.space.studies[1].params["num_features"], DerivedParam)


@pytest.mark.parametrize("text, key, words", [
    ("studies: [{model: flare, elements: [Cu]}]\nfoo: 1\n", "foo", "unknown key"),
    ("studies: [{model: flare, elements: [Cu], parms: {}}]\n", "studies[0].parms", "unknown key"),
    ("studies: [{model: flare, elements: [Cu], resources: {cpus: two}}]\n", "studies[0].resources.cpus", "integer"),
    ("studies: [{model: flare, elements: [Cu], params: {r_cut: {grid: []}}}]\n", "studies[0].params.r_cut.grid",
     "at least 1 item"),
    ("studies: [{model: flare, elements: [Cu], params: {r_cut: {grd: [4]}}}]\n", "studies[0].params.r_cut",
     "grid"),
    ("studies: [{model: nequip, elements: [Cu], resources: {gpus: -1}}]\n", "studies[0].resources.gpus", "auto"),
    ("studies: [{model: nequip, elements: [Cu], params: {l_max: [0, 1]}}]\n", "studies[0].params.l_max",
     "{grid: [...]}"),
    ("studies: [{model: flare, elements: [Xx]}]\n", "studies[0].elements", "not a TM23 metal"),
    ("task: everything\nstudies: [{model: flare, elements: [Cu]}]\n", "task", "unknown task"),
    ("search: {algorithm: bayes}\nstudies: [{model: flare, elements: [Cu]}]\n", "search.algorithm", "grid"),
    ("studies: []\n", "studies", "at least 1 item"),
    ("studies: [{model: schnet, elements: [Cu]}]\n", "studies[0].model", "unknown model"),
    ("studies: [{model: flare}]\n", "studies[0].elements", "no elements"),
    ("studies: [{model: flare, elements: [Cu], params: {r_kut: 5.0}}]\n", "studies[0].params.r_kut",
     "unknown hyperparameter"),
    ("studies: [{model: flare, elements: [Cu], params: {n_max: {grid: [4, 0]}}}]\n", "studies[0].params.n_max",
     "greater than or equal"),
    ("studies: [{model: nequip, elements: [Cu], params: {learning_rate: {grid: [0.01, fast]}}}]\n",
     "studies[0].params.learning_rate", "number"),
    ("studies: [{model: flare, elements: [Cu], params: {r_cut: {choice: [4.0, 5.0]}}}]\n",
     "studies[0].params.r_cut", "use {grid"),
    ("search: {algorithm: optuna-grid}\nstudies: [{model: nequip, elements: [Cu], "
     "params: {learning_rate: {range: [0.001, 0.01], log: true}}}]\n", "studies[0].params.learning_rate", "discrete"),
    ("studies: [{model: nequip, elements: [Cu], params: {l_max: {grid: [0, 3]}, "
     "num_features: {from: l_max, map: {0: 2}}}}]\n", "studies[0].params.num_features.map", "l_max = 3"),
    ("studies: [{model: flare, elements: [Cu], resources: {gpus: 1}}]\n", "studies[0].resources.gpus", "CPUs"),
    ("studies: [{model: flare, elements: [Cu]}]\nsearch: {num_samples: 0}\n", "search.num_samples", "greater"),
    ("studies: [{model: flare, elements: [Cu], params: {lr: {range: [2, 1]}}}]\n", "studies[0].params.lr.range",
     "below"),
    ("studies: [\n", "line 2", "YAML"),
    ("- just\n- a list\n", "space", "mapping"),
])
def test_bad_space_names_file_and_key(text, key, words):
    err = _error(text)
    line = err.line()
    assert "\n" not in line
    assert line.startswith(f"bad.yaml: {key}: "), line
    assert words in err.reason, line


def test_missing_file_is_one_line(tmp_path):
    with pytest.raises(InputError, match=r"nope\.yaml: space: no such file"):
        load_space(tmp_path / "nope.yaml")


def _nodes(*spec):
    return [NodeCapacity(f"n{i}", cpus, gpus) for i, (cpus, gpus) in enumerate(spec)]


def test_impossible_resources_are_refused_up_front():
    loaded = parse_space("studies: [{model: flare, elements: [Cu], resources: {cpus: 3}}]\n", "flare3.yaml")
    # 2 + 2 CPUs in total, but FLARE's ranks must share one node
    with pytest.raises(InputError) as info:
        check_feasible(loaded, _nodes((2, 0), (2, 0)))
    assert info.value.line().startswith("flare3.yaml: studies[0].resources.cpus: 3 CPUs per trial on one node")
    assert check_feasible(loaded, _nodes((2, 0), (4, 0)))[0].num_cpus == 3

    gpu = parse_space("studies: [{model: nequip, elements: [Cu], resources: {gpus: 1}}]\n", "gpu.yaml")
    with pytest.raises(InputError, match=r"^gpu\.yaml: studies\[0\]\.resources\.gpus: 1 GPU per trial"):
        check_feasible(gpu, _nodes((2, 0)))


def test_requests_gpu_only_when_the_cluster_has_one():
    loaded = parse_space(GOOD, "good.yaml")
    nequip = loaded.space.studies[1]
    assert trial_resources(nequip, _nodes((2, 0))).bundles == ({"CPU": 1.0},)
    assert trial_resources(nequip, _nodes((2, 0), (2, 1))).bundles == ({"CPU": 1.0, "GPU": 1.0},)
    flare = trial_resources(loaded.space.studies[0], _nodes((2, 0)))
    assert flare.bundles == ({"CPU": 1.0}, {"CPU": 1.0}) and flare.strategy == "STRICT_PACK"
    assert flare.num_cpus == 2


def test_config_hash_ignores_key_order_but_not_values():
    a = config_hash("nequip", "Cu", "full", 0, {"l_max": 1, "r_max": 4.0})
    assert a == config_hash("nequip", "Cu", "full", 0, {"r_max": 4.0, "l_max": 1})
    assert a != config_hash("nequip", "Cu", "full", 0, {"r_max": 4.0, "l_max": 2})
    assert a != config_hash("nequip", "Au", "full", 0, {"r_max": 4.0, "l_max": 1})
    assert a != config_hash("nequip", "Cu", "full", 1, {"r_max": 4.0, "l_max": 1})
