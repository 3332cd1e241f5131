"""tm23-sweep: the TM23 force-field benchmark (FLARE and NequIP) as Ray Tune sweeps tracked in MLflow."""

__version__ = "0.1.0"
