"""A query worker's replica of a trial, kept in lock-step by seeds and scalars alone.

A ``Replica`` builds the trial's learner from the trial config (same seeds, so the same model),
replays the learner's ``before_task`` structure changes, and builds the same forward-pass
optimizers per task. Per step it receives a ``Request``: the previous steps' updates as
(seed, scalar) pairs to apply, tensors the trial changed outside ZO steps (rare), and the batch
and direction seeds to evaluate; it rebuilds the batch from its own copy of the dataset and
returns the ``Estimate`` of its share. Plain Python and torch, no Ray. The trial side of the
protocol is ``zeroflow.distributed.lockstep``; Ray actors wrap a replica
(``zeroflow.distributed.pool``), and so can plain processes (``benchmarks/query_scaling.py``).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import torch

from zeroflow.assembly import build_learner, resolve_device
from zeroflow.batches import make_batch
from zeroflow.config import make_config
from zeroflow.optim import Estimate
from zeroflow.steppers import task_steppers, training_closure


@dataclass(frozen=True)
class Update:
    """One applied step of group ``group``'s optimizer: what a replica needs to repeat it.
    decision: Conserve's kept candidate; lrs: the optimizer's per-group learning rates."""

    group: int
    seeds: tuple[int, ...]
    scalars: tuple[float, ...]
    decision: float
    lrs: tuple[float, ...]


@dataclass(frozen=True)
class Request:
    """What the trial sends a replica per step (all parts optional, applied in this order):
    updates to apply, tensors to load (name → tensor), then the seeds to evaluate on ``batch``
    (a ``zeroflow.batches.BatchSpec``) with group ``group``'s optimizer."""

    updates: tuple[Update, ...] = ()
    push: dict[str, torch.Tensor] | None = None
    group: int = -1
    batch: object | None = None
    seeds: tuple[int, ...] = ()
    checksum: bool = False


@dataclass(frozen=True)
class Reply:
    """A replica's answer: its share's estimate (None when it had no seeds), the forward passes
    it made, the checksum of its trainable tensors when asked (or after a push), and the
    seconds the request took in the replica (to tell Ray's overhead from the work)."""

    estimate: Estimate | None
    passes: int = 0
    checksum: str | None = None
    seconds: float = 0.0


def to_cpu(tree):
    """``tree`` (dicts, lists, tuples of tensors and plain values) with its tensors copied to
    the CPU, as messages carry them: a replica's device need not be the trial's, and a copy
    never aliases the trial's tensors (a pipe would share CPU storage with the receiver)."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().to("cpu", copy=True)
    if isinstance(tree, dict):
        return {k: to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_cpu(v) for v in tree)
    return tree


def trainable_checksum(learner) -> str:
    """SHA-256 over the exact bytes of the tensors the learner trains in its current task."""
    digest = hashlib.sha256()
    for group in learner.param_groups():
        for p in group.params:
            digest.update(p.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def trainable_tensors(learner) -> dict[str, torch.Tensor]:
    """The tensors of the learner's parameter groups, by name (what is pushed at a task start);
    a group may hold a buffer (EASE's prototypes with ``ease_perturb_prototypes``)."""
    names = {id(p): n for n, p in [*learner.named_parameters(), *learner.named_buffers()]}
    return {names[id(p)]: p.detach() for g in learner.param_groups() for p in g.params}


def replica_state(learner) -> dict[str, torch.Tensor]:
    """Everything a fresh replica needs of the trial's learner: its trainable state (adapters of
    earlier tasks, prototypes, ...) and the tensors of the current groups (EASE's proxy head
    is not in the former)."""
    return {**learner.trainable_state()["tensors"], **trainable_tensors(learner)}


@dataclass
class Replica:
    """The learner and forward-pass optimizers of one trial, rebuilt from its config.

    config: the trial config (a dict); threads: torch's intra-op threads in this process.
    """

    config: dict
    threads: int | None = None
    task: int = -1
    steppers: list = field(default_factory=list)

    def __post_init__(self):
        if self.threads:
            torch.set_num_threads(self.threads)
        self.trial_config = make_config(self.config)
        self.device = resolve_device(self.trial_config.device)
        self.learner, self.scenario = build_learner(self.trial_config, self.device)
        self.learner.to(self.device)
        self._train_set, self._epoch = None, None

    def sync(self, task: int, tensors: dict[str, torch.Tensor],
             optimizer_states: list | None = None) -> str:
        """Enter ``task`` (replaying ``before_task`` and building its optimizers) if not there
        yet, load ``tensors`` and, if given, the optimizers' states; returns the checksum."""
        if task != self.task:
            self._enter(task)
        self.load(tensors)
        for stepper, state in zip(self.steppers, optimizer_states or []):
            if state is not None:  # a copy: a received tensor may share memory with others
                stepper.main.load_state_dict(to_cpu(state))
        return trainable_checksum(self.learner)

    def _enter(self, task: int) -> None:
        for t in range(self.learner.task + 1, task + 1):
            self.learner.before_task(t)
        self.learner.to(self.device)
        self.learner.train()
        epochs = self.learner.epochs(task)
        self.steppers = task_steppers(self.learner, self.trial_config, task, epochs)
        self.task = task
        self._train_set, self._epoch = self.scenario.train_set(task), None

    @torch.no_grad()
    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        own = {**dict(self.learner.named_parameters()), **dict(self.learner.named_buffers())}
        missing = sorted(set(tensors) - set(own))
        if missing:
            raise RuntimeError(f"replica has no tensor(s) {', '.join(missing)}: its learner "
                               "does not match the trial's")
        for name, value in tensors.items():
            own[name].copy_(value)

    def step(self, request: Request) -> Reply:
        """Apply the updates, load the pushed tensors, evaluate the seeds (see ``Request``)."""
        start = time.perf_counter()
        for update in request.updates:
            self.apply(update)
        if request.push:
            self.load(request.push)
        checksum = None
        if request.checksum or request.push:
            checksum = trainable_checksum(self.learner)
        if not request.seeds:
            return Reply(None, 0, checksum, time.perf_counter() - start)
        spec = request.batch
        x, y = self.batch(spec)
        opt = self.steppers[request.group].main
        before = opt.forward_passes
        estimate = opt.evaluate(training_closure(self.learner, opt, x, y, spec.dropout_seed),
                                list(request.seeds))
        return Reply(estimate, opt.forward_passes - before, checksum, time.perf_counter() - start)

    def batch(self, spec) -> tuple[torch.Tensor, torch.Tensor]:
        """The training batch a ``zeroflow.batches.BatchSpec`` names, rebuilt from this
        replica's own copy of the data (the trial's tensors, bit for bit)."""
        if spec.task != self.task:
            raise RuntimeError(f"replica is in task {self.task}, asked for task {spec.task}")
        if self._epoch != (spec.epoch, spec.aug_seed):
            self._train_set.set_epoch(spec.aug_seed, spec.epoch)
            self._epoch = (spec.epoch, spec.aug_seed)
        return make_batch(self._train_set, spec.indices, self.device)

    def apply(self, update: Update) -> None:
        """Repeat the trial's apply half: same (seed, scalar) pairs, same order, same lr."""
        opt = self.steppers[update.group].main
        for group, lr in zip(opt.param_groups, update.lrs):
            group["lr"] = lr
        opt.apply(Estimate(list(update.seeds), list(update.scalars), 0.0),
                  decision=update.decision)
