"""Training and evaluation batches, named so that a query worker can rebuild them bit for bit.

A task's epoch visits its training samples in a seeded order (``epoch_order``) cut into
consecutive batches of sample indices (``batch_chunks``); ``make_batch`` turns one chunk into
tensors. A ``BatchSpec`` is what names one training batch and its closure across processes:
the worker rebuilds the same (x, y) from its own copy of the dataset and the indices alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from zeroflow.seeding import DATA_STREAM, derive_seed


@dataclass(frozen=True)
class BatchSpec:
    """What names a training batch and its closure, so a query worker can rebuild both: the
    task, epoch and augmentation seed (``set_epoch``), the batch's sample indices in the task's
    training set, and the dropout seed the closure reseeds the model with."""

    task: int
    epoch: int
    aug_seed: int
    indices: list[int]
    dropout_seed: int


def epoch_order(seed: int, task: int, epoch: int, n: int) -> torch.Tensor:
    """The order in which task ``task``'s ``n`` training samples are visited in ``epoch``: a
    permutation drawn from the trial's data stream, the same in every process."""
    gen = torch.Generator().manual_seed(derive_seed(seed, DATA_STREAM, task, epoch))
    return torch.randperm(n, generator=gen)


def batch_chunks(indices, batch_size: int, limit: int | None = None) -> list[list[int]]:
    """``indices`` cut into consecutive batches of sample indices (the first ``limit``)."""
    indices = [int(i) for i in indices]
    chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    return chunks if limit is None else chunks[:limit]


def make_batch(dataset, chunk: list[int], device) -> tuple[torch.Tensor, torch.Tensor]:
    """The (x, y) batch of ``dataset``'s samples ``chunk``: what a query worker rebuilds from
    the indices alone, bit for bit."""
    items = [dataset[i] for i in chunk]
    x = torch.stack([it[0] for it in items]).to(device)
    y = torch.tensor([it[1] for it in items], device=device)
    return x, y


def batches(dataset, indices: np.ndarray | torch.Tensor, batch_size: int, device, num_workers=0,
            limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (x, y) batches of ``dataset[indices]`` in that order (optionally a DataLoader)."""
    chunks = batch_chunks(indices, batch_size, limit)
    if num_workers > 0:
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=chunks, num_workers=num_workers)
        for x, y in loader:
            yield x.to(device), y.to(device)
        return
    for chunk in chunks:
        yield make_batch(dataset, chunk, device)
