"""Every test records MLflow runs into its own temporary store, never the checkout."""

import pytest


@pytest.fixture(autouse=True)
def _private_mlflow_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
