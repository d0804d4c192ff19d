"""Finetune: one adapter set and a growing linear head trained on every task in turn.

The forgetting baseline: nothing protects old classes; the head predicts over all seen classes
and each task's cross-entropy only sees its own classes' samples.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zeroflow.methods.base import Learner, ParamGroup


class GrowingLinear(nn.Module):
    """A linear head whose rows grow as classes arrive; old rows are kept."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.weight = nn.Parameter(torch.empty(0, dim))
        self.bias = nn.Parameter(torch.empty(0))

    def grow(self, n_classes: int, generator: torch.Generator) -> None:
        extra = n_classes - self.weight.shape[0]
        if extra <= 0:
            return
        bound = 1.0 / math.sqrt(self.dim)
        w = torch.empty(extra, self.dim).uniform_(-bound, bound, generator=generator)
        b = torch.empty(extra).uniform_(-bound, bound, generator=generator)
        device = self.weight.device
        self.weight = nn.Parameter(torch.cat([self.weight.data, w.to(device)]))
        self.bias = nn.Parameter(torch.cat([self.bias.data, b.to(device)]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Finetune(Learner):
    def __init__(self, model, scenario, config):
        super().__init__(model, scenario, config)
        self.head = GrowingLinear(model.embed_dim)

    def before_task(self, task: int) -> None:
        super().before_task(task)
        if task == 0:
            self.model.add_adapter_set(self.config.adapter_bottleneck)
        self.head.grow(self.seen(task), self.generator(task, 1))

    def param_groups(self) -> list[ParamGroup]:
        params = list(self.model.adapter_sets[0].parameters()) + list(self.head.parameters())
        return [ParamGroup("adapter+head", params)]

    def loss(self, x, y):
        return F.cross_entropy(self.head(self.model.features(x, 0)), y)

    @torch.no_grad()
    def predict(self, x):
        return self.head(self.model.features(x, 0))
