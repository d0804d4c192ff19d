"""SimpleCIL: the pre-trained model's prototypes, nothing trained.

    Da-Wei Zhou, Zi-Wen Cai, Han-Jia Ye, De-Chuan Zhan, Ziwei Liu. "Revisiting Class-Incremental
    Learning with Pre-Trained Models: Generalizability and Adaptivity are All You Need". IJCV
    2024 (arXiv:2303.07338); PILOT's zero-training baseline (``simplecil``).

After each task the mean of the frozen backbone's CLS features of every new class (its
training images with the test transform) becomes that class's prototype; prediction is the
cosine similarity of a test feature to every prototype seen so far (PILOT replaces a cosine
classifier's weights with the prototypes; its learnable scale does not change the argmax, so it
is left out). No task trains: ``epochs`` is 0 and there are no parameter groups, so the trial's
optimizer never steps and the accuracy is the same for every optimizer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zeroflow.methods import Learner, ParamGroup


class SimpleCIL(Learner):
    def __init__(self, model, scenario, config):
        super().__init__(model, scenario, config)
        self.register_buffer("protos", torch.zeros(0, model.embed_dim))

    def before_task(self, task: int) -> None:
        super().before_task(task)
        grown = torch.zeros(self.seen(task), self.protos.shape[1], device=self.device)
        grown[: self.protos.shape[0]] = self.protos
        self.protos = grown

    def epochs(self, task: int) -> int:
        return 0

    def param_groups(self) -> list[ParamGroup]:
        return []

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x, None)  # the pre-trained CLS feature, no adapter

    @torch.no_grad()
    def after_task(self, task, batches):
        classes = self.scenario.task_classes(task)
        self.protos[classes.start:classes.stop] = self.class_means(batches(), self.embed, classes)

    @torch.no_grad()
    def predict(self, x):
        return F.normalize(self.embed(x), dim=1) @ F.normalize(self.protos, dim=1).T
