"""Warm starts across metals: a metal's search first tries the best configurations of its neighbours.

Neighbouring d-block metals plausibly share good settings (Owen et al. find that the
angular resolution a metal needs follows its place in the d-block), so a TPE or
Optuna-grid search of one metal starts from what worked for the metals closest to it:

1. the same group (column): Cu, Ag and Au;
2. the same period next door: Ni and Zn for Cu;
3. the same crystal structure;
4. the rest, by distance in the table.

Two sources of finished work count, always for the same model and task:

- earlier sweeps under the same storage root: the best finished ledger record of each metal;
- this sweep: a metal's best so far, once it has at least the search's startup number of
  results (before that its best is a random draw).

A neighbour's point is enqueued in the target metal's Optuna study (``enqueue_trial``,
Optuna's own mechanism, which Ray's ``points_to_evaluate`` uses too) once, when the
target's next trial is suggested, and only when it lies in the target's own search space.
It counts against the target's budget: it is one of its trials.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sweep.elements import get_element
from sweep.tune.space import ChoiceParam, GridParam, LoadedSpace, RangeParam


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


@dataclass
class _Results:
    """One (model, task, element)'s results: count and best so far."""

    count: int = 0
    best: tuple[float, dict[str, Any]] | None = None


@dataclass
class WarmStarts:
    """The best configurations of finished neighbours, by (model, task, element)."""

    mode: str = "min"
    neighbours: int = 3
    min_results: int = 1
    earlier: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = field(default_factory=dict)
    current: dict[tuple[str, str, str], _Results] = field(default_factory=dict)

    def add_result(self, model: str, task: str, element: str, params: dict[str, Any], value: float) -> None:
        """Record one finished trial of this sweep."""
        results = self.current.setdefault((model, task, element), _Results())
        results.count += 1
        if results.best is None or better(value, results.best[0], self.mode):
            results.best = (value, dict(params))

    def _best(self, key: tuple[str, str, str]) -> dict[str, Any] | None:
        mine = self.current.get(key)
        options = []
        if mine is not None and mine.best is not None and mine.count >= self.min_results:
            options.append(mine.best)
        if key in self.earlier:
            options.append(self.earlier[key])
        if not options:
            return None
        best = options[0]
        for option in options[1:]:
            if better(option[0], best[0], self.mode):
                best = option
        return best[1]

    def candidates(self, model: str, task: str, element: str,
                   searched: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """(neighbour, its best point) of ``element``'s nearest ``neighbours`` that have one, closest first.

        Only points in ``element``'s own space count; a point two neighbours share is offered once.
        """
        known = {k[2] for k in (*self.earlier, *self.current) if k[:2] == (model, task)}
        out: list[tuple[str, dict[str, Any]]] = []
        for other in neighbours_first(element, sorted(known)):
            best = self._best((model, task, other))
            if best is None:
                continue
            point = in_space(best, searched)
            if point is not None and point not in [p for _, p in out]:
                out.append((other, point))
            if len(out) >= self.neighbours:
                break
        return out


def earlier_bests(root: Path, this_sweep: str, metric: str, mode: str) -> dict[tuple[str, str, str], tuple]:
    """The best finished ledger record per (model, task, element) of every other sweep under ``root``."""
    from sweep.errors import InputError
    from sweep.tune.ledger import Ledger

    out: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}
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
            key, value = (record.model, record.task, record.element), float(record.metrics[metric])
            if key not in out or better(value, out[key][0], mode):
                out[key] = (value, record.params)
    return out


def warm_starts_for(loaded: LoadedSpace, root: Path | None, sweep_name: str) -> WarmStarts | None:
    """The warm starts of a sweep, or None when its search does not use them."""
    search = loaded.space.search
    if not search.warm_start or search.algorithm not in ("tpe", "optuna-grid"):
        return None
    warm = WarmStarts(mode=loaded.space.mode, neighbours=search.warm_neighbours, min_results=search.tpe_startup())
    if root is not None:
        warm.earlier = earlier_bests(root, sweep_name, loaded.space.metric, loaded.space.mode)
    return warm
