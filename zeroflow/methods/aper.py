"""APER with an adapter (Zhou et al., IJCV 2024): adapt once, then only build prototypes.

Task 0 tunes one adapter set and a cosine head; every later task trains nothing. For every task
the class means of [pre-trained ‖ adapted] CLS features (test transform) become the prototypes
of its classes, and prediction is the cosine similarity to them over the concatenated vector.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zeroflow.methods.base import CosineHead, Learner, ParamGroup


class Aper(Learner):
    def __init__(self, model, scenario, config):
        super().__init__(model, scenario, config)
        self.head: CosineHead | None = None
        self.register_buffer("protos", torch.zeros(0, 2 * model.embed_dim))

    def before_task(self, task: int) -> None:
        super().before_task(task)
        if task == 0:
            self.model.add_adapter_set(self.config.adapter_bottleneck)
            n = len(self.scenario.task_classes(0))
            self.head = CosineHead(self.model.embed_dim, n, self.generator(0)).to(self.device)
        grown = torch.zeros(self.seen(task), self.protos.shape[1], device=self.device)
        grown[: self.protos.shape[0]] = self.protos
        self.protos = grown

    def epochs(self, task: int) -> int:
        return self.config.epochs if task == 0 else 0

    def param_groups(self) -> list[ParamGroup]:
        if self.task != 0:
            return []
        params = list(self.model.adapter_sets[0].parameters()) + list(self.head.parameters())
        return [ParamGroup("adapter+head", params)]

    def loss(self, x, y):
        return F.cross_entropy(self.head(self.model.features(x, 0)), self.local_labels(y))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model.features(x, None), self.model.features(x, 0)], dim=1)

    @torch.no_grad()
    def after_task(self, task, batches):
        classes = self.scenario.task_classes(task)
        self.protos[classes.start:classes.stop] = self.class_means(batches(), self.embed, classes)

    @torch.no_grad()
    def predict(self, x):
        return F.normalize(self.embed(x), dim=1) @ F.normalize(self.protos, dim=1).T
