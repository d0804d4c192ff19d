"""Learner assembly: the device a trial runs on, and its data scenario, backbone and method's
learner built from the config. The loop and every query worker's replica build them here, so
both hold the same model from the same seeds."""

from __future__ import annotations

import torch

from zeroflow.config import TrialConfig
from zeroflow.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA where available, else the CPU; a CUDA device where there is none is a
    ``ConfigError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available here; use device=cpu")
    return device


def build_learner(config: TrialConfig, device: torch.device):
    """Data scenario, backbone and the method's learner for ``config``."""
    from zeroflow.data import DATASETS, Scenario, load_dataset
    from zeroflow.methods import create_learner
    from zeroflow.models import create_backbone

    model = create_backbone(config.backbone, weights=config.weights, device=device)
    train, test = load_dataset(config.dataset, data_root=config.data_root,
                               image_size=model.image_size, download=config.download)
    try:
        scenario = Scenario(train, test, config.init_cls, config.increment, config.order_seed,
                            samples_per_class=config.samples_per_class,
                            order=DATASETS.lookup(config.dataset).class_order)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return create_learner(config.method, model, scenario, config), scenario
