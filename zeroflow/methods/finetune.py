"""Finetune: the forgetting baseline, a growing linear head trained on every task in turn.

``finetune_scope`` picks what trains beside the head:

- ``adapter`` (default): one adapter set; cross-entropy over every seen class's logits.
- ``full``: every backbone weight, no adapter (LAMDA-PILOT's finetune baseline): cross-entropy
  over all logits on task 0, then over the current task's logits only (labels shifted to the
  task's first class), so old classes' logits get no gradient from the loss. With a forward-pass
  optimizer this trains the whole backbone in the memory of inference.

Nothing protects old classes; the head predicts over all seen classes.

``mask_old_logits`` (shared with ZO-FC): true takes earlier tasks' logits out of the training
loss from task 1 on (set to -inf, so the softmax runs over the current task's classes), false
keeps every seen class; unset keeps each method's own default (``adapter``: false; ``full``:
true, as the slice above; ZO-FC: true).
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
        self.full = config.finetune_scope == "full"
        self.trains_backbone = self.full
        self.adapter = None if self.full else 0  # the adapter set features run (None: none)
        masks = config.mask_old_logits
        self.masks_old = self.masks_old_by_default() if masks is None else bool(masks)

    def masks_old_by_default(self) -> bool:
        return self.full

    def before_task(self, task: int) -> None:
        super().before_task(task)
        if task == 0 and not self.full:
            self.model.add_adapter_set(self.config.adapter_bottleneck)
        self.head.grow(self.seen(task), self.generator(task, 1))

    def param_groups(self) -> list[ParamGroup]:
        if self.full:
            return [ParamGroup("backbone+head", list(self.model.backbone.parameters())
                               + list(self.head.parameters()))]
        params = list(self.model.adapter_sets[0].parameters()) + list(self.head.parameters())
        return [ParamGroup("adapter+head", params)]

    def loss(self, x, y):
        return self.masked_loss(self.head(self.model.features(x, self.adapter)), y)

    def masked_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the seen classes, or the current task's (``masks_old``): the
        full scope slices the logits, the adapter scope and ZO-FC fill them with -inf."""
        known = self.scenario.task_classes(self.task).start
        if not self.masks_old or known == 0:
            return F.cross_entropy(logits, y)
        if self.full:
            return F.cross_entropy(logits[:, known:], y - known)
        old = torch.arange(logits.shape[1], device=logits.device) < known
        return F.cross_entropy(logits.masked_fill(old, float("-inf")), y)

    @torch.no_grad()
    def predict(self, x):
        return self.head(self.model.features(x, self.adapter))
