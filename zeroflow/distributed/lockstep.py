"""The lock-step protocol between a trial and K replicas, whatever carries the messages.

Per ZO step the trial sends every replica one ``Request``: the previous step's (seed, scalar)
pairs to apply, the trainable tensors it changed outside ZO steps since (ZO-FC's first-order
head, a hybrid FO phase; usually nothing), the batch's sample indices and seeds, and the seeds
of that replica's share of the q directions. Replicas answer with their share's scalars; the
trial merges them in seed order and runs the optimizer's apply half, and the replicas repeat
that apply at the start of their next request (one message per replica per step). No tensor of
parameter size travels per step. ``LockStepPool`` is that protocol; a subclass carries the
messages (``zeroflow.distributed.pool.QueryPool``: Ray actors; the ``--processes`` mode of
``benchmarks/query_scaling.py``: pipes). No Ray here.
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass

import torch

from zeroflow.distributed.replica import (
    Reply,
    Request,
    Update,
    replica_state,
    to_cpu,
    trainable_checksum,
    trainable_tensors,
)
from zeroflow.errors import QueryWorkerError
from zeroflow.optim import Estimate
from zeroflow.optim.zo import step_loss


def share(seeds: list[int], k: int, n_workers: int) -> list[int]:
    """Worker k's consecutive share of the seeds (sizes differ by at most one)."""
    q = len(seeds)
    return seeds[k * q // n_workers:(k + 1) * q // n_workers]


def message_size(obj) -> int:
    """Bytes of ``obj`` pickled (what a message costs on the wire, near enough for Ray too)."""
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


@dataclass
class PoolStats:
    """Traffic and time of a pool: per-step request/reply bytes (per worker, pickled); tensors
    pushed at task starts (``task_push*``), pushed within a task because the trial changed them
    outside ZO steps (``push*``), and whole states synced; all summed over workers. The time
    steps took in all (``step_seconds``), the part spent waiting for replies
    (``ray_seconds``), and within that the slowest worker's own time (``worker_seconds``):
    transport overhead is ``ray_seconds - worker_seconds``."""

    steps: int = 0
    request_bytes: int = 0
    reply_bytes: int = 0
    messages: int = 0
    pushes: int = 0
    push_bytes: int = 0
    task_pushes: int = 0
    task_push_bytes: int = 0
    syncs: int = 0
    sync_bytes: int = 0
    recreated: int = 0
    ray_seconds: float = 0.0
    worker_seconds: float = 0.0
    step_seconds: float = 0.0

    def per_step(self) -> tuple[float, float]:
        """Mean (request, reply) bytes of one worker's message, pushes excluded."""
        n = max(self.messages, 1)
        return self.request_bytes / n, self.reply_bytes / n


class LockStepPool:
    """K replicas of a trial kept in lock-step (see the module docstring).

    The trial calls ``start_task`` after building a task's optimizers, ``train_step`` for
    every optimizer step (``step`` for a forward-pass optimizer, ``changed`` after a first-order
    one changed trainable tensors), ``finish_task`` after the task's last step, ``close`` at
    the end. Subclasses implement ``_sync`` and ``_call`` (and may recover lost workers there).
    """

    def __init__(self, n: int, log=None):
        self.n = n
        self.log = log or (lambda _msg: None)
        self.stats = PoolStats()
        self.synced = [False] * n
        self.pending: list[Update] = []
        self.dirty: dict[int, torch.Tensor] = {}
        self.learner, self.steppers, self.task = None, [], -1

    # ------------------------------------------------------------------------- transport
    def _sync(self, ks: list[int], task: int, tensors: dict, states: list | None) -> dict:
        """Send ``Replica.sync(task, tensors, states)`` to workers ``ks``; {k: checksum}."""
        raise NotImplementedError

    def _call(self, requests: list[Request]) -> list[Reply]:
        """Send request k to worker k; the replies in worker order."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the workers."""

    # ------------------------------------------------------------------------- state
    def _full_state(self) -> tuple[dict, list]:
        """The trial's learner tensors and forward-pass optimizer states, on the CPU."""
        tensors = to_cpu(replica_state(self.learner))
        states = [None if s.main.uses_backward else to_cpu(s.main.state_dict())
                  for s in self.steppers]
        return tensors, states

    def _full_sync(self, ks: list[int]) -> None:
        """Bring workers ``ks`` to the trial's exact current state (learner and optimizers)."""
        tensors, states = self._full_state()
        checksums = self._sync(ks, self.task, tensors, states)
        expected = trainable_checksum(self.learner)
        for k in ks:
            self._check(k, checksums[k], expected)
            self.synced[k] = True
        self.stats.syncs += len(ks)
        self.stats.sync_bytes += message_size((tensors, states)) * len(ks)

    def _check(self, k: int, checksum: str | None, expected: str) -> None:
        if checksum is not None and checksum != expected:
            raise QueryWorkerError(
                f"query worker {k}'s replica differs from the trial's (trainable-tensor checksum "
                "mismatch); check that every node has the same zeroflow version and data")

    # ------------------------------------------------------------------------- trial hooks
    def start_task(self, task: int, learner, steppers) -> None:
        """After the trial built task ``task``'s structure and optimizers: replicas do the same
        and load the task's trainable tensors (a fresh replica: the whole trainable state)."""
        self.learner, self.steppers, self.task = learner, steppers, task
        self.pending, self.dirty = [], {}
        fresh = [k for k in range(self.n) if not self.synced[k]]
        if fresh:
            self._full_sync(fresh)
        rest = [k for k in range(self.n) if k not in fresh]
        if not rest:
            return
        tensors = to_cpu(trainable_tensors(learner))
        checksums = self._sync(rest, task, tensors, None)
        expected = trainable_checksum(learner)
        for k in rest:
            self._check(k, checksums[k], expected)
        self.stats.task_pushes += len(rest)
        self.stats.task_push_bytes += message_size(tensors) * len(rest)

    def changed(self, params) -> None:
        """These trainable tensors changed outside a ZO step: push them before the next one."""
        for p in params:
            self.dirty[id(p)] = p

    def _take_push(self) -> dict[str, torch.Tensor] | None:
        if not self.dirty:
            return None
        names = {id(p): n for n, p in self.learner.named_parameters()}
        push = to_cpu({names[i]: p for i, p in self.dirty.items()})
        self.dirty = {}
        return push

    def step(self, group: int, opt, closure, batch) -> torch.Tensor:
        """One step of forward-pass optimizer ``opt`` (the trial's group ``group``) with its
        directions evaluated by the replicas; returns what ``opt.step(closure)`` would."""
        start = time.perf_counter()
        seeds = opt.direction_seeds()
        push = self._take_push()
        updates, self.pending = tuple(self.pending), []
        requests = [Request(updates, None, group, batch, tuple(share(seeds, k, self.n)))
                    for k in range(self.n)]
        self.stats.steps += 1
        self.stats.messages += self.n
        self.stats.request_bytes += sum(message_size(r) for r in requests)
        if push is not None:
            self.stats.pushes += self.n
            self.stats.push_bytes += message_size(push) * self.n
            requests = [Request(r.updates, push, r.group, r.batch, r.seeds) for r in requests]
        called = time.perf_counter()
        replies = self._call(requests)
        self.stats.ray_seconds += time.perf_counter() - called
        self.stats.worker_seconds += max(r.seconds for r in replies)
        self.stats.reply_bytes += sum(message_size(r) for r in replies)
        if push is not None:
            expected = trainable_checksum(self.learner)
            for k, reply in enumerate(replies):
                self._check(k, reply.checksum, expected)
        estimate = Estimate.merge([r.estimate for r in replies if r.estimate is not None])
        opt.count_passes(sum(r.passes for r in replies))
        decision = opt.apply(estimate, closure)
        self.pending.append(Update(group, tuple(seeds), tuple(estimate.scalars), decision,
                                   tuple(g["lr"] for g in opt.param_groups)))
        self.stats.step_seconds += time.perf_counter() - start
        return step_loss(estimate)

    def train_step(self, stepper, opt, closure, batch) -> torch.Tensor:
        """The loop's step of ``stepper``'s active optimizer ``opt`` (``LocalStepping``'s
        interface): a forward-pass one through the replicas, a first-order one here (its
        tensors then pushed before the next ZO step)."""
        if opt.uses_backward:
            loss = opt.step(closure)
            self.changed(stepper.group.params)
            return loss
        return self.step(stepper.index, opt, closure, batch)

    def finish_task(self) -> None:
        """After the task's last step: replicas apply it, and their checksums are compared."""
        push = self._take_push()
        updates, self.pending = tuple(self.pending), []
        replies = self._call([Request(updates, push, checksum=True)] * self.n)
        expected = trainable_checksum(self.learner)
        for k, reply in enumerate(replies):
            self._check(k, reply.checksum, expected)
        st = self.stats
        if st.steps:
            sent, received = st.per_step()
            self.log(f"query pool: {st.steps} ZO steps on {self.n} workers; per worker per step "
                     f"{sent:.0f} B sent, {received:.0f} B received; pushed (all workers) "
                     f"{st.task_push_bytes} B at task starts, {st.push_bytes} B in {st.pushes} "
                     f"in-task pushes; steps {st.step_seconds:.1f} s, waiting for "
                     f"workers {st.ray_seconds:.1f} s (their own work {st.worker_seconds:.1f} s)")
