"""Evaluation after each task: top-1 over every seen class's test images, no task id, split
into the accuracy on each seen task (``a[t, j]``) and on all of them (see ``metrics``)."""

from __future__ import annotations

import torch

from zeroflow.batches import batches
from zeroflow.metrics import accuracy_by_task


def task_of_label(scenario, device) -> torch.Tensor:
    """The task of every (remapped) class label: what splits accuracy by task."""
    return torch.tensor([t for t in range(scenario.n_tasks) for _ in scenario.task_classes(t)],
                        device=device)


@torch.no_grad()
def evaluate(learner, scenario, t: int, task_of_label, config, device):
    """(a[t, j] for j <= t, accuracy on all seen classes), predicting over all seen classes."""
    test = scenario.test_set_upto(t)
    preds, labels = [], []
    for x, y in batches(test, range(len(test)), config.eval_batch_size, device,
                        config.num_workers):
        preds.append(learner.predict(x).argmax(dim=1))
        labels.append(y)
    return accuracy_by_task(torch.cat(preds), torch.cat(labels), task_of_label, t + 1)
