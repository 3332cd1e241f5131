"""Bridges to outside services (MLflow tracking)."""
