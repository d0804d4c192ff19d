"""The ``Learner`` contract: what a continual-learning method trains and how it predicts.

The loop in ``zeroflow.trial`` owns epochs, batches, optimizers, evaluation, checkpoints and
reporting; a learner never owns a loop. Per task the loop calls ``before_task`` (grow structure:
adapters, heads), asks ``param_groups()`` who trains what with which optimizer, steps them on
closures built from ``loss(x, y)``, then calls ``after_task`` (e.g. prototypes) and evaluates
``predict(x)`` on every seen class. ``before_task`` only builds and initialises structure, so a
resumed trial can replay it for finished tasks and then load the saved state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zeroflow.seeding import INIT_STREAM, derive_seed


@dataclass
class ParamGroup:
    """Tensors trained together by one optimizer.

    optimizer: None means the trial's configured optimizer (and the hybrid FO→ZO schedule
    applies); a name pins one (ZO-FC's first-order head). lr: None means the trial's lr.
    """

    name: str
    params: list[nn.Parameter]
    optimizer: str | None = None
    lr: float | None = None


class CosineHead(nn.Module):
    """Cosine classifier (PILOT's CosineLinear): logits = sigma · cos(x, w_c), sigma learnable."""

    def __init__(self, dim: int, n_classes: int, generator: torch.Generator):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, dim))
        self.sigma = nn.Parameter(torch.ones(1))
        bound = 1.0 / math.sqrt(dim)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sigma * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))


class Learner(nn.Module):
    """Base class of the methods in ``zeroflow.methods``.

    ``model`` is a ``zeroflow.models.AdaptedViT`` (frozen pre-trained ViT + adapter sets);
    ``scenario`` the class-incremental task sequence; ``config`` the ``TrialConfig``.
    Only non-backbone state is checkpointed (``trainable_state``) unless ``trains_backbone``.
    """

    #: True when the method trains backbone weights (they are then checkpointed too)
    trains_backbone = False

    def __init__(self, model: nn.Module, scenario, config):
        super().__init__()
        self.model = model
        self.scenario = scenario
        self.config = config
        self.task = -1

    # ------------------------------------------------------------------ structure & training
    def before_task(self, task: int) -> None:
        self.task = task

    def param_groups(self) -> list[ParamGroup]:
        raise NotImplementedError

    def epochs(self, task: int) -> int:
        """Epochs to train on ``task`` (APER trains task 0 only)."""
        return self.config.epochs

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def after_task(self, task: int, batches: Callable[[], Iterable]) -> None:
        """After training ``task``; ``batches()`` iterates its training data, test transform."""

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Logits over every class seen so far."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def generator(self, *parts: int) -> torch.Generator:
        """A private CPU generator for initialisation, seeded from (seed, parts)."""
        return torch.Generator().manual_seed(derive_seed(self.config.seed, INIT_STREAM, *parts))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def seen(self, task: int | None = None) -> int:
        return self.scenario.classes_seen(self.task if task is None else task)

    def local_labels(self, y: torch.Tensor) -> torch.Tensor:
        """Labels relative to the current task's first class."""
        return y - self.scenario.task_classes(self.task).start

    @torch.no_grad()
    def class_means(self, batches: Iterable, feature_fn, classes: range) -> torch.Tensor:
        """Per-class mean of ``feature_fn(x)`` over ``batches``: prototypes [len(classes), D]."""
        sums, counts = None, torch.zeros(len(classes), device=self.device)
        for x, y in batches:
            feats = feature_fn(x)
            if sums is None:
                sums = torch.zeros(len(classes), feats.shape[1], device=feats.device)
            idx = y - classes.start
            sums.index_add_(0, idx, feats)
            counts.index_add_(0, idx, torch.ones_like(idx, dtype=counts.dtype))
        if sums is None or bool((counts == 0).any()):
            raise RuntimeError("a class of the current task has no training samples")
        return sums / counts[:, None]

    def trainable_state(self) -> dict:
        """Everything but the frozen backbone weights (adapters, heads, prototypes, task); the
        backbone's too when the method trains it (``trains_backbone``)."""
        frozen = set() if self.trains_backbone else {
            f"model.backbone.{k}" for k, _ in self.model.backbone.named_parameters()} | {
            f"model.backbone.{k}" for k, _ in self.model.backbone.named_buffers()}
        state = {k: v.detach().clone() for k, v in self.state_dict().items() if k not in frozen}
        return {"tensors": state, "task": self.task}

    def load_trainable_state(self, state: dict) -> None:
        missing = self.load_state_dict(state["tensors"], strict=False)
        unexpected = missing.unexpected_keys
        absent = [k for k in missing.missing_keys if not k.startswith("model.backbone.")]
        if unexpected or absent:
            raise RuntimeError(f"checkpoint does not match the method: unexpected {unexpected}, "
                               f"missing {absent}")
        self.task = state["task"]
