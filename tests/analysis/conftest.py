"""Fixtures of the analysis tests: one populated synthetic sweep per session (see :mod:`.synthetic`)."""

from __future__ import annotations

import pytest

from .synthetic import SyntheticSweep, populate


@pytest.fixture(scope="session")
def synthetic_sweep(tmp_path_factory) -> SyntheticSweep:
    """A populated synthetic sweep (4 metals × FLARE and NequIP, learning curves for Au and Ti)."""
    sweep = SyntheticSweep(tmp_path_factory.mktemp("mlflow"))
    populate(sweep)
    return sweep
