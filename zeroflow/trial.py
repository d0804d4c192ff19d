"""``run_trial(config, reporter)``: the one training loop of every method and optimizer.

Per task: the learner grows its structure, the loop builds one optimizer per parameter group
(the configured one, or a pinned one such as ZO-FC's first-order head), trains for the learner's
epochs with a cosine LR schedule stepped per epoch (it reaches forward-pass optimizers too),
lets the learner finish the task (prototypes), evaluates on every seen class, writes a
checkpoint, and reports. Everything random comes from generators seeded by
(seed, task, epoch, batch), so a trial resumed from a task checkpoint ends bit for bit where an
uninterrupted one does (on CPU).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from zeroflow.assembly import build_learner, resolve_device
from zeroflow.batches import BatchSpec, batch_chunks, batches, epoch_order
from zeroflow.checkpoint import check_resumable, load_checkpoint, save_checkpoint, task_checkpoint
from zeroflow.config import TrialConfig, make_config
from zeroflow.errors import DivergenceError
from zeroflow.evaluation import evaluate, task_of_label
from zeroflow.metrics import AccuracyMatrix, PeakMemory, Stopwatch
from zeroflow.seeding import (
    AUG_STREAM,
    DROPOUT_STREAM,
    derive_seed,
)
from zeroflow.steppers import task_steppers, training_closure


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
) -> TrialResult:
    """Train and evaluate one trial; returns the accuracy matrix and summary metrics.

    checkpoint_dir: where a checkpoint is written after every task (and resumed from, if one is
        already there). resume_from: a checkpoint directory to start from instead.
    reporter: called after every task with a ``TaskReport``. log: progress lines.
    on_epoch: called with (task, epoch) before each epoch trains. on_step: called with a
        ``StepEvent`` after each training step (a progress bar; it must not touch the model).
    """
    config = make_config(config)
    log = log or (lambda _msg: None)
    device = resolve_device(config.device)
    learner, scenario = build_learner(config, device)
    learner.to(device)
    n_tasks = scenario.n_tasks
    matrix = AccuracyMatrix(n_tasks)
    memory = PeakMemory(device)
    counters = {"forward_passes": 0, "steps": 0, "train_seconds": 0.0,
                "probe_forward_passes": 0}
    history: list[dict[str, float]] = []
    series_history: list[dict] = []
    probes = None
    if config.track_task_losses or config.sharpness:
        from zeroflow.analysis.probes import TaskProbes

        probes = TaskProbes(scenario, config.seed, device)
    labels = task_of_label(scenario, device)

    start = 0
    source = resume_from if resume_from is not None else checkpoint_dir
    ckpt = load_checkpoint(source) if source is not None else None
    if ckpt is not None:
        check_resumable(ckpt, config)
        for t in range(ckpt["task"] + 1):
            learner.before_task(t)
        learner.to(device)
        learner.load_trainable_state(ckpt["learner"])
        matrix.load_state_dict(ckpt["matrix"])
        counters.update(ckpt["counters"])
        history = list(ckpt["history"])
        series_history = list(ckpt.get("series", [{} for _ in history]))
        start = ckpt["task"] + 1
        log(f"resumed after task {ckpt['task'] + 1}/{n_tasks} from {source}")

    pool = None
    if config.query_workers > 0:
        from zeroflow.distributed import QueryPool

        pool = QueryPool(config, log=log)
    try:
        for t in range(start, n_tasks):
            task_watch, task_steps, series = Stopwatch(), 0, {}
            learner.before_task(t)
            learner.to(device)
            epochs = learner.epochs(t)
            steppers = task_steppers(learner, config, t, epochs)
            train_set = scenario.train_set(t)
            aug_seed = derive_seed(config.seed, AUG_STREAM, t)
            if pool is not None:
                pool.start_task(t, learner, steppers)
            passes_before = sum(s.forward_passes for s in steppers)
            learner.train()
            for epoch in range(epochs):
                if on_epoch is not None:
                    on_epoch(t, epoch)
                epoch_watch = Stopwatch()
                active = [s.active(epoch) for s in steppers]
                for stepper, opt in zip(steppers, active):
                    for p in stepper.group.params:
                        p.requires_grad_(opt.uses_backward)
                        p.grad = None
                train_set.set_epoch(aug_seed, epoch)
                order = epoch_order(config.seed, t, epoch, len(train_set))
                chunks = batch_chunks(order, config.batch_size, config.limit_batches)
                loss_sum, n_steps = 0.0, 0
                for b, (x, y) in enumerate(batches(train_set, order, config.batch_size, device,
                                                   config.num_workers, config.limit_batches)):
                    dropout_seed = derive_seed(config.seed, DROPOUT_STREAM, t, epoch, b)
                    for stepper, opt in zip(steppers, active):
                        closure = training_closure(learner, opt, x, y, dropout_seed)
                        if pool is not None and not opt.uses_backward:
                            loss = pool.step(stepper.index, opt, closure, BatchSpec(
                                t, epoch, aug_seed, chunks[b], dropout_seed))
                        else:
                            loss = opt.step(closure)
                            if pool is not None:  # changed outside ZO: pushed before next use
                                pool.changed(stepper.group.params)
                        loss_value = float(loss.detach())
                        if not math.isfinite(loss_value):
                            raise DivergenceError(
                                f"loss became {loss_value} at task {t}, epoch {epoch}, step {b} "
                                f"({stepper.name}, lr={opt.param_groups[0]['lr']:.3g}"
                                + (f", mu={config.mu:g}" if not opt.uses_backward else "")
                                + "); lower lr" + (" or mu" if not opt.uses_backward else "")
                            )
                    loss_sum += loss_value
                    n_steps += 1
                    step = counters["steps"] + n_steps
                    if config.track_task_losses and step % config.track_task_losses == 0:
                        for j, value in probes.losses(learner, t + 1).items():
                            series.setdefault(f"task_loss_{j}", []).append([step, value])
                    if on_step is not None:
                        on_step(StepEvent(t, n_tasks, epoch, epochs, b, len(chunks),
                                          loss_value))
                for stepper in steppers:
                    stepper.epoch_end()
                counters["steps"] += n_steps
                task_steps += n_steps
                log(f"task {t + 1}/{n_tasks} epoch {epoch + 1}/{epochs}: "
                    f"loss {loss_sum / max(n_steps, 1):.4f}, {n_steps} steps, "
                    f"{epoch_watch.seconds:.1f}s")
            for stepper in steppers:
                for p in stepper.group.params:
                    p.requires_grad_(False)
                    p.grad = None
            if pool is not None:
                pool.finish_task()
            train_seconds = task_watch.seconds
            task_passes = sum(s.forward_passes for s in steppers) - passes_before
            counters["forward_passes"] += task_passes
            counters["train_seconds"] += train_seconds

            learner.eval()
            eval_set = scenario.train_set(t, augment=False)
            learner.after_task(t, lambda eval_set=eval_set: batches(
                eval_set, range(len(eval_set)), config.eval_batch_size, device, config.num_workers))
            per_task, seen = evaluate(learner, scenario, t, labels, config, device)
            matrix.record(t, per_task, seen)
            analysis = {}
            if config.sharpness:
                from zeroflow.analysis import sharpness

                analysis, passes = sharpness.measure(
                    learner, [p for s in steppers for p in s.group.params],
                    probes.seen_batches(t + 1), config.seed, t, config.sharpness_hessian)
                probes.forward_passes += passes
            if probes is not None:  # counted apart from training's forward passes
                counters["probe_forward_passes"] += probes.forward_passes
                probes.forward_passes = 0
                analysis["probe_forward_passes"] = float(counters["probe_forward_passes"])
            metrics = {
                "accuracy": seen, "avg_accuracy": matrix.avg(), "forgetting": matrix.forgetting(),
                **{f"accuracy_task_{j}": a for j, a in enumerate(per_task)},
                "peak_memory_mb": memory.peak_mb(),
                "forward_passes": float(counters["forward_passes"]),
                "forward_passes_task": float(task_passes),
                "steps": float(counters["steps"]),
                "time_task_s": task_watch.seconds, "train_time_task_s": train_seconds,
                "time_per_step_s": train_seconds / task_steps if task_steps else 0.0,
                **analysis,
            }
            history.append(metrics)
            series_history.append(series)
            log(f"task {t + 1}/{n_tasks} done: accuracy {seen:.2f}% on {scenario.classes_seen(t)} "
                f"classes, forgetting {matrix.forgetting():.2f}")
            written = None
            if checkpoint_dir is not None:
                save_checkpoint(Path(checkpoint_dir), task_checkpoint(
                    config, t, learner, steppers, matrix, counters, history, series_history))
                written = str(checkpoint_dir)
            if reporter is not None:
                reporter(TaskReport(t, n_tasks, metrics, written, start, memory.label, series))
    finally:
        if pool is not None:
            pool.close()

    summary = summarize(matrix, counters, memory)
    stats = dataclasses.asdict(pool.stats) if pool is not None else None
    return TrialResult(config, matrix, summary, history, memory.label, stats, series_history)


def summarize(matrix: AccuracyMatrix, counters: dict, memory: PeakMemory) -> dict[str, float]:
    return {
        "avg": matrix.avg(), "last": matrix.last(), "forgetting": matrix.forgetting(),
        "peak_memory_mb": memory.peak_mb(), "forward_passes": float(counters["forward_passes"]),
        "steps": float(counters["steps"]), "train_seconds": counters["train_seconds"],
    }


# benchmarks/ import the training closure by its old name; its home is zeroflow.steppers
_closure = training_closure
