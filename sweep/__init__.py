"""tm23-sweep: the TM23 force-field benchmark (FLARE and NequIP) as Ray Tune sweeps tracked in MLflow.

``sweep.open_sweep(name_or_path)`` opens a sweep's state and results for a notebook
(:mod:`sweep.results`); it is imported on first use, so ``import sweep`` stays light.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name in ("open_sweep", "list_sweeps"):
        from sweep import results

        return getattr(results, name)
    raise AttributeError(f"module 'sweep' has no attribute {name!r}")
