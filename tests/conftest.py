"""Every test records MLflow runs into its own temporary store, never the checkout; tests
marked ``gpu`` skip cleanly where CUDA is absent (CI has none)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _private_mlflow_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA: run on a GPU machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
