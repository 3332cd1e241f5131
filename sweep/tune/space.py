"""Search spaces: the typed model of ``sweep/search_spaces/*.yaml`` and its loader.

A space names one or more *studies*. Each study is a model family, the elements and
tasks it runs on, the resources one trial needs and its hyperparameters. Every
(model, element, task) triple of a study is a *group*: a per-element grid, or a
per-element Optuna study. A hyperparameter is written as one of::

    max_epochs: 20                          # fixed
    r_cut: {grid: [4.0, 5.0]}               # every value (grid search)
    lr: {choice: [0.01, 0.005]}             # one value per sample (random, TPE)
    lr: {range: [0.001, 0.05], log: true}   # a continuous (or integer) range
    num_features: {from: l_max, map: {0: 2, 1: 4}}   # derived from another one

Search algorithms: ``grid`` (Tune's grid search: every grid value; no choice or range),
``random`` (Tune's random search: grids enumerated, choices and ranges drawn
``num_samples`` times), ``optuna-grid`` (Optuna's GridSampler over grids and choices,
one study per group) and ``tpe`` (Optuna's TPE, ``num_samples`` trials per group).

A bad key or value raises :class:`InputError` naming the file and the key, e.g.
``demo.yaml: studies[0].params.r_cut.grid: List should have at least 1 item``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, field_validator

from sweep.data.splits import parse_task
from sweep.metrics import LABELS, STATS
from sweep.elements import SYMBOLS, get_element
from sweep.errors import InputError

#: Folder of the shipped spaces.
SPACES_DIR = Path(__file__).resolve().parent.parent / "search_spaces"

Scalar = Union[bool, int, float, str]
#: What every trial reports at each step, and so what a space may optimise: ``val_<label>_<stat>``.
REPORTED_METRICS: tuple[str, ...] = tuple(f"val_{label}_{stat}" for label in LABELS for stat in STATS)
ALGORITHMS = ("grid", "random", "optuna-grid", "tpe")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class GridParam(_Strict):
    """Every value is tried (grid search)."""

    grid: list[Scalar] = Field(min_length=1)

    def values(self) -> list[Scalar]:
        """The values, in order."""
        return list(self.grid)


class ChoiceParam(_Strict):
    """One value is drawn per sample (random search, TPE)."""

    choice: list[Scalar] = Field(min_length=1)

    def values(self) -> list[Scalar]:
        """The values, in order."""
        return list(self.choice)


class RangeParam(_Strict):
    """A continuous range ``[low, high]``, optionally log-scaled or integer (both ends included)."""

    range: tuple[float, float]
    log: bool = False
    integer: bool = False

    @field_validator("range")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not value[0] < value[1]:
            raise ValueError(f"low must be below high, got {list(value)}")
        return value

    def model_post_init(self, __context: Any) -> None:
        if self.log and self.range[0] <= 0:
            raise ValueError("a log range needs low > 0")

    def ends(self) -> list[Scalar]:
        """The two ends, as the trainer will receive them."""
        return [int(v) for v in self.range] if self.integer else list(self.range)


class DerivedParam(_Strict):
    """A value looked up from another hyperparameter's value (``from``) in ``map``."""

    from_: str = Field(alias="from")
    map: dict[Scalar, Scalar] = Field(min_length=1)

    def lookup(self, value: Scalar) -> Scalar:
        """The derived value for ``value`` of the source parameter (keys compared as text too)."""
        if value in self.map:
            return self.map[value]
        for key, derived in self.map.items():
            if str(key) == str(value):
                return derived
        raise KeyError(value)


def _param_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return None  # a bare list: did they mean a grid? the error message says how
    if isinstance(value, dict):
        for kind in ("grid", "choice", "range", "from"):
            if kind in value:
                return kind
        return None
    return "fixed"


ParamSpec = Annotated[
    Union[
        Annotated[Optional[Scalar], Tag("fixed")],  # None: a trainer default such as NequIP's seed
        Annotated[GridParam, Tag("grid")],
        Annotated[ChoiceParam, Tag("choice")],
        Annotated[RangeParam, Tag("range")],
        Annotated[DerivedParam, Tag("from")],
    ],
    Discriminator(_param_kind, custom_error_type="param_form",
                  custom_error_message="expected a value or one of {grid: [...]}, {choice: [...]}, "
                                       "{range: [low, high]}, {from: NAME, map: {...}}"),
]


class Resources(_Strict):
    """What one trial needs. ``gpus: auto`` takes one GPU when the cluster has any, else none."""

    cpus: int = Field(1, ge=1, description="CPUs per trial; an MPI family (FLARE) runs this many ranks")
    gpus: Any = Field("auto", description="auto (one GPU when the cluster has one and the family can use it), "
                                          "or GPUs per trial: a whole number, or a share of one GPU "
                                          "(0.25 packs four small trials on one device)")

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, value: Any) -> str | float:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"expected auto or a number >= 0, got {value!r}")
        # Ray schedules a share of one GPU or whole GPUs, never 1.5 of them
        if value > 1 and value != int(value):
            raise ValueError(f"expected a share of one GPU (at most 1) or a whole number, got {value!r}")
        return float(value)


class Study(_Strict):
    """One model family on some elements and tasks, with its hyperparameters."""

    model: str
    elements: list[str] | None = Field(None, min_length=1, description="symbols, or 'all'; default: the space's")
    task: str | list[str] | None = Field(None, description="default: the space's task")
    resources: Resources = Resources()
    export: bool = Field(True, description="write and log the native export (NequIP packaging takes ~25 s)")
    params: dict[str, ParamSpec] = {}

    @field_validator("elements", mode="before")
    @classmethod
    def _elements(cls, value: list[str] | str | None) -> list[str] | None:
        return _check_elements(value)

    @field_validator("task")
    @classmethod
    def _task(cls, value: str | list[str] | None) -> str | list[str] | None:
        return _check_tasks(value)


class SearchSettings(_Strict):
    """How configurations are chosen."""

    algorithm: Literal["grid", "random", "optuna-grid", "tpe"] = "grid"
    num_samples: int = Field(1, ge=1, description="random: draws of the sampled params; tpe: trials per group")
    startup_trials: int | None = Field(None, ge=1, description="tpe: random trials before TPE models the results "
                                                               "(default: a third of num_samples, 2 to 10)")
    seed: int = Field(0, ge=0)
    max_concurrent_trials: int | None = Field(None, ge=1)
    warm_start: bool = Field(True, description="tpe, optuna-grid: each metal first tries what did best on its "
                                               "nearest finished neighbours (sweep.tune.warm_start)")
    warm_neighbours: int = Field(3, ge=1, description="warm start: how many neighbours to learn from, and at most "
                                                      "how many of their points to try")

    def tpe_startup(self) -> int:
        """Optuna's ``n_startup_trials`` for this search."""
        return self.startup_trials or min(10, max(2, self.num_samples // 3))


class SchedulerSettings(_Strict):
    """Early stopping: none, or ASHA within each group (per model, element and task)."""

    kind: Literal["none", "asha"] = "none"
    grace_period: int = Field(1, ge=1, description="reports before a trial may be stopped")
    reduction_factor: float = Field(3.0, gt=1)
    max_t: int = Field(10_000, ge=1, description="reports after which a trial is stopped anyway")
    brackets: int = Field(1, ge=1)


class SearchSpace(_Strict):
    """A whole search-space file."""

    description: str = ""
    elements: list[str] = Field(default_factory=list)
    task: str | list[str] = "grid"
    seed: int = Field(0, ge=0, description="split and training seed of every trial")
    metric: str = "val_forces_mae"
    mode: Literal["min", "max"] = "min"
    search: SearchSettings = SearchSettings()
    scheduler: SchedulerSettings = SchedulerSettings()
    max_failures: int = Field(2, ge=0, description="restarts of a trial whose worker died")
    studies: list[Study] = Field(min_length=1)

    @field_validator("elements", mode="before")
    @classmethod
    def _elements(cls, value: list[str] | str) -> list[str]:
        return _check_elements(value)

    @field_validator("task")
    @classmethod
    def _task(cls, value: str | list[str]) -> str | list[str]:
        return _check_tasks(value)

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in REPORTED_METRICS:
            close = difflib.get_close_matches(value, REPORTED_METRICS, n=1)
            hint = f"did you mean {close[0]}?" if close else f"one of {', '.join(REPORTED_METRICS)}"
            raise ValueError(f"{value!r} is not a metric trials report; {hint}")
        return value

    def study_elements(self, index: int) -> list[str]:
        """Elements of study ``index`` (its own, or the space's)."""
        return list(self.studies[index].elements or self.elements)

    def study_tasks(self, index: int) -> list[str]:
        """Tasks of study ``index`` (its own, or the space's)."""
        task = self.studies[index].task if self.studies[index].task is not None else self.task
        return [task] if isinstance(task, str) else list(task)


def _check_elements(value):
    if value is None:
        return value
    if value == "all":
        return list(SYMBOLS)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return value  # the type check reports it
    for symbol in value:
        try:
            get_element(symbol)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
    if len(set(value)) != len(value):
        raise ValueError("an element is listed twice")
    return value


def _check_tasks(value):
    if value is None:
        return value
    tasks = [value] if isinstance(value, str) else value
    if not tasks:
        raise ValueError("no task given")
    for task in tasks:
        try:
            parse_task(task)
        except InputError as exc:
            raise ValueError(exc.reason) from None
    return value


#: Names pydantic puts into error locations for union members (not keys of the file).
_TYPE_TAGS = {"fixed", "bool", "int", "float", "str", "nullable"}


def _loc(parts: tuple) -> str:
    """``('studies', 0, 'params', 'r_cut', 'grid', 'grid')`` → ``studies[0].params.r_cut.grid``."""
    out: list[str] = []
    previous = None
    for part in parts:
        if part == previous or part in _TYPE_TAGS or (isinstance(part, str) and "[" in part):
            continue
        previous = part
        if isinstance(part, int):
            out[-1:] = [f"{out[-1]}[{part}]"] if out else [f"[{part}]"]
        else:
            out.append(str(part))
    return ".".join(out) or "space"


def point_key(params: dict) -> str:
    """A configuration's searched values as one comparable string."""
    return json.dumps(params, sort_keys=True, default=str)


class Group(BaseModel):
    """One (study, element, task): a per-element grid or Optuna study."""

    model_config = ConfigDict(frozen=True)

    study: int
    model: str
    element: str
    task: str

    @property
    def key(self) -> str:
        """``nequip/Cu/grid``: the group's name in tables, schedulers and searchers."""
        return f"{self.model}/{self.element}/{self.task}"


class LoadedSpace(BaseModel):
    """A validated space with where it came from."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    source: str
    text: str
    space: SearchSpace

    @property
    def digest(self) -> str:
        """Hash of the file's text: a sweep folder belongs to one space."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    @cached_property
    def groups(self) -> list[Group]:
        """Every (study, element, task), studies in order, then elements, then tasks."""
        out = []
        for i, study in enumerate(self.space.studies):
            for element in self.space.study_elements(i):
                for task in self.space.study_tasks(i):
                    out.append(Group(study=i, model=study.model, element=element, task=task))
        return out

    def elements(self) -> list[str]:
        """Every element any study uses, in first-use order."""
        return list(dict.fromkeys(g.element for g in self.groups))

    def searched(self, study: int) -> dict[str, Any]:
        """Study ``study``'s params that vary (grid, choice, range)."""
        return {k: v for k, v in self.space.studies[study].params.items()
                if isinstance(v, (GridParam, ChoiceParam, RangeParam))}

    def group_size(self, study: int) -> int:
        """Trials one group of study ``study`` runs."""
        search = self.space.search
        grids = [len(v.grid) for v in self.searched(study).values() if isinstance(v, GridParam)]
        choices = [len(v.choice) for v in self.searched(study).values() if isinstance(v, ChoiceParam)]
        grid_size = 1
        for n in grids:
            grid_size *= n
        if search.algorithm == "grid":
            return grid_size
        if search.algorithm == "random":
            return grid_size * search.num_samples
        if search.algorithm == "optuna-grid":
            for n in choices:
                grid_size *= n
            return grid_size
        return search.num_samples

    def total_trials(self) -> int:
        """Trials the whole sweep runs (the progress bar's total)."""
        return sum(self.group_size(g.study) for g in self.groups)

    def resolve_params(self, study: int, values: dict[str, Any]) -> dict[str, Any]:
        """Fixed params, then ``values`` (the searched ones), then derived ones: what the trainer gets."""
        out: dict[str, Any] = {}
        derived = {}
        for name, spec in self.space.studies[study].params.items():
            if isinstance(spec, DerivedParam):
                derived[name] = spec
            elif not isinstance(spec, (GridParam, ChoiceParam, RangeParam)):
                out[name] = spec
        out.update(values)
        for name, spec in derived.items():
            out[name] = spec.lookup(out[spec.from_])
        return out


def load_space(path: str | Path) -> LoadedSpace:
    """Read and validate a search-space YAML; every problem is a one-line :class:`InputError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(path, "space", "no such file") from None
    except OSError as exc:
        raise InputError(path, "space", f"unreadable ({exc.strerror})") from None
    return parse_space(text, str(path))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key written twice in one mapping is an error, not the last one winning."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden on purpose
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} written twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _non_finite(value: Any, where: str = "") -> str | None:
    """The dotted key of the first infinite or NaN number in ``value``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "space"
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite(item, f"{where}.{key}" if where else str(key))
            if found:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _non_finite(item, f"{where}[{i}]")
            if found:
                return found
    return None


def parse_space(text: str, source: str) -> LoadedSpace:
    """Validate YAML ``text`` (named ``source`` in errors) into a :class:`LoadedSpace`."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "yaml"
        raise InputError(source, where, f"not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise InputError(source, "space", "expected a mapping of keys (studies, search, ...)")
    bad = _non_finite(raw)
    if bad:
        raise InputError(source, bad, "infinite or NaN number: every value must be finite")
    try:
        space = SearchSpace.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            reason = "unknown key"
        raise InputError(source, _loc(err["loc"]), reason) from None
    loaded = LoadedSpace(source=source, text=text, space=space)
    _check_semantics(loaded)
    return loaded


def _check_semantics(loaded: LoadedSpace) -> None:
    """Checks across keys: models, hyperparameter names and values, algorithm fit, resources."""
    from sweep.trainers.base import available_trainers

    space, source = loaded.space, loaded.source
    algorithm = space.search.algorithm
    for i, study in enumerate(space.studies):
        where = f"studies[{i}]"
        if study.model not in available_trainers():
            raise InputError(source, f"{where}.model",
                             f"unknown model {study.model!r}; known: {', '.join(available_trainers())}")
        if not space.study_elements(i):
            raise InputError(source, f"{where}.elements", "no elements (set elements here or at the top)")
        family = _family(study.model)
        if family is not None and family.accelerator == "cpu" and study.resources.gpus not in (0, 0.0, "auto"):
            raise InputError(source, f"{where}.resources.gpus",
                             f"{family.display_name} trials run on CPUs; set gpus: 0 or auto")
        for name, spec in study.params.items():
            key = f"{where}.params.{name}"
            if isinstance(spec, (ChoiceParam, RangeParam)) and algorithm == "grid":
                raise InputError(source, key, "search.algorithm grid enumerates values: use {grid: [...]}")
            if isinstance(spec, RangeParam) and algorithm == "optuna-grid":
                raise InputError(source, key, "optuna-grid needs discrete values: use {grid: [...]}")
            if isinstance(spec, DerivedParam):
                source_spec = study.params.get(spec.from_)
                if source_spec is None or isinstance(source_spec, DerivedParam):
                    raise InputError(source, f"{key}.from", f"{spec.from_!r} is not a plain hyperparameter of this study")
                for value in _candidates(source_spec):
                    try:
                        spec.lookup(value)
                    except KeyError:
                        raise InputError(source, f"{key}.map", f"no entry for {spec.from_} = {value!r}") from None
        _check_params(loaded, i)


def _candidates(spec) -> list[Scalar]:
    if isinstance(spec, (GridParam, ChoiceParam)):
        return spec.values()
    if isinstance(spec, RangeParam):
        return spec.ends()
    return [spec]


def _family(model: str):
    """The registry's record of ``model``, or ``None`` for a trainer registered without one."""
    from sweep.trainers.family import families

    return families().get(model)


def params_checker(model: str):
    """A class whose ``parse_params`` validates ``model``'s hyperparameters, without importing torch."""
    from sweep.trainers.base import Trainer, get_trainer

    family = _family(model)
    if family is None:
        return get_trainer(model)
    params = family.load_params()
    # parse_params is a classmethod that only needs ``name`` and ``Params``
    return type(f"{params.__name__}Checker", (Trainer,), {"name": model, "Params": params})


def _check_params(loaded: LoadedSpace, study: int) -> None:
    """Every candidate value of every hyperparameter passes the trainer's own validation."""
    spec = loaded.space.studies[study]
    trainer = params_checker(spec.model)
    where = f"studies[{study}].params"
    fixed = {k: v for k, v in spec.params.items() if not isinstance(v, (GridParam, ChoiceParam, RangeParam, DerivedParam))}
    varying = {k: v for k, v in spec.params.items() if k not in fixed and not isinstance(v, DerivedParam)}
    # One config per candidate value of each varying param (with the others at their first
    # value) catches bad names and values without enumerating the whole product.
    first = {k: _candidates(v)[0] for k, v in varying.items()}
    probes = [dict(first)]
    for name, s in varying.items():
        probes += [{**first, name: value} for value in _candidates(s)[1:]]
    for values in probes:
        params = loaded.resolve_params(study, values)
        try:
            trainer.parse_params(params, source=loaded.source)
        except InputError as exc:
            raise InputError(loaded.source, f"{where}.{exc.field}", exc.reason) from None


def shipped_spaces() -> list[Path]:
    """The YAML files shipped in ``sweep/search_spaces``."""
    return sorted(SPACES_DIR.glob("*.yaml"))


def resolve_space_path(text: str | Path) -> Path:
    """A path as given, or the name of a shipped space (``demo`` → ``sweep/search_spaces/demo.yaml``)."""
    path = Path(text)
    if path.is_file() or path.parent != Path("."):
        return path
    shipped = SPACES_DIR / (path.name if path.suffix else f"{path.name}.yaml")
    return shipped if shipped.is_file() else path


__all__ = ["ALGORITHMS", "ChoiceParam", "DerivedParam", "GridParam", "Group", "LoadedSpace", "RangeParam",
           "Resources", "SearchSpace", "Study", "load_space", "parse_space", "resolve_space_path", "shipped_spaces"]

