"""Warm starts across metals: a metal's search first tries the best configurations of its neighbours.

Neighbouring d-block metals plausibly share good settings (Owen et al. find that the
angular resolution a metal needs follows its place in the d-block), so a TPE or
Optuna-grid search of one metal starts from what worked for the metals closest to it:

1. the same group (column): Cu, Ag and Au;
2. the same period next door: Ni and Zn for Cu;
3. the same crystal structure;
4. the rest, by distance in the table.

Two sources of finished work count, always for the same model and task:

- earlier sweeps under the same storage root: every finished ledger record of each metal;
- this sweep: a metal's results so far, once it has at least the search's startup number of
  them (before that its best is a random draw).

From the ``warm_neighbours`` nearest metals with results, a target tries, in order:

1. the best point of the nearest one;
2. the points that at least two of them tried, by their mean regret over those that did
   (a neighbour's regret at a point: how much worse than its own best, as a fraction of it).
   A single neighbour's best is one noisy draw (on the embedded data a configuration's
   validation error moves by far more than 2% from seed to seed); what several neighbours
   agree on is not;
3. the best points of the others, closest first;

up to ``warm_neighbours`` points. A point is enqueued in the target metal's Optuna study
(``enqueue_trial``, Optuna's own mechanism, which Ray's ``points_to_evaluate`` uses too)
once, when the target's next trial is suggested, and only when it lies in the target's own
search space. It counts against the target's budget: it is one of its trials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.elements import get_element
from sweep.tune.space import ChoiceParam, GridParam, LoadedSpace, RangeParam, point_key


def closeness(target: str, other: str) -> tuple:
    """Sort key of ``other`` as a neighbour of ``target``: smaller is closer (see the module docstring)."""
    t, o = get_element(target), get_element(other)
    if o.group == t.group:
        rank = 0
    elif o.period == t.period and abs(o.group - t.group) == 1:
        rank = 1
    elif o.structure == t.structure:
        rank = 2
    else:
        rank = 3
    return rank, abs(o.group - t.group) + abs(o.period - t.period), o.Z


def neighbours_first(target: str, elements: list[str]) -> list[str]:
    """``elements`` other than ``target``, closest first."""
    return sorted((e for e in set(elements) if e != target), key=lambda e: closeness(target, e))


def in_space(params: dict[str, Any], searched: dict[str, Any]) -> dict[str, Any] | None:
    """``params`` cut to the searched names, or None when a value lies outside the target's space."""
    point = {}
    for name, spec in searched.items():
        if name not in params:
            return None
        value = params[name]
        if isinstance(spec, (GridParam, ChoiceParam)):
            if value not in spec.values():
                return None
        elif isinstance(spec, RangeParam):
            low, high = spec.range
            if not isinstance(value, (int, float)) or not low <= value <= high:
                return None
        point[name] = value
    return point


def better(a: float, b: float, mode: str) -> bool:
    """Whether metric value ``a`` beats ``b`` under the space's ``mode`` (min or max)."""
    return a < b if mode == "min" else a > b


#: A neighbour's results: (metric value, params) of every finished trial.
Results = list[tuple[float, dict[str, Any]]]
#: How a warm point made of several neighbours' results names them (``warm_from``).
SOURCES_JOIN = "+"


def regret(value: float, best: float, mode: str) -> float:
    """How much worse ``value`` is than ``best`` under ``mode``, as a fraction of ``|best|`` (absolute at 0)."""
    gap = value - best if mode == "min" else best - value
    return gap / abs(best) if best else gap


@dataclass
class WarmStarts:
    """Finished neighbours' results, by (model, task, element); offers a metal's warm-start points."""

    mode: str = "min"
    neighbours: int = 3
    min_results: int = 1
    earlier: dict[tuple[str, str, str], Results] = field(default_factory=dict)
    current: dict[tuple[str, str, str], Results] = field(default_factory=dict)
    #: per (neighbour, target): the neighbour's result count and its regret table in the target's space.
    #: candidates runs on every suggest; results only grow, so an unchanged count means an unchanged table.
    _regrets: dict[tuple, tuple[int, dict[str, tuple[float, dict[str, Any]]]]] = field(
        default_factory=dict, repr=False, compare=False)

    def add_result(self, model: str, task: str, element: str, params: dict[str, Any], value: float) -> None:
        """Record one finished trial of this sweep."""
        self.current.setdefault((model, task, element), []).append((value, dict(params)))

    def _results(self, key: tuple[str, str, str]) -> Results:
        mine = self.current.get(key, [])
        return [*self.earlier.get(key, []), *(mine if len(mine) >= self.min_results else [])]

    def _regret_table(self, neighbour: tuple[str, str, str], target: str, results: Results,
                      searched: dict[str, Any]) -> dict[str, tuple[float, dict[str, Any]]]:
        """Per point of ``target``'s space (``searched``, by point_key) the neighbour tried: its regret there
        (at its best value there) and the point."""
        cached = self._regrets.get((neighbour, target))
        if cached is not None and cached[0] == len(results):
            return cached[1]
        own_best = results[0][0]
        best_here: dict[str, tuple[float, dict[str, Any]]] = {}
        for value, params in results:
            if better(value, own_best, self.mode):
                own_best = value
            point = in_space(params, searched)
            if point is None:
                continue
            key = point_key(point)
            if key not in best_here or better(value, best_here[key][0], self.mode):
                best_here[key] = (value, point)
        table = {key: (regret(value, own_best, self.mode), point) for key, (value, point) in best_here.items()}
        self._regrets[(neighbour, target)] = (len(results), table)
        return table

    def candidates(self, model: str, task: str, element: str,
                   searched: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """(source, point) pairs for ``element`` in the order of the module docstring, at most ``neighbours``.

        The source of a neighbour's best is its symbol; that of a point several neighbours
        tried, their symbols joined by ``+``. Only points in ``element``'s own space count.
        """
        known = {k[2] for k in (*self.earlier, *self.current) if k[:2] == (model, task)}
        nearest = []
        for other in neighbours_first(element, sorted(known)):
            results = self._results((model, task, other))
            if results:
                nearest.append((other, results))
            if len(nearest) >= self.neighbours:
                break
        tried: dict[str, dict[str, float]] = {}  # point key -> {neighbour: its regret there}
        points, bests = {}, []
        for other, results in nearest:
            here = self._regret_table((model, task, other), element, results, searched)
            for key, (loss, point) in here.items():
                tried.setdefault(key, {})[other] = loss
                points[key] = point
            if here:
                best_key = min(here, key=lambda k: here[k][0])
                if here[best_key][0] == 0:  # its overall best lies in the space
                    bests.append((other, best_key))
        agreed = sorted((k for k, by in tried.items() if len(by) >= 2),
                        key=lambda k: sum(tried[k].values()) / len(tried[k]))
        order = [(src, key) for src, key in bests[:1]]
        order += [(SOURCES_JOIN.join(tried[key]), key) for key in agreed]
        order += [(src, key) for src, key in bests[1:]]
        chosen: dict[str, str] = {}  # point key -> source, first mention kept, in order
        for source, key in order:
            chosen.setdefault(key, source)
        return [(source, points[key]) for key, source in list(chosen.items())[:self.neighbours]]


def earlier_results(root: Path, this_sweep: str, metric: str) -> dict[tuple[str, str, str], Results]:
    """Every finished ledger record's (value, params) per (model, task, element), of every other sweep under
    ``root``."""
    from sweep.errors import InputError
    from sweep.tune.ledger import Ledger

    out: dict[tuple[str, str, str], Results] = {}
    for sweep_dir in sorted(p.parent for p in Path(root).glob("*/ledger")):
        if sweep_dir.name == this_sweep:
            continue
        try:
            records = Ledger(sweep_dir).records()
        except InputError:
            continue  # another sweep's unreadable record is no reason to fail this one
        for record in records:
            if record.status != "finished" or metric not in record.metrics:
                continue
            out.setdefault((record.model, record.task, record.element), []).append(
                (float(record.metrics[metric]), record.params))
    return out


def warm_starts_for(loaded: LoadedSpace, root: Path | None, sweep_name: str) -> WarmStarts | None:
    """The warm starts of a sweep, or None when its search does not use them."""
    search = loaded.space.search
    if not search.warm_start or search.algorithm not in ("tpe", "optuna-grid"):
        return None
    warm = WarmStarts(mode=loaded.space.mode, neighbours=search.warm_neighbours, min_results=search.tpe_startup())
    if root is not None:
        warm.earlier = earlier_results(root, sweep_name, loaded.space.metric)
    return warm
