"""Task-loss probes: the loss on a fixed batch of each seen task, measured along training.

The probe loss of a task is the cross-entropy of the learner's prediction over every class
seen so far (``Learner.predict``, global labels) on a fixed batch of that task's training
samples (test transform). It is method-independent, so old and new tasks are scored alike. For
prototype methods (EASE, APER) the current task has no prototypes until its ``after_task``,
so during training only the old tasks' probe losses are informative there; for finetune and
ZO-FC (one shared head) all are.

Probes never change training: they run under ``torch.no_grad()`` in eval mode (no dropout draw)
and restore the learner's mode; the probe batches are chosen by their own seeded generator;
their forward passes are counted apart (``forward_passes``).
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F

from zeroflow.batches import make_batch
from zeroflow.observers import Observer, StepEvent, TrialState
from zeroflow.seeding import PROBE_STREAM, derive_seed

PROBE_SIZE = 64  # samples per task's probe batch (fewer if the task has fewer)


def prediction_loss(learner, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the learner's prediction over all seen classes on (x, y).

    Differentiable where grad is enabled: ``predict`` is declared under ``torch.no_grad()``,
    so its undecorated body is called (what the Hessian measure needs)."""
    predict = inspect.unwrap(type(learner).predict)
    return F.cross_entropy(predict(learner, x), y)


class TaskProbes:
    """Fixed probe batches per task and the probe losses measured on them.

    seed: the trial seed; the batch of task j is the first ``size`` samples of a permutation
    drawn from a generator seeded by (seed, probe stream, j)."""

    def __init__(self, scenario, seed: int, device, size: int = PROBE_SIZE):
        self.scenario, self.seed, self.device, self.size = scenario, seed, device, size
        self._batches: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.forward_passes = 0

    def batch(self, task: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Task ``task``'s probe batch (built once, then cached)."""
        if task not in self._batches:
            data = self.scenario.train_set(task, augment=False)
            gen = torch.Generator().manual_seed(derive_seed(self.seed, PROBE_STREAM, task))
            chosen = torch.randperm(len(data), generator=gen)[: self.size].tolist()
            self._batches[task] = make_batch(data, chosen, self.device)
        return self._batches[task]

    def losses(self, learner, seen: int) -> dict[int, float]:
        """Probe loss of tasks 0..seen-1 (one counted forward pass each), in eval mode under
        no_grad; the learner's train/eval mode is restored."""
        was_training = learner.training
        learner.eval()
        try:
            with torch.no_grad():
                out = {}
                for j in range(seen):
                    x, y = self.batch(j)
                    out[j] = float(prediction_loss(learner, x, y))
                    self.forward_passes += 1
                return out
        finally:
            learner.train(was_training)

    def seen_batches(self, seen: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [self.batch(j) for j in range(seen)]


class TaskLosses(Observer):
    """``track_task_losses: N``: after every N-th training step (global count), the probe loss
    of every task seen so far, the current one included, as series ``task_loss_<j>``."""

    def __init__(self, probes: TaskProbes, every: int):
        self.probes, self.every = probes, every

    def after_step(self, state: TrialState, event: StepEvent) -> None:
        if event.global_step % self.every == 0:
            for j, value in self.probes.losses(state.learner, state.task + 1).items():
                state.series.setdefault(f"task_loss_{j}", []).append([event.global_step, value])


class ProbePasses(Observer):
    """The analyses' forward passes on the probe batches, counted apart from training's
    (counter and metric ``probe_forward_passes``, cumulative): the last analysis observer."""

    def __init__(self, probes: TaskProbes):
        self.probes = probes

    def after_eval(self, state: TrialState) -> dict[str, float]:
        state.counters["probe_forward_passes"] += self.probes.forward_passes
        self.probes.forward_passes = 0
        return {"probe_forward_passes": float(state.counters["probe_forward_passes"])}
