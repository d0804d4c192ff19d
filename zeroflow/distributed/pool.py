"""``QueryPool``: K Ray actors holding replicas of a trial, evaluating its SPSA directions.

The protocol (one ``Request`` per actor per step: seeds, indices and scalars, no parameter-sized
tensor) is ``zeroflow.distributed.lockstep``; this module carries it over Ray.

Placement: inside a Ray Tune trial whose resources are a ``PlacementGroupFactory`` (one bundle
for the trial, then one per worker, as ``zeroflow sweep`` declares them), actor k is created in
bundle k + 1; elsewhere (``zeroflow run``) actors are placed freely, on a local Ray session the
pool starts itself when none is running.

Faults: an actor that died (``RayActorError``, e.g. ``ActorDiedError``) is re-created in its
bundle, re-synced from the trial's current state, and its directions evaluated again: the
step's result is unchanged. An actor that cannot be re-created (or a replica that raises) ends
the trial with a one-line ``QueryWorkerError``; a sweep then retries from the last task
checkpoint.
"""

from __future__ import annotations

import math
import os
import uuid

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from zeroflow import plugins
from zeroflow.assembly import resolve_device
from zeroflow.distributed.lockstep import LockStepPool
from zeroflow.distributed.replica import Replica, Reply, Request, trainable_checksum
from zeroflow.errors import QueryWorkerError

START_TIMEOUT_S = 600.0  # building a replica (model, data) and placing it
RECREATE_ATTEMPTS = 2
ACTOR_PREFIX = "zeroflow-query"

ReplicaActor = ray.remote(Replica)


def worker_config(config) -> dict:
    """The trial config as a replica builds it: no pool of its own, no download (the data must
    already sit at the same absolute ``data_root`` on every node), and the trial's kind of
    device (directions drawn on a CPU and on a GPU differ, so replicas must match the trial)."""
    device = resolve_device(config.device).type
    if device == "cuda" and config.worker_gpus == 0:
        raise QueryWorkerError("the trial runs on a GPU, so its query workers must too: set "
                               "worker_gpus > 0 (fractions share a GPU, e.g. worker_gpus=0.25)")
    out = config.to_dict()
    out.update(query_workers=0, download=False, data_root=os.path.abspath(config.data_root),
               device=device)
    return out


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] + ("..." if len(text) > 300 else "")


class QueryPool(LockStepPool):
    """K replicas of a trial on Ray actors (K = ``config.query_workers``, each with
    ``worker_cpus`` CPUs, as many torch threads, and ``worker_gpus`` GPUs, fractions allowed)."""

    def __init__(self, config, log=None):
        super().__init__(int(config.query_workers), log)
        self.config = worker_config(config)
        self._own_ray = False
        if not ray.is_initialized():
            n_cpus = max(os.cpu_count() or 1, math.ceil(self.n * config.worker_cpus))
            ray.init(num_cpus=n_cpus, include_dashboard=False, log_to_driver=False,
                     runtime_env=plugins.runtime_env() or None)  # the trial's plugins
            self._own_ray = True
        self.cpus, self.gpus = float(config.worker_cpus), float(config.worker_gpus)
        self.placement_group = ray.util.get_current_placement_group()
        self.uid = uuid.uuid4().hex[:8]
        self.generation = [0] * self.n
        self.actors = [self._create(k) for k in range(self.n)]

    def _create(self, k: int):
        options = dict(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0,
                       name=f"{ACTOR_PREFIX}-{self.uid}-{k}-{self.generation[k]}")
        self.generation[k] += 1
        if self.placement_group is not None:
            options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                placement_group=self.placement_group, placement_group_bundle_index=k + 1)
        return ReplicaActor.options(**options).remote(self.config, max(1, int(self.cpus)))

    def _get(self, ref, k: int, timeout: float | None = None):
        try:
            return ray.get(ref, timeout=timeout)
        except RayTaskError as err:
            raise QueryWorkerError(f"query worker {k} failed: {_one_line(err.cause or err)}"
                                   ) from None
        except GetTimeoutError:
            raise QueryWorkerError(
                f"query worker {k} did not start within {START_TIMEOUT_S:.0f} s: no free "
                f"{self.cpus:g} CPU / {self.gpus:g} GPU for it (declare its bundle in the "
                "trial's placement group, or lower worker_cpus/worker_gpus)") from None

    def _sync(self, ks, task, tensors, states, recover: bool = True) -> dict:
        refs = {k: self.actors[k].sync.remote(task, tensors, states) for k in ks}
        out = {}
        for k, ref in refs.items():
            try:
                out[k] = self._get(ref, k, START_TIMEOUT_S)
            except RayActorError as err:
                if not recover:
                    raise
                self._recreate(k, err)  # synced to the trial's current state and checked
                out[k] = None
        return out

    def _recreate(self, k: int, err: BaseException) -> None:
        """Re-create actor k in its bundle and bring it to the trial's current state."""
        self.log(f"query worker {k} died ({_one_line(err)}); re-creating it")
        last: BaseException = err
        for _ in range(RECREATE_ATTEMPTS):
            self.actors[k] = self._create(k)
            tensors, states = self._full_state()
            try:
                checksum = self._sync([k], self.task, tensors, states, recover=False)[k]
            except RayActorError as again:
                last = again
                continue
            self._check(k, checksum, trainable_checksum(self.learner))
            self.stats.recreated += 1
            return
        raise QueryWorkerError(f"query worker {k} died and could not be re-created: "
                               f"{_one_line(last)}") from None

    def _call(self, requests: list[Request]) -> list[Reply]:
        refs = [actor.step.remote(r) for actor, r in zip(self.actors, requests)]
        replies = []
        for k, (ref, request) in enumerate(zip(refs, requests)):
            try:
                replies.append(self._get(ref, k))
                continue
            except RayActorError as err:
                self._recreate(k, err)
            again = Request(group=request.group, batch=request.batch, seeds=request.seeds)
            try:
                replies.append(self._get(self.actors[k].step.remote(again), k, START_TIMEOUT_S))
            except RayActorError as err:
                raise QueryWorkerError(f"query worker {k} died again: {_one_line(err)}"
                                       ) from None
            self.log(f"query worker {k} re-created and re-synced; its {len(request.seeds)} "
                     "directions evaluated again")
        return replies

    def close(self) -> None:
        for actor in self.actors:
            try:
                ray.kill(actor)
            except Exception:  # noqa: BLE001,S110 - already gone
                pass
        self.actors = []
        if self._own_ray:
            ray.shutdown()
