"""The named points of ``run_trial``'s loop, and what an observer sees there.

An observer is called by the loop at fixed points, like the plugins of Avalanche's training
template (``before_training_exp``, ``after_training_iteration``, ...), fewer::

    for each task:         before_task
      for each epoch:      before_epoch
        for each batch:    after_step         (every group's optimizer stepped)
                           after_epoch        (schedules advanced)
      evaluated:           after_eval  -> metrics to add to the task's report
      reported:            after_task         (its metrics final; then checkpoint, reporter)

An analysis, a progress display or a test's fault injection is an observer: a new one adds a
file, not lines in the loop. Observers must not change what training computes: they may read
the learner (in eval mode, under ``torch.no_grad()``, restoring what they touch) and add to the
task's ``series`` and the trial's ``counters``, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for annotations only: observers need neither at run time
    from zeroflow.config import TrialConfig
    from zeroflow.metrics import AccuracyMatrix


@dataclass
class StepEvent:
    """One training step, for progress displays: where it is and the batch's loss."""

    task: int
    n_tasks: int
    epoch: int
    epochs: int
    step: int  # within the epoch
    steps_per_epoch: int
    loss: float
    global_step: int = 0  # training steps of the trial so far, this one included


@dataclass
class EpochEvent:
    """One finished epoch: its steps, mean training loss and wall time."""

    task: int
    n_tasks: int
    epoch: int
    epochs: int
    steps: int
    loss: float
    seconds: float


@dataclass
class TrialState:
    """What the loop holds, as observers see it. ``counters`` (forward passes, steps, train
    seconds, analyses' forward passes) and ``history`` (each task's metrics) are checkpointed;
    ``series`` is the current task's step-level metrics: name → [[global step, value], ...]."""

    config: TrialConfig
    learner: object  # a zeroflow.methods.Learner
    scenario: object  # a zeroflow.data.Scenario
    device: object  # a torch.device
    matrix: AccuracyMatrix
    counters: dict
    history: list[dict] = field(default_factory=list)
    series_history: list[dict] = field(default_factory=list)
    start_task: int = 0
    task: int = -1
    epochs: int = 0
    steppers: list = field(default_factory=list)
    series: dict = field(default_factory=dict)

    @property
    def n_tasks(self) -> int:
        return self.scenario.n_tasks


class Observer:
    """Called by ``run_trial`` at the points named in this module's docstring; each is a no-op
    here, so an observer overrides only the points it needs."""

    def before_task(self, state: TrialState) -> None:
        """Task ``state.task``'s structure and steppers are built; it is about to train."""

    def before_epoch(self, state: TrialState, epoch: int) -> None:
        """Epoch ``epoch`` of the task is about to train."""

    def after_step(self, state: TrialState, event: StepEvent) -> None:
        """Every parameter group took its step on one batch."""

    def after_epoch(self, state: TrialState, event: EpochEvent) -> None:
        """The epoch's steps are done and the LR schedules advanced."""

    def after_eval(self, state: TrialState) -> dict[str, float]:
        """The task is trained and evaluated (``state.matrix`` holds its row); returns
        metrics to add to the task's report (names declared in ``zeroflow.metrics``)."""
        return {}

    def after_task(self, state: TrialState, metrics: dict[str, float]) -> None:
        """The task's metrics are final (``state.history[-1]``); the checkpoint and the
        reporter come next."""


class Callbacks(Observer):
    """``run_trial``'s plain callbacks as an observer: ``log`` (progress lines after every
    epoch and task), ``on_epoch(task, epoch)`` before each epoch, ``on_step(StepEvent)``
    after each step (a progress bar; it must not touch the model)."""

    def __init__(self, log: Callable[[str], None] | None = None,
                 on_epoch: Callable[[int, int], None] | None = None,
                 on_step: Callable[[StepEvent], None] | None = None):
        self.log = log or (lambda _msg: None)
        self.on_epoch, self.on_step = on_epoch, on_step

    def before_epoch(self, state: TrialState, epoch: int) -> None:
        if self.on_epoch is not None:
            self.on_epoch(state.task, epoch)

    def after_step(self, state: TrialState, event: StepEvent) -> None:
        if self.on_step is not None:
            self.on_step(event)

    def after_epoch(self, state: TrialState, event: EpochEvent) -> None:
        self.log(f"task {event.task + 1}/{event.n_tasks} epoch {event.epoch + 1}/{event.epochs}: "
                 f"loss {event.loss:.4f}, {event.steps} steps, {event.seconds:.1f}s")

    def after_task(self, state: TrialState, metrics: dict[str, float]) -> None:
        t = state.task
        self.log(f"task {t + 1}/{state.n_tasks} done: accuracy {metrics['accuracy']:.2f}% on "
                 f"{state.scenario.classes_seen(t)} classes, forgetting "
                 f"{state.matrix.forgetting():.2f}")
