"""``run_trial(config, reporter)``: the one training loop of every method and optimizer.

Per task: the learner grows its structure, the loop builds one stepper per parameter group
(``zeroflow.steppers``: the configured optimizer, or a pinned one such as ZO-FC's first-order
head), trains for the learner's epochs with a cosine LR schedule stepped per epoch (it reaches
forward-pass optimizers too), lets the learner finish the task (prototypes), evaluates on every
seen class, writes a checkpoint (``zeroflow.checkpoint``), and reports. Observers
(``zeroflow.observers``: analyses, progress) are called at named points in between. Everything
random comes from generators seeded by (seed, task, epoch, batch) (``zeroflow.seeding``), so a
trial resumed from a task checkpoint ends bit for bit where an uninterrupted one does (on CPU).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from zeroflow import analysis
from zeroflow.assembly import build_learner, resolve_device
from zeroflow.batches import BatchSpec, batch_chunks, batches, epoch_order
from zeroflow.checkpoint import check_resumable, load_checkpoint, save_checkpoint, task_checkpoint
from zeroflow.config import TrialConfig, make_config
from zeroflow.evaluation import evaluate, task_of_label
from zeroflow.metrics import AccuracyMatrix, PeakMemory, Stopwatch, check_task_metrics
from zeroflow.observers import Callbacks, EpochEvent, Observer, StepEvent, TrialState
from zeroflow.seeding import AUG_STREAM, DROPOUT_STREAM, derive_seed
from zeroflow.steppers import (
    LocalStepping,
    activate,
    finite_loss,
    freeze,
    task_steppers,
    training_closure,
)


@dataclass
class TaskReport:
    """What the loop reports after each task (``metrics`` are flat name → number).

    start_task: the first task this call of ``run_trial`` trained (> 0 after a resume), so a
    retried trial shows where it continued from."""

    task: int
    n_tasks: int
    metrics: dict[str, float]
    checkpoint_dir: str | None
    start_task: int = 0
    memory_label: str = "cpu_peak_rss"  # what peak_memory_mb measures (PeakMemory.label)
    # metrics logged within the task at global training steps: name → [[step, value], ...]
    series: dict[str, list[list[float]]] = field(default_factory=dict)


@dataclass
class TrialResult:
    config: TrialConfig
    matrix: AccuracyMatrix
    summary: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    memory_label: str = "cpu_peak_rss"
    query_stats: dict | None = None  # the query pool's traffic (``PoolStats``), if one ran
    series: list[dict] = field(default_factory=list)  # each task's TaskReport.series


Reporter = Callable[[TaskReport], None]


def run_trial(
    config: TrialConfig | dict,
    reporter: Reporter | None = None,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    resume_from: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
    on_epoch: Callable[[int, int], None] | None = None,
    on_step: Callable[[StepEvent], None] | None = None,
    observers: Sequence[Observer] = (),
) -> TrialResult:
    """Train and evaluate one trial; returns the accuracy matrix and summary metrics.

    checkpoint_dir: where a checkpoint is written after every task (and resumed from, if one is
        already there). resume_from: a checkpoint directory to start from instead.
    reporter: called after every task with a ``TaskReport``. log: progress lines.
    on_epoch: called with (task, epoch) before each epoch trains. on_step: called with a
        ``StepEvent`` after each training step (a progress bar; it must not touch the model).
    observers: more ``Observer``s, called after the config's analyses and before those three.
    """
    config = make_config(config)
    log = log or (lambda _msg: None)
    device = resolve_device(config.device)
    learner, scenario = build_learner(config, device)
    learner.to(device)
    state = TrialState(config, learner, scenario, device, AccuracyMatrix(scenario.n_tasks), {
        "forward_passes": 0, "steps": 0, "train_seconds": 0.0, "probe_forward_passes": 0})
    memory = PeakMemory(device)
    watchers = [*analysis.observers(config, scenario, device), *observers,
                Callbacks(log, on_epoch, on_step)]
    labels = task_of_label(scenario, device)
    source = resume_from if resume_from is not None else checkpoint_dir
    if source is not None:
        _resume(state, source, log)
    stepping = _stepping(config, log)
    try:
        for t in range(state.start_task, state.n_tasks):
            state.task, watch = t, Stopwatch()
            steps, passes = _train_task(state, stepping, watchers)
            train_seconds = watch.seconds
            state.counters["forward_passes"] += passes
            state.counters["train_seconds"] += train_seconds
            extra = _evaluate_task(state, watchers, labels)
            metrics = check_task_metrics({
                **_task_metrics(state, memory, passes, steps, watch.seconds, train_seconds),
                **extra})
            state.history.append(metrics)
            state.series_history.append(state.series)
            for w in watchers:
                w.after_task(state, metrics)
            written = None
            if checkpoint_dir is not None:
                save_checkpoint(Path(checkpoint_dir), task_checkpoint(
                    config, t, learner, state.steppers, state.matrix, state.counters,
                    state.history, state.series_history))
                written = str(checkpoint_dir)
            if reporter is not None:
                reporter(TaskReport(t, state.n_tasks, metrics, written, state.start_task,
                                    memory.label, state.series))
    finally:
        stepping.close()
    stats = dataclasses.asdict(stepping.stats) if stepping.stats is not None else None
    return TrialResult(config, state.matrix, summarize(state.matrix, state.counters, memory),
                       state.history, memory.label, stats, state.series_history)


def _stepping(config: TrialConfig, log):
    """Where forward-pass directions are evaluated: query workers (``query_workers > 0``) or
    this process."""
    if config.query_workers > 0:
        from zeroflow.distributed import QueryPool

        return QueryPool(config, log=log)
    return LocalStepping()


def _resume(state: TrialState, source, log) -> None:
    """Continue after the task checkpoint in ``source``, if there is one (same config only)."""
    ckpt = load_checkpoint(source)
    if ckpt is None:
        return
    check_resumable(ckpt, state.config)
    for t in range(ckpt["task"] + 1):
        state.learner.before_task(t)
    state.learner.to(state.device)
    state.learner.load_trainable_state(ckpt["learner"])
    state.matrix.load_state_dict(ckpt["matrix"])
    state.counters.update(ckpt["counters"])
    state.history = list(ckpt["history"])
    state.series_history = list(ckpt.get("series", [{} for _ in state.history]))
    state.start_task = ckpt["task"] + 1
    log(f"resumed after task {ckpt['task'] + 1}/{state.n_tasks} from {source}")


def _train_task(state: TrialState, stepping, watchers) -> tuple[int, int]:
    """Build and train task ``state.task``; returns its (training steps, forward passes)."""
    config, learner, t = state.config, state.learner, state.task
    learner.before_task(t)
    learner.to(state.device)
    state.epochs = learner.epochs(t)
    state.steppers, state.series = task_steppers(learner, config, t, state.epochs), {}
    train_set = state.scenario.train_set(t)
    aug_seed = derive_seed(config.seed, AUG_STREAM, t)
    stepping.start_task(t, learner, state.steppers)
    passes_before = sum(s.forward_passes for s in state.steppers)
    learner.train()
    for w in watchers:
        w.before_task(state)
    steps = sum(_train_epoch(state, stepping, watchers, train_set, aug_seed, epoch)
                for epoch in range(state.epochs))
    freeze(state.steppers)
    stepping.finish_task()
    return steps, sum(s.forward_passes for s in state.steppers) - passes_before


def _train_epoch(state: TrialState, stepping, watchers, train_set, aug_seed: int,
                 epoch: int) -> int:
    """One epoch of the task's seeded sample order; returns its steps."""
    config, t = state.config, state.task
    for w in watchers:
        w.before_epoch(state, epoch)
    watch = Stopwatch()
    active = activate(state.steppers, epoch)
    train_set.set_epoch(aug_seed, epoch)
    order = epoch_order(config.seed, t, epoch, len(train_set))
    chunks = batch_chunks(order, config.batch_size, config.limit_batches)
    loss_sum, n_steps = 0.0, 0
    for b, (x, y) in enumerate(batches(train_set, order, config.batch_size, state.device,
                                       config.num_workers, config.limit_batches)):
        spec = BatchSpec(t, epoch, aug_seed, chunks[b],
                         derive_seed(config.seed, DROPOUT_STREAM, t, epoch, b))
        for stepper, opt in zip(state.steppers, active):
            closure = training_closure(state.learner, opt, x, y, spec.dropout_seed)
            loss = finite_loss(stepping.train_step(stepper, opt, closure, spec), stepper, opt,
                               config.mu, t, epoch, b)
        loss_sum += loss
        n_steps += 1
        event = StepEvent(t, state.n_tasks, epoch, state.epochs, b, len(chunks), loss,
                          state.counters["steps"] + n_steps)
        for w in watchers:
            w.after_step(state, event)
    for stepper in state.steppers:
        stepper.epoch_end()
    state.counters["steps"] += n_steps
    event = EpochEvent(t, state.n_tasks, epoch, state.epochs, n_steps,
                       loss_sum / max(n_steps, 1), watch.seconds)
    for w in watchers:
        w.after_epoch(state, event)
    return n_steps


def _evaluate_task(state: TrialState, watchers, labels) -> dict[str, float]:
    """Let the learner finish the task, record its accuracies; the observers' metrics."""
    config, learner, t, device = state.config, state.learner, state.task, state.device
    learner.eval()
    eval_set = state.scenario.train_set(t, augment=False)
    learner.after_task(t, lambda eval_set=eval_set: batches(
        eval_set, range(len(eval_set)), config.eval_batch_size, device, config.num_workers))
    per_task, seen = evaluate(learner, state.scenario, t, labels, config, device)
    state.matrix.record(t, per_task, seen)
    extra: dict[str, float] = {}
    for w in watchers:
        extra.update(w.after_eval(state))
    return extra


def _task_metrics(state: TrialState, memory: PeakMemory, passes: int, steps: int,
                  seconds: float, train_seconds: float) -> dict[str, float]:
    """The loop's own per-task metrics (names in ``zeroflow.metrics.TASK_METRICS``)."""
    matrix, t = state.matrix, state.task
    per_task = [float(a) for a in matrix.a[t, : t + 1]]
    return {
        "accuracy": float(matrix.seen[t]), "avg_accuracy": matrix.avg(),
        "forgetting": matrix.forgetting(),
        **{f"accuracy_task_{j}": a for j, a in enumerate(per_task)},
        "peak_memory_mb": memory.peak_mb(), "train_memory_mb": memory.train_mb(),
        "forward_passes": float(state.counters["forward_passes"]),
        "forward_passes_task": float(passes),
        "steps": float(state.counters["steps"]),
        "time_task_s": seconds, "train_time_task_s": train_seconds,
        "time_per_step_s": train_seconds / steps if steps else 0.0,
    }


def summarize(matrix: AccuracyMatrix, counters: dict, memory: PeakMemory) -> dict[str, float]:
    return {
        "avg": matrix.avg(), "last": matrix.last(), "forgetting": matrix.forgetting(),
        "peak_memory_mb": memory.peak_mb(), "train_memory_mb": memory.train_mb(),
        "forward_passes": float(counters["forward_passes"]),
        "steps": float(counters["steps"]), "train_seconds": counters["train_seconds"],
    }
