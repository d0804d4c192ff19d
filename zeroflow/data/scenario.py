"""Class-incremental scenario: PILOT's class order, label remapping and per-task subsets.

Classes are shuffled once (``class_order``) and relabelled so that ``order[k]`` becomes label
``k``; task 0 then holds labels ``[0, init_cls)`` and every later task ``increment`` more.
Subsets are index arrays over the base datasets, so no image is copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from zeroflow.errors import ConfigError


def class_order(n_classes: int, seed: int | None = 1993, shuffle: bool = True) -> list[int]:
    """PILOT's class order: ``np.random.seed(seed); np.random.permutation(n)``.

    Drawn from a private ``RandomState`` so numpy's global RNG is left untouched.
    ``seed=None`` draws fresh OS entropy (not reproducible); ``shuffle=False`` is the
    identity order.
    """
    if not shuffle:
        return list(range(n_classes))
    return [int(c) for c in np.random.RandomState(seed).permutation(n_classes)]


class ScenarioSubset(Dataset):
    """Samples ``indices`` of a base dataset, labels remapped to scenario order.

    ``__getitem__`` returns ``(x, remapped_label)``; ``targets`` holds the remapped labels.
    """

    def __init__(self, base: Any, indices: np.ndarray, label_map: np.ndarray, classes: range):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.label_map = label_map
        self.classes = classes
        self.targets = label_map[np.asarray(base.targets, dtype=np.int64)[self.indices]]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> tuple[Any, int]:
        x, _ = self.base[int(self.indices[k])]
        return x, int(self.targets[k])

    def set_epoch(self, seed: int, epoch: int) -> None:
        """Forward to the base dataset (seeds its train-time augmentation)."""
        set_epoch = getattr(self.base, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(seed, epoch)


def _first_per_class(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """Mask keeping the first ``limit`` samples (by index) of every label."""
    if limit is None:
        return np.ones(len(labels), dtype=bool)
    keep = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        keep[np.flatnonzero(labels == label)[:limit]] = True
    return keep


class Scenario:
    """Splits a (train, test) pair into class-incremental tasks.

    ``train`` and ``test`` expose ``.targets`` (original labels) and ``.num_classes``.
    """

    def __init__(
        self,
        train: Any,
        test: Any,
        init_cls: int,
        increment: int,
        order_seed: int | None = 1993,
        shuffle: bool = True,
        samples_per_class: int | None = None,
        order: Sequence[int] | None = None,
    ):
        """``samples_per_class`` keeps only the first N train and N test samples of every class
        (quick experiments and smoke tests); None keeps everything. ``order``: a fixed class
        order (a dataset's registered one) instead of the seeded shuffle."""
        num_classes = int(train.num_classes)
        if int(test.num_classes) != num_classes:
            raise ConfigError(
                f"train set has {num_classes} classes but test set has {test.num_classes}: "
                "use a dataset whose train and test splits share the same classes"
            )
        for key, value in (("init_cls", init_cls), ("increment", increment)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{key}={value!r} must be a positive integer")
        init_cls, increment = int(init_cls), int(increment)
        if init_cls > num_classes or (num_classes - init_cls) % increment != 0:
            raise ConfigError(
                f"init_cls={init_cls}, increment={increment} do not split num_classes="
                f"{num_classes} into whole tasks: choose them so that init_cls + k*increment "
                f"== {num_classes} for some k >= 0"
            )
        self.num_classes = num_classes
        self.init_cls = init_cls
        self.increment = increment
        self.n_tasks = 1 + (num_classes - init_cls) // increment
        self.order = (class_order(num_classes, order_seed, shuffle) if order is None
                      else [int(c) for c in order])
        if sorted(self.order) != list(range(num_classes)):
            raise ConfigError(f"class order {self.order} is not a permutation of "
                              f"range({num_classes}); fix the dataset's registered class_order")
        self._label_map = np.empty(num_classes, dtype=np.int64)
        self._label_map[np.asarray(self.order, dtype=np.int64)] = np.arange(num_classes)
        self.train = train
        self.test = test
        self._train_labels = self.remap(train.targets)
        self._test_labels = self.remap(test.targets)
        self._train_keep = _first_per_class(self._train_labels, samples_per_class)
        self._test_keep = _first_per_class(self._test_labels, samples_per_class)

    def remap(self, labels: Sequence[int] | np.ndarray) -> np.ndarray:
        """Original labels -> scenario labels (``order[k]`` becomes ``k``)."""
        labels = np.asarray(labels, dtype=np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(
                f"labels must lie in [0, {self.num_classes}); got range "
                f"[{labels.min()}, {labels.max()}]"
            )
        return self._label_map[labels]

    def _check_task(self, t: int) -> None:
        if not 0 <= t < self.n_tasks:
            raise IndexError(f"task {t} out of range: this scenario has {self.n_tasks} tasks")

    def classes_seen(self, t: int) -> int:
        """Number of classes seen after task ``t`` (end of its label range)."""
        self._check_task(t)
        return self.init_cls + t * self.increment

    def task_classes(self, t: int) -> range:
        """Scenario labels introduced by task ``t``."""
        end = self.classes_seen(t)
        return range(0 if t == 0 else end - self.increment, end)

    def _subset(self, base: Any, labels: np.ndarray, classes: range) -> ScenarioSubset:
        keep = self._train_keep if labels is self._train_labels else self._test_keep
        mask = (labels >= classes.start) & (labels < classes.stop) & keep
        return ScenarioSubset(base, np.flatnonzero(mask), self._label_map, classes)

    def train_set(self, t: int, augment: bool = True) -> ScenarioSubset:
        """Training samples of task ``t``'s classes; ``augment=False`` gives them the test
        transform (what prototypes are computed from)."""
        base = self.train if augment else self.train.eval_view()
        return self._subset(base, self._train_labels, self.task_classes(t))

    def test_set(self, t: int) -> ScenarioSubset:
        """Test samples of task ``t``'s classes only."""
        return self._subset(self.test, self._test_labels, self.task_classes(t))

    def test_set_upto(self, t: int) -> ScenarioSubset:
        """Test samples of every class seen after task ``t``."""
        return self._subset(self.test, self._test_labels, range(0, self.classes_seen(t)))
