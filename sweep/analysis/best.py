"""The best configuration per element and model, chosen as the paper chooses it.

The grid search's runs (task ``grid``) are ranked by the family's selection metric
(validation force MAE for every built-in family); where the family names a tie-break
(FLARE: log-likelihood, the paper's), configurations whose metric lies within ``tie_rtol``
of the lowest count as tied and the one of highest tie-break value wins. The rule is each
family's record (:class:`sweep.trainers.family.Selection`). The model that is reported and exported
is the ``full`` training of that configuration when the sweep has one (matched by config
hash, then by equal hyperparameters), otherwise the best grid run itself.
"""

from __future__ import annotations

import math

import pandas as pd

from sweep.analysis.runs import PARAM_PREFIX, hyperparameters

#: The selection metric, and the one used where a run logged no validation score.
SELECTION_METRIC = "val_forces_mae"
FALLBACK_METRIC = "test_forces_mae"
#: Relative distance from the lowest MAE within which FLARE configurations count as tied.
TIE_RTOL = 0.01
#: Column (runs table and ledger rows) that marks a trial the scheduler stopped early.
STOPPED_COLUMN = "stopped_early"


def selection(model: str):
    """The family's selection rule (lowest ``val_forces_mae``, no tie-break, for an unknown family)."""
    from sweep.trainers.family import Selection, families

    family = families().get(model)
    return family.selection if family is not None else Selection(metric=SELECTION_METRIC)


def _criterion(group: pd.DataFrame, model: str) -> str | None:
    for metric in (selection(model).metric, FALLBACK_METRIC):
        if metric in group.columns and group[metric].notna().any():
            return metric
    return None


def _tie_values(runs: pd.DataFrame, metric: str) -> pd.Series | None:
    """Final values of the tie-break ``metric``: the metric, else the model-info param of the same name."""
    for column in (metric, PARAM_PREFIX + metric):
        if column in runs.columns and runs[column].notna().any():
            return pd.to_numeric(runs[column], errors="coerce")
    return None


def pick_best(group: pd.DataFrame, model: str, tie_rtol: float = TIE_RTOL) -> tuple[pd.Series, str] | None:
    """The best run of ``group`` (one element and model) and a sentence saying why; None if unscored."""
    metric = _criterion(group, model)
    if metric is None:
        return None
    scored = group[group[metric].notna()]
    if STOPPED_COLUMN in scored.columns and (~scored[STOPPED_COLUMN].fillna(False).astype(bool)).any():
        # a trial ASHA stopped early was scored on part of its training: only fully trained ones compete
        scored = scored[~scored[STOPPED_COLUMN].fillna(False).astype(bool)]
    lowest = float(scored[metric].min())
    order = ["trial_id", "run_id"]
    tie_break = selection(model).tie_break
    likelihood = _tie_values(scored, tie_break) if tie_break else None
    if likelihood is not None:
        tied = scored[scored[metric] <= lowest + tie_rtol * abs(lowest)]
        if len(tied) > 1 and likelihood[tied.index].notna().any():
            ranked = tied.assign(_ll=likelihood[tied.index].fillna(-math.inf))
            ranked = ranked.sort_values(["_ll", metric] + order, ascending=[False, True, True, True], kind="stable")
            why = (f"lowest {metric}; {len(tied)} within {tie_rtol:.0%} of {lowest:.4g}, "
                   f"tie broken by highest {tie_break}")
            return ranked.drop(columns="_ll").iloc[0], why
    ranked = scored.sort_values([metric] + order, kind="stable")
    return ranked.iloc[0], f"lowest {metric}"


def select_best(table: pd.DataFrame, task: str = "grid", tie_rtol: float = TIE_RTOL) -> pd.DataFrame:
    """One row per (element, model): the best run of ``task``, with a ``selection`` column saying why."""
    labels, why = [], []
    runs = table[table["task"] == task]
    for (element, model), group in runs.groupby(["element", "model"], sort=True):
        best = pick_best(group, model, tie_rtol)
        if best is not None:
            labels.append(best[0].name)
            why.append(f"{best[1]} over {len(group)} {task} runs")
    # rows taken from the table itself keep its dtypes (ints stay ints where others lack a param)
    return table.loc[labels].assign(selection=why)


def _same_config(a: pd.Series, b: pd.Series) -> bool:
    if isinstance(a.get("config_hash"), str) and a.get("config_hash") == b.get("config_hash"):
        return True
    return hyperparameters(a) == hyperparameters(b)


def final_runs(table: pd.DataFrame, tie_rtol: float = TIE_RTOL) -> pd.DataFrame:
    """One row per (element, model): the run to report and export, with ``selection`` and ``best_grid_run``.

    That is the ``full`` run of the best grid configuration where there is one, else the best
    grid run; with no grid runs, the best ``full`` run.
    """
    grid = {(r["element"], r["model"]): r for _, r in select_best(table, "grid", tie_rtol).iterrows()}
    labels, why, grid_runs = [], [], []
    for (element, model), group in table.groupby(["element", "model"], sort=True):
        full = group[group["task"] == "full"]
        best_grid = grid.get((element, model))
        chosen = None
        if best_grid is not None:
            matches = [run for _, run in full.iterrows() if _same_config(run, best_grid)]
            if matches:
                chosen = (matches[-1], f"full training of the best grid config ({best_grid['selection']})")
            elif len(full) == 1:
                chosen = (full.iloc[0], f"the one full run (best grid config: {best_grid['selection']})")
            elif full.empty:
                chosen = (best_grid, best_grid["selection"])
        if chosen is None and not full.empty:
            best = pick_best(full, model, tie_rtol)
            if best is not None:
                chosen = (best[0], f"{best[1]} over {len(full)} full runs")
        if chosen is None:
            continue
        labels.append(chosen[0].name)
        why.append(chosen[1])
        grid_runs.append(best_grid["run_id"] if best_grid is not None else None)
    return table.loc[labels].assign(selection=why, best_grid_run=grid_runs).reset_index(drop=True)
