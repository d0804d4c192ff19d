"""What a 2-D toy of ``zeroflow trajectories`` is, and one optimizer's path on it.

A ``Problem`` is a start, one or more phases trained one after another (a fresh optimizer per
phase, as a trial builds one per task), the two losses every row records (``loss_old``,
``loss_new``) and how its figure is drawn. Each optimizer is built by ``zeroflow.optim.build``
exactly as a trial builds it; a forward-pass one draws its directions from its own seeded
``torch.Generator`` (the ``seed`` hyper-parameter). The problems: ``toy_infty`` (the authors'
toy, the default) and ``toy_bowls`` (two quadratic bowls, one after the other).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from zeroflow import optim

Loss = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Phase:
    """One stretch of training. ``loss``: what a forward-pass optimizer evaluates (and the
    closure returns); ``grad``: the gradient a first-order one steps on (None: autograd of
    ``loss``)."""

    loss: Loss
    grad: Loss | None = None


@dataclass(frozen=True)
class Problem:
    """A 2-D toy. ``old``/``new``: the losses recorded as ``loss_old``/``loss_new`` at every
    row; ``hparams(name, q, seed)``: what ``optim.build`` gets; ``frame(rows)``: the plot's
    (x0, x1, y0, y1); ``draw(ax, frame)``: contours and marked minima under the paths."""

    name: str
    start: tuple[float, float]
    phases: tuple[Phase, ...]
    old: Loss
    new: Loss
    hparams: Callable[[str, int, int], dict]
    default_steps: int
    dtype: torch.dtype
    frame: Callable[[list[dict]], tuple[float, float, float, float]]
    draw: Callable[..., None]
    summary: str


def accepted(name: str, values: dict) -> dict:
    """``values`` less the keys optimizer ``name`` does not take (FO ones take no q, mu, seed)."""
    keys = optim.accepted_hparams(name)
    return {k: v for k, v in values.items() if k in keys}


def _closure(opt, theta: torch.nn.Parameter, phase: Phase):
    if not opt.uses_backward:
        return lambda: phase.loss(theta)

    def first_order():
        opt.zero_grad(set_to_none=True)
        if phase.grad is None:
            loss = phase.loss(theta)
            loss.backward()
            return loss.detach()
        theta.grad = phase.grad(theta).detach()
        with torch.no_grad():
            return phase.loss(theta)

    return first_order


def run_path(problem: Problem, name: str, q: int = 1, steps: int | None = None, seed: int = 0,
             dtype: torch.dtype | None = None) -> list[dict]:
    """Optimizer ``name``'s path over every phase of ``problem``: rows (optimizer, q, task,
    step, x, y, loss_old, loss_new), step 0 being where a phase starts. ``dtype``: the
    point's (default: the problem's)."""
    steps = problem.default_steps if steps is None else steps
    theta = torch.nn.Parameter(torch.tensor(problem.start, dtype=dtype or problem.dtype))
    rows = []

    def record(task: int, step: int) -> None:
        with torch.no_grad():
            x = theta.detach().clone()
            rows.append({"optimizer": name, "q": q, "task": task, "step": step,
                         "x": float(x[0]), "y": float(x[1]),
                         "loss_old": float(problem.old(x)), "loss_new": float(problem.new(x))})

    for task, phase in enumerate(problem.phases):
        opt = optim.build(name, [theta], **problem.hparams(name, q, seed + 1000 * task))
        theta.requires_grad_(opt.uses_backward)
        closure = _closure(opt, theta, phase)
        record(task, 0)
        for step in range(1, steps + 1):
            opt.step(closure)
            record(task, step)
    return rows
