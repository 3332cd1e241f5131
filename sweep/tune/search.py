"""From a search space to Tune's search algorithm, parameter space and scheduler.

Every trial's config has one key, ``spec``: ``{"study", "model", "element", "task",
"params"}``; ``params`` holds the searched values (fixed and derived ones are added in
the trial, by :meth:`LoadedSpace.resolve_params`).

- ``grid`` and ``random`` use Tune's own :class:`BasicVariantGenerator` over a nested
  space: a grid over studies, and inside each study a grid over its elements and tasks
  and its own hyperparameter domains. Tune expands nested grids.
- ``optuna-grid`` and ``tpe`` give every group (model, element, task) its own
  :class:`OptunaSearch`, with Optuna's ``GridSampler`` or ``TPESampler``, behind
  :class:`GroupedSearcher`; ``tune.grid_search`` cannot be combined with
  ``OptunaSearch`` (measured), and one study over all elements would let Cu's results
  steer Ti's search.
- Those Optuna searches start from the best points of neighbouring metals
  (:mod:`sweep.tune.warm_start`), unless ``search.warm_start`` is false.
- ASHA, when asked for, runs per group too (:class:`GroupedScheduler`): comparing a Cu
  trial's force error with a Ti trial's would stop the wrong trials. A warm-start point
  (its spec has ``warm_from``, the neighbours it came from) is never stopped early: it
  did well on its neighbours, and an early rung, decided against the few trials that
  reached it first, is no evidence against it. Its results still fill the rungs.
"""

from __future__ import annotations

import itertools
import pickle
import random
from typing import Any, Callable

from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import Searcher

from sweep.tune.space import ChoiceParam, GridParam, Group, LoadedSpace, point_key
from sweep.tune.warm_start import WarmStarts

SPEC_KEY = "spec"
#: The spec key of a warm-start point: the neighbouring metal whose best it is, or those it did well on, ``+``-joined.
WARM_FROM = "warm_from"


def group_key(config: dict) -> str:
    """The group (``model/element/task``) of a trial config."""
    spec = config[SPEC_KEY]
    return f"{spec['model']}/{spec['element']}/{spec['task']}"


# -- Tune's variant generator (grid, random) --------------------------------------------
def _tune_domain(spec):
    from ray import tune

    if isinstance(spec, GridParam):
        return tune.grid_search(spec.values())
    if isinstance(spec, ChoiceParam):
        return tune.choice(spec.values())
    low, high = spec.range
    if spec.integer:
        return (tune.lograndint if spec.log else tune.randint)(int(low), int(high) + 1)
    return (tune.loguniform if spec.log else tune.uniform)(low, high)


def variant_param_space(loaded: LoadedSpace) -> dict[str, Any]:
    """The nested param space for Tune's :class:`BasicVariantGenerator`."""
    from ray import tune

    studies = []
    for i, study in enumerate(loaded.space.studies):
        studies.append({
            "study": i,
            "model": study.model,
            "element": tune.grid_search(loaded.space.study_elements(i)),
            "task": tune.grid_search(loaded.space.study_tasks(i)),
            "params": {name: _tune_domain(s) for name, s in loaded.searched(i).items()},
        })
    return {SPEC_KEY: tune.grid_search(studies)}


# -- Optuna per group ------------------------------------------------------------------
def _optuna_distribution(spec):
    import optuna

    if isinstance(spec, (GridParam, ChoiceParam)):
        return optuna.distributions.CategoricalDistribution(spec.values())
    low, high = spec.range
    if spec.integer:
        return optuna.distributions.IntDistribution(int(low), int(high), log=spec.log)
    return optuna.distributions.FloatDistribution(low, high, log=spec.log)


def _make_searcher(loaded: LoadedSpace, group: Group, index: int):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    searched = loaded.searched(group.study)
    seed = loaded.space.search.seed + index
    if loaded.space.search.algorithm == "optuna-grid":
        sampler = optuna.samplers.GridSampler({k: s.values() for k, s in searched.items()} or {"_": [0]}, seed=seed)
    else:
        # multivariate: the grid's parameters interact (r_cut with n_max, lr with features);
        # constant liar: trials running in parallel are not suggested the same point
        sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=loaded.space.search.tpe_startup(),
                                             multivariate=True, constant_liar=True)
    space = {k: _optuna_distribution(s) for k, s in searched.items()}
    if not space:  # nothing varies: one fixed point, still a valid Optuna study
        space = {"_": optuna.distributions.CategoricalDistribution([0])}
    return OptunaSearch(space=space, metric=loaded.space.metric, mode=loaded.space.mode, sampler=sampler,
                        study_name=group.key)


#: Repeated draws before a group takes an untried grid point instead.
MAX_REDRAWS = 10


def _grid_points(loaded: LoadedSpace, group: Group) -> list[dict] | None:
    """Every point of the group's searched params when all are discrete (grid or choice), else None."""
    searched = loaded.searched(group.study)
    if not searched:
        return [{"_": 0}]
    if not all(isinstance(spec, (GridParam, ChoiceParam)) for spec in searched.values()):
        return None
    names = list(searched)
    return [dict(zip(names, values)) for values in itertools.product(*(searched[n].values() for n in names))]


class GroupedSearcher(Searcher):
    """One Optuna search per group behind Tune's :class:`Searcher` interface.

    Suggestions go round-robin over the groups that still have budget (``group_size``
    trials each), so every element's search advances together.
    """

    def __init__(self, loaded: LoadedSpace, warm: WarmStarts | None = None):
        super().__init__(metric=loaded.space.metric, mode=loaded.space.mode)
        self._groups = list(loaded.groups)
        self._searched = {g.key: loaded.searched(g.study) for g in self._groups}
        self._warm = warm
        #: per group, the warm-start points it has enqueued (by point_key): (the neighbour it came from, the point)
        self._warmed: dict[str, dict[str, tuple[str, dict]]] = {g.key: {} for g in self._groups}
        self._trial_params: dict[str, dict] = {}
        self._inner = {g.key: _make_searcher(loaded, g, i) for i, g in enumerate(self._groups)}
        self._budget = {g.key: loaded.group_size(g.study) for g in self._groups}
        self._issued = {g.key: 0 for g in self._groups}
        self._trial_group: dict[str, str] = {}
        #: configurations each group has issued, and the inner searcher's id of each Tune trial
        self._seen: dict[str, set[str]] = {g.key: set() for g in self._groups}
        self._inner_id: dict[str, str] = {}
        self._points = {g.key: _grid_points(loaded, g) for g in self._groups}
        self._rng = random.Random(loaded.space.search.seed)
        self._next = 0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        """The space comes from the YAML, never from Tune's param space."""
        return True

    def suggest(self, trial_id: str):
        """The next group's next configuration, or ``FINISHED`` when every budget is spent."""
        n = len(self._groups)
        for k in range(n):
            group = self._groups[(self._next + k) % n]
            if self._issued[group.key] >= self._budget[group.key]:
                continue
            self._enqueue_warm(group)
            params = self._draw_new(group.key, trial_id)
            if params is None:
                continue
            params.pop("_", None)
            self._trial_params[trial_id] = params
            self._issued[group.key] += 1
            self._trial_group[trial_id] = group.key
            self._next = (self._next + k + 1) % n
            spec = {"study": group.study, "model": group.model, "element": group.element,
                    "task": group.task, "params": params}
            warm = self._warmed[group.key].get(point_key(params))
            if warm is not None:
                spec[WARM_FROM] = warm[0]
            return {SPEC_KEY: spec}
        return self.FINISHED

    def _enqueue_warm(self, group: Group) -> None:
        """Enqueue, once each, the neighbours' best points this group has not tried (Optuna ``enqueue_trial``)."""
        if self._warm is None:
            return
        for source, point in self._warm.candidates(group.model, group.task, group.element,
                                                   self._searched[group.key]):
            key = point_key(point)
            if key in self._warmed[group.key] or key in self._seen[group.key]:
                continue
            self._warmed[group.key][key] = (source, point)
            self._inner[group.key]._ot_study.enqueue_trial(point)  # Ray's OptunaSearch keeps its study here

    def warm_points(self) -> dict[str, list[dict]]:
        """The warm-start points each group has enqueued so far."""
        return {k: [point for _, point in v.values()] for k, v in self._warmed.items()}

    def _draw_new(self, key: str, trial_id: str) -> dict | None:
        """The group's next suggestion that it has not issued before (TPE on a grid repeats itself).

        A repeated point is withdrawn from the inner search as failed, which TPE ignores, and
        drawn again under a fresh inner id. After ``MAX_REDRAWS`` repeats, a discrete space gets
        a random point it has not tried yet, enqueued in the inner study; a continuous one (or a
        spent grid) accepts the repeat, which the ledger then serves without training.
        """
        inner = self._inner[key]
        for attempt in range(MAX_REDRAWS + 1):
            inner_id = trial_id if attempt == 0 else f"{trial_id}~{attempt}"
            if attempt == MAX_REDRAWS:
                untried = [p for p in self._points[key] or [] if point_key(p) not in self._seen[key]]
                if untried:
                    inner._ot_study.enqueue_trial(self._rng.choice(untried))
            params = inner.suggest(inner_id)
            if params is None:
                return None
            if point_key(params) not in self._seen[key] or attempt == MAX_REDRAWS:
                self._seen[key].add(point_key(params))
                self._inner_id[trial_id] = inner_id
                return params
            inner.on_trial_complete(inner_id, None, error=True)
        return None

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Forward an intermediate result to the trial's own group."""
        key = self._trial_group.get(trial_id)
        if key is not None and self.metric in result:
            self._inner[key].on_trial_result(self._inner_id.get(trial_id, trial_id), result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Forward the final result to the trial's own group."""
        key = self._trial_group.get(trial_id)
        if key is not None:
            self._inner[key].on_trial_complete(self._inner_id.get(trial_id, trial_id), result, error)
            value = (result or {}).get(self.metric)
            if self._warm is not None and not error and value is not None and trial_id in self._trial_params:
                model, element, task = key.split("/")
                self._warm.add_result(model, task, element, self._trial_params[trial_id], float(value))

    def save(self, checkpoint_path: str) -> None:
        """Pickle every group's search state (Tune calls this with each experiment snapshot)."""
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__dict__, fh)

    def restore(self, checkpoint_path: str) -> None:
        """Load what :meth:`save` wrote."""
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))


class GroupedScheduler(FIFOScheduler):
    """A scheduler per group (made by ``factory``), so trials compete only within their group."""

    def __init__(self, factory: Callable[[], Any], metric: str, mode: str):
        super().__init__()
        self._factory = factory
        self._metric, self._mode = metric, mode
        self._by_group: dict[str, Any] = {}

    def set_search_properties(self, metric, mode, **spec) -> bool:
        """Metric and mode come from the space."""
        return True

    def _child(self, trial):
        key = group_key(trial.config)
        if key not in self._by_group:
            child = self._factory()
            child.set_search_properties(self._metric, self._mode)
            self._by_group[key] = child
        return self._by_group[key]

    def on_trial_add(self, tune_controller, trial) -> None:
        """Register the trial with its group's scheduler."""
        self._child(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        """Let the group's scheduler decide: continue or stop; a warm-start point always continues."""
        child = self._child(trial)
        if trial.trial_id not in getattr(child, "_trial_info", {trial.trial_id: None}):
            child.on_trial_add(tune_controller, trial)  # a trial restored from a snapshot
        decision = child.on_trial_result(tune_controller, trial, result)  # records the result in its rung
        if trial.config[SPEC_KEY].get(WARM_FROM):
            return self.CONTINUE
        return decision

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        """Tell the group's scheduler."""
        child = self._child(trial)
        if trial.trial_id in getattr(child, "_trial_info", {trial.trial_id: None}):
            child.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        """Tell the group's scheduler."""
        child = self._child(trial)
        if trial.trial_id in getattr(child, "_trial_info", {trial.trial_id: None}):
            child.on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        """Tell the group's scheduler."""
        self.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        """One line per group."""
        return "\n".join(f"{k}: {s.debug_string()}" for k, s in self._by_group.items())


def _asha_factory(loaded: LoadedSpace) -> Callable[[], Any]:
    settings = loaded.space.scheduler

    def make():
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(time_attr="training_iteration", max_t=settings.max_t,
                             grace_period=min(settings.grace_period, settings.max_t),
                             reduction_factor=settings.reduction_factor, brackets=settings.brackets)

    return make


def build_search(loaded: LoadedSpace, warm: WarmStarts | None = None) -> tuple[Any, dict[str, Any], Any, int]:
    """``(search_alg, param_space, scheduler, num_samples)`` for :class:`ray.tune.TuneConfig`.

    ``warm`` (:func:`sweep.tune.warm_start.warm_starts_for`) seeds the Optuna searches with
    neighbouring metals' best points; Tune's own grid and random generators take none.
    """
    from ray.tune.search.basic_variant import BasicVariantGenerator

    search = loaded.space.search
    scheduler = None
    if loaded.space.scheduler.kind == "asha":
        scheduler = GroupedScheduler(_asha_factory(loaded), loaded.space.metric, loaded.space.mode)
    if search.algorithm in ("grid", "random"):
        # Tune ignores TuneConfig.max_concurrent_trials for a generator passed in: give it here
        generator = BasicVariantGenerator(random_state=search.seed, max_concurrent=search.max_concurrent_trials or 0)
        num_samples = search.num_samples if search.algorithm == "random" else 1
        return generator, variant_param_space(loaded), scheduler, num_samples
    return GroupedSearcher(loaded, warm), {}, scheduler, loaded.total_trials()
