"""Datasets and class-incremental scenarios."""

from zeroflow.data.datasets import DATASETS, load_dataset
from zeroflow.data.scenario import Scenario, class_order

__all__ = ["DATASETS", "Scenario", "class_order", "load_dataset"]
