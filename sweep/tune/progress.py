"""The sweep's live view: a table of trials and an overall progress bar (a Tune callback).

The table shows each trial's status, model, element, task, searched parameters, reports
so far, last and best metric, with the best trial of each group marked. On a terminal
it refreshes in place; elsewhere (a log file, a test's pipe) one line is printed per
finished trial and the final table at the end. Tune's own output is kept at verbosity 0.
The callback also keeps each trial's start and end time (:attr:`SweepProgress.timings`),
which the overhead benchmark reads.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ray.tune import Callback
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sweep.tune.space import LoadedSpace

_STATUS_STYLE = {"RUNNING": "cyan", "PENDING": "dim", "TERMINATED": "green", "ERROR": "red", "PAUSED": "yellow"}
_MAX_ROWS = 24


class SweepProgress(Callback):
    """Live table + progress bar for one sweep.

    A restored Tuner runs the callback unpickled from its ``tuner.pkl`` rather than a new
    one; :meth:`current` finds whichever instance is in use for a sweep.
    """

    _instances: dict[str, "SweepProgress"] = {}

    def __init__(self, loaded: LoadedSpace, name: str, live: bool | None = None):
        self.loaded = loaded
        self.name = name
        self.metric = loaded.space.metric
        self.mode = loaded.space.mode
        self.total = loaded.total_trials()
        self.force_live = live
        self.timings: dict[str, dict[str, float]] = {}
        self._init_view()
        SweepProgress._instances[name] = self

    @classmethod
    def current(cls, name: str) -> "SweepProgress | None":
        """The instance last made or unpickled for sweep ``name``."""
        return cls._instances.get(name)

    # pickled into Tune's tuner.pkl: drop the console, rebuild it on restore
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("console", "_live", "_bar", "_task", "_last_draw"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.timings = {}
        self._init_view()
        SweepProgress._instances[self.name] = self

    def _init_view(self) -> None:
        self.console = Console()
        if not self.console.is_terminal:
            self.console.width = max(self.console.width, 160)  # a log file need not wrap at 80
        self._live: Live | None = None
        self._bar = Progress(TextColumn(f"[bold]{self.name}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("trials"), TimeElapsedColumn(), console=self.console)
        self._task = self._bar.add_task("trials", total=self.total)
        self._last_draw = 0.0

    @property
    def interactive(self) -> bool:
        """Whether the view refreshes in place (a terminal) or prints lines."""
        return self.console.is_terminal if self.force_live is None else self.force_live

    # -- Tune callback hooks ------------------------------------------------------------
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info) -> None:
        """Say what runs, and start the live view."""
        groups = len(self.loaded.groups)
        self.console.print(f"sweep {self.name}: {self.total} trials in {groups} groups "
                           f"({self.loaded.space.search.algorithm}, scheduler {self.loaded.space.scheduler.kind}), "
                           f"space {self.loaded.source}", highlight=False)
        if self.interactive and self._live is None:
            self._live = Live(self._render([]), console=self.console, refresh_per_second=2, transient=False)
            self._live.start()

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        """Note when a trial started."""
        self.timings.setdefault(trial.trial_id, {})["start"] = time.time()

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        """Redraw, at most twice a second."""
        now = time.monotonic()
        if self._live is not None and now - self._last_draw > 0.5:
            self._last_draw = now
            self._live.update(self._render(trials))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        """Note the end; off a terminal, print one line."""
        self._finished(trials, trial, "done")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        """Note the failure; off a terminal, print one line."""
        self._finished(trials, trial, "error")

    def on_experiment_end(self, trials: list, **info) -> None:
        """Stop the live view and leave the final table."""
        if self._live is not None:
            self._live.update(self._render(trials))
            self._live.stop()
            self._live = None
        else:
            self.console.print(self._render(trials))

    # -- rendering -------------------------------------------------------------------------
    def _finished(self, trials: list, trial, what: str) -> None:
        self.timings.setdefault(trial.trial_id, {})["end"] = time.time()
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials) + (trial.status not in ("TERMINATED", "ERROR"))
        if self._live is None:
            spec = trial.config.get("spec", {})
            value = (trial.last_result or {}).get(self.metric)
            self.console.print(f"[{min(done, self.total)}/{self.total}] {what} {trial.trial_id} "
                               f"{spec.get('model')} {spec.get('element')} {spec.get('task')} "
                               f"{_params_text(spec.get('params'))} {self.metric}={_fmt(value)}", highlight=False)

    def _render(self, trials: list) -> Group:
        done = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        self._bar.update(self._task, completed=min(done, self.total))
        best = self._best_per_group(trials)
        table = Table(title=f"sweep {self.name}: {len(trials)} trials started of {self.total}",
                      title_justify="left", expand=False)
        for column in ("trial", "status", "model", "element", "task", "params", "iter"):
            table.add_column(column, no_wrap=column != "params")
        table.add_column(f"last {self.metric}", justify="right")
        table.add_column("best", justify="right")
        order = {"RUNNING": 0, "PENDING": 1, "PAUSED": 1, "ERROR": 2, "TERMINATED": 3}
        shown = sorted(trials, key=lambda t: (order.get(t.status, 4), self._sort_value(t)))[:_MAX_ROWS]
        for t in shown:
            spec = t.config.get("spec", {})
            result = t.last_result or {}
            value = self._trial_best(t)
            star = " *" if value is not None and best.get(_key(spec)) == t.trial_id else ""
            table.add_row(t.trial_id, f"[{_STATUS_STYLE.get(t.status, '')}]{t.status}", str(spec.get("model")),
                          str(spec.get("element")), str(spec.get("task")), _params_text(spec.get("params")),
                          str(result.get("training_iteration", "")), _fmt(result.get(self.metric)),
                          _fmt(value) + star)
        if len(trials) > len(shown):
            table.caption = f"{len(trials) - len(shown)} more trials not shown; * best of its group"
        else:
            table.caption = "* best of its model, element and task"
        return Group(table, self._bar)

    def _trial_best(self, trial) -> float | None:
        stats = getattr(trial, "metric_analysis", {}).get(self.metric) or {}
        value = stats.get(self.mode)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)

    def _sort_value(self, trial) -> float:
        value = self._trial_best(trial)
        if value is None:
            return math.inf
        return value if self.mode == "min" else -value

    def _best_per_group(self, trials: list) -> dict[str, str]:
        best: dict[str, tuple[float, str]] = {}
        for t in trials:
            key, value = _key(t.config.get("spec", {})), self._sort_value(t)
            if value < math.inf and (key not in best or value < best[key][0]):
                best[key] = (value, t.trial_id)
        return {k: v[1] for k, v in best.items()}


def _key(spec: dict) -> str:
    return f"{spec.get('model')}/{spec.get('element')}/{spec.get('task')}"


def _params_text(params: dict | None) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in (params or {}).items())


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
