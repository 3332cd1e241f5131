"""Sweeps: search spaces run as Ray Tune experiments, one MLflow run per trial, resumable.

- :mod:`sweep.tune.space`: the search-space YAML and its validation;
- :mod:`sweep.tune.search`: Tune's search algorithm, parameter space and scheduler for a space;
- :mod:`sweep.tune.resources`: what a trial asks Ray for, refused up front when impossible;
- :mod:`sweep.tune.data`: element frames in Ray's object store;
- :mod:`sweep.tune.trainable`: the function each trial runs;
- :mod:`sweep.tune.ledger`: the per-configuration ledger that makes resuming lossless;
- :mod:`sweep.tune.progress`: the live table and progress bar;
- :mod:`sweep.tune.processes`: one driver per sweep, clean-up after a killed one;
- :mod:`sweep.tune.runner`: :func:`run_sweep` and :func:`resume_sweep`.

Nothing here imports Ray at package import time.
"""
