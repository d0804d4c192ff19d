"""EASE (Zhou et al., CVPR 2024): an expandable subspace ensemble of adapters.

Per task t: a fresh adapter set (subspace t) and a fresh cosine head over task t's classes are
trained with cross-entropy on labels local to the task. After training, the class means of the
new classes' features (test transform) are stored as prototypes in every subspace 0..t. Old
classes have no data in the new subspaces, so their prototypes there are completed from the new
classes' ones, weighted by similarity measured where both exist:

    for every old task τ < t and later subspace s (τ < s <= t), with R = classes of tasks s..t:
    S = softmax_j cos(P[c, τ], P[r_j, τ])   (c in task τ's classes, r_j in R, temperature 1)
    P[c, s] = Σ_j S_cj P[r_j, s]

Inference concatenates the t + 1 subspace features; a class of task i scores
Σ_j w_ij cos(f_j, P[c, j]) with w_ii = 1 and w_ij = α / t otherwise (α = ``ease_alpha``, 0.1):
its own subspace counts fully, the others as a small ensemble.

``ease_perturb_prototypes: true`` trains the prototype tensor with the adapter and head, as
the authors' ZeroFlow code does (THUDM/INFTY 2383906 ``examples/PILOT/utils/inc_net.py``:
EASE's prototype classifier ``fc`` requires grad while a task trains, and its ZO optimizer
perturbs every such tensor). The training loss never reads the prototypes, so a forward-pass
step only adds its update noise (c · z, momentum, weight decay) to them; ``after_task`` then
overwrites the current classes' rows and the completed ones, and what stays is the noise on
earlier classes' prototypes in their own and earlier subspaces. The official classifier's
scale ``sigma`` is not modelled: the reweighted logits never read it.

``ease_variant: omni`` is the variant EASE's official OmniBenchmark file runs (its ``moni_adam``
switch, ``adapter_num`` 1): one adapter set and proxy head trained on task 0 only, the
pre-trained features kept beside it, no subspace completion, and a plain cosine classifier on
[pre-trained ‖ adapter] class means. The official classifier also sees the later, untrained
adapters' features, but with zero prototype weights there; they only scale each sample's logits
by one positive factor, so predictions are those of the cosine over [pre-trained ‖ adapter]:
the same model as APER-adapter's, which ``EaseOmni`` reuses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zeroflow.methods.aper import Aper
from zeroflow.methods.base import CosineHead, Learner, ParamGroup


def complete_prototypes(protos: torch.Tensor, task_ranges: list[range], t: int) -> None:
    """In place: fill the prototypes of old classes in subspaces they were never seen in.

    protos: [n_classes_seen, t + 1, D]; task_ranges[k]: the labels of task k.
    """
    for old in range(t):
        old_cls = task_ranges[old]
        for s in range(old + 1, t + 1):
            later = range(task_ranges[s].start, task_ranges[t].stop)
            sim = F.cosine_similarity(
                protos[old_cls.start:old_cls.stop, old].unsqueeze(1),
                protos[later.start:later.stop, old].unsqueeze(0), dim=-1)
            weights = sim.softmax(dim=1)
            protos[old_cls.start:old_cls.stop, s] = weights @ protos[later.start:later.stop, s]


def reweighted_logits(feats: list[torch.Tensor], protos: torch.Tensor, task_ranges: list[range],
                      alpha: float) -> torch.Tensor:
    """Σ_j w_ij cos(f_j, P[c, j]) for every class c (of task i): [B, n_classes]."""
    t = len(feats) - 1
    cos = torch.stack([F.normalize(f, dim=1) @ F.normalize(protos[:, j], dim=1).T
                       for j, f in enumerate(feats)], dim=-1)  # [B, C, t + 1]
    weights = torch.full((protos.shape[0], t + 1), alpha / t if t else 1.0, device=cos.device)
    for i, cls in enumerate(task_ranges):
        weights[cls.start:cls.stop, i] = 1.0
    return (cos * weights).sum(dim=-1)


class Ease(Learner):
    def __init__(self, model, scenario, config):
        super().__init__(model, scenario, config)
        self.head: CosineHead | None = None
        self.register_buffer("protos", torch.zeros(0, 0, model.embed_dim))

    def task_ranges(self, t: int | None = None) -> list[range]:
        t = self.task if t is None else t
        return [self.scenario.task_classes(k) for k in range(t + 1)]

    def before_task(self, task: int) -> None:
        super().before_task(task)
        self.model.add_adapter_set(self.config.adapter_bottleneck)
        n_new = len(self.scenario.task_classes(task))
        self.head = CosineHead(self.model.embed_dim, n_new, self.generator(task)).to(self.device)
        grown = torch.zeros(self.seen(task), task + 1, self.model.embed_dim, device=self.device)
        grown[: self.protos.shape[0], : self.protos.shape[1]] = self.protos
        self.protos = grown

    def param_groups(self) -> list[ParamGroup]:
        params = list(self.model.adapter_sets[self.task].parameters())
        params += list(self.head.parameters())
        if self.config.ease_perturb_prototypes:  # INFTY's set: every tensor requiring grad
            return [ParamGroup("adapter+head+prototypes", params + [self.protos])]
        return [ParamGroup("adapter+head", params)]

    def loss(self, x, y):
        return F.cross_entropy(self.head(self.model.features(x, self.task)), self.local_labels(y))

    @torch.no_grad()
    def after_task(self, task, batches):
        classes = self.scenario.task_classes(task)
        for j in range(task + 1):
            self.protos[classes.start:classes.stop, j] = self.class_means(
                batches(), lambda x, j=j: self.model.features(x, j), classes)
        complete_prototypes(self.protos, self.task_ranges(task), task)

    @torch.no_grad()
    def predict(self, x):
        feats = [self.model.features(x, j) for j in range(self.task + 1)]
        return reweighted_logits(feats, self.protos, self.task_ranges(), self.config.ease_alpha)

    def trainable_state(self) -> dict:
        # the proxy head is only used while its task trains; it is not part of the model after
        state = super().trainable_state()
        state["tensors"] = {k: v for k, v in state["tensors"].items()
                            if not k.startswith("head.")}
        return state

    def load_trainable_state(self, state: dict) -> None:
        head, self.head = self.head, None
        try:
            super().load_trainable_state(state)
        finally:
            self.head = head


class EaseOmni(Aper):
    """EASE's OmniBenchmark variant (``ease_variant: omni``; see the module docstring)."""
