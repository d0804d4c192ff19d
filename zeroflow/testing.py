"""Contract tests for optimizers and methods, built-in or from a plugin, usable from pytest::

    from zeroflow.testing import check_method, check_optimizer, check_query_pool

    def test_my_optimizer():
        check_optimizer("my-zo", lr=0.01, q=2)

    def test_my_method(tmp_path):
        check_method("my-cil", tmp_path)

Each check raises ``AssertionError`` naming the contract that broke (docs/extending.md):

* ``check_optimizer``: ``step`` returns the loss and counts every closure call in
  ``forward_passes``; the parameters move; ``state_dict``/``load_state_dict`` round-trip (a
  restored optimizer continues exactly as the original); and for a forward-pass optimizer
  ``evaluate`` + ``apply`` equal ``step`` bit for bit, and so does the query workers' lock-step
  protocol with K = 2 replicas (seed shares evaluated apart, estimates merged, every replica
  applying the same (seed, scalar) pairs), run here in one process.
* ``check_method``: a tiny trial trains through every task, gives the same accuracy matrix when
  run again, and a trial interrupted after task 0 and resumed from its checkpoint ends bit for
  bit where the uninterrupted one does (matrix, forward passes, learner tensors).
* ``check_query_pool``: a tiny trial with ``query_workers=2`` on Ray equals the in-process
  trial bit for bit (it starts a local Ray session when none is running).

This module needs neither Ray nor MLflow to import.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from zeroflow import optim
from zeroflow.distributed.lockstep import share
from zeroflow.optim import Estimate
from zeroflow.trial import run_trial

TINY_TRIAL = dict(dataset="digits", batch_size=16, samples_per_class=20, init_cls=4,
                  increment=3, epochs=1, limit_batches=2)


class _Problem:
    """A seeded least-squares problem over a matrix and a vector (both tensor shapes a
    forward-pass optimizer meets): ``params()`` fresh copies, ``closure(opt, params)``."""

    def __init__(self, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(16, 6, generator=g)
        self.y = torch.randn(16, 4, generator=g)
        self.w0 = 0.5 * torch.randn(6, 4, generator=g)
        self.b0 = 0.5 * torch.randn(4, generator=g)

    def params(self) -> list[torch.nn.Parameter]:
        return [torch.nn.Parameter(self.w0.clone()), torch.nn.Parameter(self.b0.clone())]

    def closure(self, opt, params, calls: list | None = None):
        w, b = params
        for p in params:
            p.requires_grad_(opt.uses_backward)

        def closure():
            if calls is not None:
                calls.append(1)
            if opt.uses_backward:
                opt.zero_grad(set_to_none=True)
                loss = ((self.x @ w + b - self.y) ** 2).mean()
                loss.backward()
                return loss.detach()
            return ((self.x @ w + b - self.y) ** 2).mean()

        return closure


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x.detach(), y.detach()) for x, y in zip(a, b))


def _hparams(name: str, hparams: dict) -> dict:
    accepts = optim.accepted_hparams(name)
    defaults = {"lr": 0.01, "seed": 0, "q": 2}
    return {**{k: v for k, v in defaults.items() if k in accepts}, **hparams}


def check_optimizer(name: str, steps: int = 3, **hparams) -> None:
    """The optimizer contract of registered optimizer ``name`` built with ``hparams`` (lr,
    seed and q get small defaults where it accepts them)."""
    hparams = _hparams(name, hparams)
    problem = _Problem()
    params = problem.params()
    opt = optim.build(name, params, **hparams)
    calls: list = []
    closure = problem.closure(opt, params, calls)
    for _ in range(steps):
        loss = opt.step(closure)
        assert isinstance(loss, torch.Tensor) and loss.numel() == 1, (
            f"{name}: step(closure) must return the loss as a scalar tensor, got {loss!r}")
        assert torch.isfinite(loss), f"{name}: step returned a non-finite loss {loss}"
    assert opt.forward_passes == len(calls), (
        f"{name}: forward_passes={opt.forward_passes} but the closure ran {len(calls)} times")
    assert not _same(params, problem.params()), f"{name}: {steps} steps left the parameters as"
    _check_round_trip(name, hparams, problem, opt, params)
    if not opt.uses_backward:
        _check_halves(name, hparams, problem, steps)
        _check_lockstep(name, hparams, problem, steps)


def _check_round_trip(name, hparams, problem, opt, params) -> None:
    saved = copy.deepcopy(opt.state_dict())
    restored_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    restored = optim.build(name, restored_params, **hparams)
    restored.load_state_dict(copy.deepcopy(saved))
    assert restored.forward_passes == opt.forward_passes, (
        f"{name}: forward_passes did not survive state_dict/load_state_dict")
    for _ in range(2):
        a = opt.step(problem.closure(opt, params))
        b = restored.step(problem.closure(restored, restored_params))
        assert torch.equal(a, b), f"{name}: a restored optimizer's loss differs ({a} vs {b})"
    assert _same(params, restored_params), (
        f"{name}: after load_state_dict the optimizer does not continue exactly (state_dict must "
        "carry every counter, seed and buffer)")


def _check_halves(name, hparams, problem, steps) -> None:
    whole_params, half_params = problem.params(), problem.params()
    whole = optim.build(name, whole_params, **hparams)
    halves = optim.build(name, half_params, **hparams)
    for step in range(steps):
        loss = whole.step(problem.closure(whole, whole_params))
        closure = problem.closure(halves, half_params)
        estimate = halves.evaluate(closure, halves.direction_seeds())
        halves.apply(estimate, closure)
        assert float(loss) == float(torch.tensor(estimate.loss, dtype=loss.dtype)), (
            f"{name}: step {step}'s loss {float(loss)} != its evaluate half's {estimate.loss}")
        assert _same(whole_params, half_params), (
            f"{name}: evaluate + apply differ from step at step {step}")
    assert whole.forward_passes == halves.forward_passes, (
        f"{name}: evaluate + apply count {halves.forward_passes} passes, step "
        f"{whole.forward_passes}")


def _check_lockstep(name, hparams, problem, steps, workers: int = 2) -> None:
    """The query pool's protocol in one process: the trial's optimizer applies the merged
    estimate of the replicas' seed shares; each replica applies the same pairs."""
    ref_params, trial_params = problem.params(), problem.params()
    ref = optim.build(name, ref_params, **hparams)
    trial = optim.build(name, trial_params, **hparams)
    replicas = []
    for _ in range(workers):
        p = problem.params()
        replicas.append((optim.build(name, p, **hparams), p))
    for step in range(steps):
        ref.step(problem.closure(ref, ref_params))
        seeds = trial.direction_seeds()
        shares = [opt.evaluate(problem.closure(opt, p), share(seeds, k, workers))
                  for k, (opt, p) in enumerate(replicas) if share(seeds, k, workers)]
        estimate = Estimate.merge(shares)
        decision = trial.apply(estimate, problem.closure(trial, trial_params))
        for opt, p in replicas:
            opt.apply(Estimate(list(estimate.seeds), list(estimate.scalars), 0.0),
                      decision=decision)
            assert _same(p, trial_params), (
                f"{name}: a replica applying the trial's (seed, scalar) pairs differs from the "
                f"trial at step {step}: apply must depend on the pairs (and decision) only")
        assert _same(ref_params, trial_params), (
            f"{name}: K={workers} seed shares merged differ from step at step {step} "
            "(directions must depend on their seed alone)")


def _interrupted(config: dict, checkpoint_dir: Path, task: int = 0) -> None:
    class _Stop(Exception):
        pass

    def reporter(report):
        if report.task == task:
            raise _Stop

    try:
        run_trial(config, reporter, checkpoint_dir=checkpoint_dir)
    except _Stop:
        return
    raise AssertionError(f"the trial never reported task {task}")


def check_method(name: str, tmp_path, **keys) -> None:
    """The method contract of registered method ``name`` on a tiny digits trial (3 tasks;
    ``keys`` override ``TINY_TRIAL``, e.g. ``optimizer=``); ``tmp_path`` holds checkpoints."""
    config = {**TINY_TRIAL, "method": name, **keys}
    tmp_path = Path(tmp_path)
    straight = run_trial(config, checkpoint_dir=tmp_path / "straight")
    m = straight.matrix
    assert m.done == m.n_tasks and not np.isnan(m.seen).any(), (
        f"{name}: the trial did not evaluate every task: {m.seen}")
    assert np.all((m.seen >= 0) & (m.seen <= 100)), f"{name}: accuracies out of [0, 100]"
    again = run_trial(config)
    assert np.array_equal(m.a, again.matrix.a, equal_nan=True), (
        f"{name}: the same config and seed gave another accuracy matrix (seed every random "
        "draw with a torch.Generator from the config's seed)")
    _interrupted(config, tmp_path / "resumed")
    resumed = run_trial(config, checkpoint_dir=tmp_path / "resumed")
    assert np.array_equal(m.a, resumed.matrix.a, equal_nan=True), (
        f"{name}: a trial resumed after task 0 ends with another accuracy matrix "
        "(before_task must only build structure; trainable_state must hold all learned state)")
    assert straight.summary["forward_passes"] == resumed.summary["forward_passes"]
    a, b = (torch.load(tmp_path / d / "trial.pt", weights_only=True)["learner"]["tensors"]
            for d in ("straight", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (
        f"{name}: the resumed trial's learner tensors differ from the uninterrupted one's")


def check_query_pool(**keys) -> None:
    """A tiny trial (``TINY_TRIAL`` with ``keys``, e.g. ``optimizer=``, ``method=``,
    ``plugins=``) with ``query_workers=2`` on Ray equals the in-process one bit for bit."""
    config = {**TINY_TRIAL, **keys}
    local = run_trial({**config, "query_workers": 0})
    pooled = run_trial({**config, "query_workers": 2})
    assert np.array_equal(local.matrix.a, pooled.matrix.a, equal_nan=True), (
        f"query_workers=2 gave another accuracy matrix than in-process: {pooled.matrix.a} vs "
        f"{local.matrix.a}")
    assert local.summary["forward_passes"] == pooled.summary["forward_passes"]
