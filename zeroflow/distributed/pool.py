"""``QueryPool``: K Ray actors holding replicas of a trial, evaluating its SPSA directions.

Per ZO step the trial sends every actor one ``Request``: the previous step's (seed, scalar)
pairs to apply, the trainable tensors it changed outside ZO steps since (ZO-FC's first-order
head, a hybrid FO phase; usually nothing), the batch's sample indices and seeds, and the seeds
of that actor's share of the q directions. Actors answer with their share's scalars; the trial
merges them in seed order and runs the optimizer's apply half, and the actors repeat that apply
at the start of their next request (one Ray call per actor per step). No tensor of parameter
size travels per step.

Placement: inside a Ray Tune trial whose resources are a ``PlacementGroupFactory`` (one bundle
for the trial, then one per worker, as ``zeroflow sweep`` declares them), actor k is created in
bundle k + 1; elsewhere (``zeroflow run``) actors are placed freely, on a local Ray session the
pool starts itself when none is running.

Faults: an actor that died (``RayActorError``) is re-created in its bundle, re-synced from the
trial's current state, and its directions evaluated again: the step's result is unchanged. An
actor that cannot be re-created ends the trial with a ``QueryWorkerError``.
"""

from __future__ import annotations

import math
import os
import pickle
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

import ray
import torch
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from zeroflow.distributed.replica import (
    Replica,
    Reply,
    Request,
    Update,
    replica_state,
    trainable_checksum,
    trainable_tensors,
)
from zeroflow.errors import QueryWorkerError
from zeroflow.optim import Estimate
from zeroflow.optim.zo import step_loss

START_TIMEOUT_S = 600.0  # building a replica (model, data) and placing it
RECREATE_ATTEMPTS = 2
ACTOR_PREFIX = "zeroflow-query"

ReplicaActor = ray.remote(Replica)


def share(seeds: list[int], k: int, n_workers: int) -> list[int]:
    """Worker k's consecutive share of the seeds (sizes differ by at most one)."""
    q = len(seeds)
    return seeds[k * q // n_workers:(k + 1) * q // n_workers]


def worker_config(config) -> dict:
    """The trial config as a replica builds it: no pool of its own, no download (the data must
    already sit at the same absolute ``data_root`` on every node)."""
    out = config.to_dict()
    out.update(query_workers=0, download=False, data_root=os.path.abspath(config.data_root))
    return out


def _size(obj) -> int:
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] + ("..." if len(text) > 300 else "")


@dataclass
class PoolStats:
    """Traffic and time of the pool: per-step request/reply bytes (per worker, pickled as Ray
    sends them), pushed tensors; the time steps took in all (``step_seconds``), the part spent
    waiting on Ray calls (``ray_seconds``), and within that the slowest worker's own time
    (``worker_seconds``): Ray's overhead is ``ray_seconds - worker_seconds``."""

    steps: int = 0
    request_bytes: int = 0
    reply_bytes: int = 0
    messages: int = 0
    pushes: int = 0
    push_bytes: int = 0
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


class QueryPool:
    """K replicas of a trial on Ray actors (K = ``config.query_workers``).

    The trial calls ``start_task`` after building a task's optimizers, ``step`` in place of
    ``opt.step`` for forward-pass optimizers, ``changed`` after changing trainable tensors
    otherwise (first-order steps), ``finish_task`` after the task's last step, ``close`` at
    the end.
    """

    def __init__(self, config, log: Callable[[str], None] | None = None):
        self.n = int(config.query_workers)
        self.log = log or (lambda _msg: None)
        self._own_ray = False
        if not ray.is_initialized():
            n_cpus = max(os.cpu_count() or 1, math.ceil(self.n * config.worker_cpus))
            ray.init(num_cpus=n_cpus, include_dashboard=False, log_to_driver=False)
            self._own_ray = True
        self.config = worker_config(config)
        self.cpus, self.gpus = float(config.worker_cpus), float(config.worker_gpus)
        self.group_pg = ray.util.get_current_placement_group()
        self.uid = uuid.uuid4().hex[:8]
        self.generation = [0] * self.n
        self.stats = PoolStats()
        self.actors = [self._create(k) for k in range(self.n)]
        self.synced = [False] * self.n
        self.pending: list[Update] = []
        self.dirty: dict[int, torch.Tensor] = {}
        self.learner, self.steppers, self.task = None, [], -1

    # ------------------------------------------------------------------------- actors
    def _create(self, k: int):
        options = dict(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0,
                       name=f"{ACTOR_PREFIX}-{self.uid}-{k}-{self.generation[k]}")
        self.generation[k] += 1
        if self.group_pg is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=self.group_pg, placement_group_bundle_index=k + 1)
        threads = max(1, int(self.cpus))
        return ReplicaActor.options(**options).remote(self.config, threads)

    def _get(self, ref, k: int, timeout: float | None = None):
        try:
            return ray.get(ref, timeout=timeout)
        except RayTaskError as err:
            raise QueryWorkerError(f"query worker {k} failed: {_one_line(err.cause or err)}"
                                   ) from None

    def _full_sync(self, ks: list[int]) -> None:
        """Bring actors ``ks`` to the trial's exact current state (learner and optimizers)."""
        tensors = replica_state(self.learner)
        states = [None if s.main.uses_backward else s.main.state_dict() for s in self.steppers]
        refs = {k: self.actors[k].sync.remote(self.task, tensors, states) for k in ks}
        size = _size((tensors, states))
        for k, ref in refs.items():
            try:
                checksum = self._get(ref, k, START_TIMEOUT_S)
            except GetTimeoutError:
                raise QueryWorkerError(
                    f"query worker {k} did not start within {START_TIMEOUT_S:.0f} s: no free "
                    f"{self.cpus:g} CPU / {self.gpus:g} GPU for it (declare its bundle in the "
                    "trial's placement group, or lower worker_cpus/worker_gpus)") from None
            self._check(k, checksum)
            self.synced[k] = True
            self.stats.syncs += 1
            self.stats.sync_bytes += size

    def _check(self, k: int, checksum: str | None, expected: str | None = None) -> None:
        if checksum is None:
            return
        expected = expected or trainable_checksum(self.learner)
        if checksum != expected:
            raise QueryWorkerError(
                f"query worker {k}'s replica differs from the trial's (trainable-tensor checksum "
                "mismatch); check that every node has the same zeroflow version and data")

    def _recover(self, k: int, request: Request, err: BaseException) -> Reply:
        """Re-create actor k in its bundle, re-sync it, evaluate its request again."""
        self.log(f"query worker {k} died ({_one_line(err)}); re-creating it")
        last: BaseException = err
        for _ in range(RECREATE_ATTEMPTS):
            self.actors[k] = self._create(k)
            try:
                self._full_sync([k])
                reply = self._get(self.actors[k].step.remote(
                    replace(request, updates=(), push=None, checksum=False)), k, START_TIMEOUT_S)
            except (RayActorError, GetTimeoutError, QueryWorkerError) as again:
                last = again
                continue
            self.stats.recreated += 1
            self.log(f"query worker {k} re-created and re-synced; its {len(request.seeds)} "
                     "directions evaluated again")
            return reply
        raise QueryWorkerError(f"query worker {k} died and could not be re-created: "
                               f"{_one_line(last)}") from None

    def _call(self, requests: list[Request]) -> list[Reply]:
        """One call per actor, answered in worker order; a dead actor is recovered."""
        refs = [actor.step.remote(r) for actor, r in zip(self.actors, requests)]
        replies = []
        for k, (ref, request) in enumerate(zip(refs, requests)):
            try:
                replies.append(self._get(ref, k))
            except RayActorError as err:
                replies.append(self._recover(k, request, err))
        return replies

    # ------------------------------------------------------------------------- trial hooks
    def start_task(self, task: int, learner, steppers) -> None:
        """After the trial built task ``task``'s structure and optimizers: replicas do the same
        and load the task's trainable tensors (a fresh replica: the whole trainable state)."""
        self.learner, self.steppers, self.task = learner, steppers, task
        self.pending, self.dirty = [], {}
        fresh = [k for k in range(self.n) if not self.synced[k]]
        if fresh:
            self._full_sync(fresh)
        rest = [k for k in range(self.n) if self.synced[k] and k not in fresh]
        if not rest:
            return
        tensors = trainable_tensors(learner)
        refs = {k: self.actors[k].sync.remote(task, tensors, None) for k in rest}
        expected = trainable_checksum(learner)
        for k, ref in refs.items():
            try:
                self._check(k, self._get(ref, k), expected)
            except RayActorError as err:
                self.log(f"query worker {k} died ({_one_line(err)}); re-creating it")
                self.actors[k] = self._create(k)
                self._full_sync([k])
                self.stats.recreated += 1
        self.stats.pushes += 1
        self.stats.push_bytes += _size(tensors) * len(rest)

    def changed(self, params) -> None:
        """These trainable tensors changed outside a ZO step: push them before the next one."""
        for p in params:
            self.dirty[id(p)] = p

    def _take_push(self) -> dict[str, torch.Tensor] | None:
        if not self.dirty:
            return None
        names = {id(p): n for n, p in self.learner.named_parameters()}
        push = {names[i]: p.detach() for i, p in self.dirty.items()}
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
        self.stats.request_bytes += sum(_size(r) for r in requests)
        if push is not None:
            self.stats.pushes += 1
            self.stats.push_bytes += _size(push) * self.n
            requests = [replace(r, push=push) for r in requests]
        called = time.perf_counter()
        replies = self._call(requests)
        self.stats.ray_seconds += time.perf_counter() - called
        self.stats.worker_seconds += max(r.seconds for r in replies)
        self.stats.reply_bytes += sum(_size(r) for r in replies)
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
                     f"{sent:.0f} B sent, {received:.0f} B received; {st.pushes} pushes, "
                     f"{st.push_bytes} B in all; steps {st.step_seconds:.1f} s, in Ray calls "
                     f"{st.ray_seconds:.1f} s (workers busy {st.worker_seconds:.1f} s)")

    def close(self) -> None:
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001,S110 - already gone
                pass
        self.actors = []
        if self._own_ray:
            ray.shutdown()
