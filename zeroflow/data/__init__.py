"""Datasets and class-incremental scenarios; ``register_dataset`` (stable, public) adds a
dataset, e.g. from a plugin (docs/extending.md)."""

from zeroflow.data.datasets import (
    DATASETS,
    DatasetInfo,
    folder_dataset,
    load_dataset,
    register_dataset,
)
from zeroflow.data.scenario import Scenario, class_order

__all__ = ["DATASETS", "DatasetInfo", "Scenario", "class_order", "folder_dataset", "load_dataset",
           "register_dataset"]
