"""Science outputs of a sweep: learning exponents, best configs, native exports, dashboards.

Every module here reads a sweep's trials from MLflow through :mod:`sweep.analysis.runs`
and writes its files atomically. Heavy libraries (mlflow, matplotlib) are imported by the
modules that need them, so importing this package is cheap.
"""
