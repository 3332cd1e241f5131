"""What the rest of the code knows about a model family: one light record per family.

Every family is a package under ``sweep/trainers/`` whose ``__init__`` defines ``FAMILY``, a
:class:`Family`. The record imports nothing heavy (no torch): it names the trainer, the
hyperparameter class, the ASE calculator factory and the export extras by import path,
``"module:attribute"``, loaded only when asked for, in the manner of Ray Tune's
``SEARCH_ALG_IMPORT`` map and NequIP's ``_target_`` strings. Resources, device choice,
search-space checks, model selection, export and plots read the record; none of them names
a family.

:class:`ModelInfo` is the typed view of a trained model's ``info`` that code outside the
family reads (descriptor dimension, weight count, log-likelihood, ...). Families write more
facts into ``info``; those stay extra fields.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import BaseModel, ConfigDict

#: Where a family's trial may run: only on CPUs, only on a GPU, or on a GPU when it has one.
Accelerator = Literal["cpu", "gpu", "either"]
#: How a trial's CPUs are asked of Ray: one bundle per MPI rank on one node, or one bundle
#: holding the CPUs (and the GPU, if any).
BundleShape = Literal["mpi-ranks", "one-bundle"]


def load_object(path: str) -> Any:
    """The object named by ``"package.module:attribute"`` (imported on first use)."""
    module, _, attribute = path.partition(":")
    if not attribute:
        raise ValueError(f"{path!r}: expected 'module:attribute'")
    obj = importlib.import_module(module)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class ExportFile:
    """One native file of a family's export, found by a glob on its name."""

    role: str
    pattern: str
    required: bool = True
    description: str = ""
    #: A config that names its data files by absolute path: the export points it at the copies.
    names_data_files: bool = False

    def matches(self, name: str) -> bool:
        """Whether a file called ``name`` plays this role."""
        return fnmatch(name, self.pattern)


@dataclass(frozen=True)
class Selection:
    """How the best configuration is chosen: lowest ``metric``; near-ties go to the highest ``tie_break``."""

    metric: str = "val_forces_mae"
    #: A metric (higher is better) that decides between configurations within ``tie_rtol`` of
    #: the lowest ``metric``; ``None``: the lowest ``metric`` wins outright.
    tie_break: str | None = None


@dataclass(frozen=True)
class Interpreter:
    """The Python a family's training runs in when it cannot share this one's packages."""

    #: Environment variable that overrides the path (a cluster's own venv).
    env: str
    #: Default: a venv folder at the project's root, built by ``make``.
    venv: str
    #: The ``make`` target that builds it (said in the error when it is missing).
    make_target: str

    def python(self) -> Path:
        """The interpreter's path (``$env``, else ``<project>/<venv>/bin/python``)."""
        if os.environ.get(self.env):
            return Path(os.environ[self.env])
        return Path(__file__).resolve().parents[2] / self.venv / "bin" / "python"


@dataclass(frozen=True)
class Family:
    """Everything code outside ``sweep/trainers/`` needs to know about one model family."""

    name: str
    display_name: str
    #: Matplotlib marker of the family in learning-curve plots.
    marker: str
    accelerator: Accelerator
    bundle: BundleShape
    #: ``module:Class`` of the :class:`~sweep.trainers.base.Trainer`.
    trainer: str
    #: ``module:Class`` of the hyperparameters, in a module that imports no torch.
    params: str
    exports: tuple[ExportFile, ...]
    #: ``module:function``: ``function(export_dir: Path, device: str = "cpu")`` returns an ASE calculator.
    calculator: str
    selection: Selection = Selection()
    #: ``None``: this interpreter; else where the family's own venv is.
    interpreter: Interpreter | None = None
    #: ``module:function`` returning extra export files ``{name: text}`` from
    #: ``(params: dict, info: ModelInfo, files: dict[str, Path], source: dict)``; ``None``: none.
    export_extras: str | None = None
    description: str = ""
    #: What ModelInfo's ``n_weights``/``n_descriptors`` mean for this family, for table notes.
    size_note: str = ""

    def load_trainer(self):
        """The trainer class (imports the family's heavy libraries)."""
        return load_object(self.trainer)

    def load_params(self):
        """The hyperparameter class (light)."""
        return load_object(self.params)

    def calculator_from_export(self, directory: str | Path, device: str = "cpu"):
        """An ASE calculator on the model exported in ``directory``."""
        return load_object(self.calculator)(Path(directory), device=device)

    def extra_export_files(self, params: dict, info: "ModelInfo", files: dict[str, Path],
                           source: dict) -> dict[str, str]:
        """Files the export adds beside the native ones (e.g. FLARE's settings.yaml)."""
        if self.export_extras is None:
            return {}
        function: Callable[..., dict[str, str]] = load_object(self.export_extras)
        return function(params, info, files, source)

    def python(self) -> Path:
        """The interpreter the family trains in."""
        return self.interpreter.python() if self.interpreter is not None else Path(sys.executable)


class ModelInfo(BaseModel):
    """The facts of a trained model that code outside its family reads; families add their own."""

    model_config = ConfigDict(extra="allow", frozen=True)

    model: str | None = None
    #: Descriptor kind (FLARE's B1/B2), where the family has one.
    descriptor: str | None = None
    #: Length of the descriptor vector (FLARE's n_d, the paper's Eq. 1).
    n_descriptors: int | None = None
    #: Trainable parameters (neural-network families).
    n_weights: int | None = None
    #: Final log marginal likelihood (Gaussian-process families).
    log_likelihood: float | None = None
    epochs: int | None = None
    train_seconds: float | None = None
    #: The model's optimised hyperparameters (FLARE's σ's), where they exist.
    hyperparameters: dict[str, float] | None = None

    @classmethod
    def of(cls, info: dict[str, Any] | None) -> "ModelInfo":
        """The typed view of an ``info`` dict (as in ``metrics.json``); unknown keys kept."""
        return cls.model_validate(dict(info or {}))


_FAMILIES: dict[str, Family] = {}
_SCANNED = False


def register_family(family: Family) -> Family:
    """Make ``family`` known (built-ins register themselves when ``sweep/trainers`` is scanned)."""
    _FAMILIES[family.name] = family
    return family


def _scan() -> None:
    """Import each package of ``sweep/trainers`` (light ``__init__``s) and register its ``FAMILY``."""
    global _SCANNED
    if _SCANNED:
        return
    import pkgutil

    import sweep.trainers as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.ispkg:
            found = getattr(importlib.import_module(f"{package.__name__}.{module.name}"), "FAMILY", None)
            if isinstance(found, Family):
                _FAMILIES.setdefault(found.name, found)
    _SCANNED = True


def families() -> dict[str, Family]:
    """Every known family by name, sorted."""
    _scan()
    return dict(sorted(_FAMILIES.items()))


def family_names() -> list[str]:
    """Names of the known families."""
    return list(families())


def get_family(name: str) -> Family:
    """The record of family ``name``; an unknown name is a one-line :class:`InputError`."""
    from sweep.errors import InputError

    known = families()
    if name not in known:
        raise InputError(None, "model", f"unknown model {name!r}; known: {', '.join(known)}")
    return known[name]
