"""Flatness of a solution: perturbation sharpness (forward passes only) and the top Hessian
eigenvalue (Hessian-vector products, where backprop is allowed for the analysis).

Perturbation sharpness at relative radius r: every trained tensor p gets Gaussian noise of
per-coordinate scale ``sigma_p = r * ||p|| / sqrt(numel(p))`` (so E||delta_p||^2 = r^2 ||p||^2:
the same relative size for an adapter and a head of different scales), and the measure is the
mean of L(theta + delta) - L(theta) over antithetic pairs (delta, -delta). For a loss that is
locally quadratic with Hessian H its expectation is (1/2) sum_p sigma_p^2 tr(H_pp), and the
antithetic pair cancels the gradient term exactly. Tensors are restored by copy, bit for bit;
noise comes from a seeded CPU ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from zeroflow.analysis.probes import TaskProbes, prediction_loss
from zeroflow.observers import Observer, TrialState
from zeroflow.seeding import SHARPNESS_STREAM, derive_seed

DEFAULT_RADIUS = 0.01
RADII = (0.005, 0.01, 0.05)  # relative radii measured; ``sharpness`` is DEFAULT_RADIUS's
SAMPLES = 8  # antithetic pairs per radius
HESSIAN_ITERATIONS = 50


def tensor_scales(params: Sequence[torch.Tensor], radius: float) -> list[float]:
    """Per-coordinate noise scale of each tensor at relative radius ``radius``."""
    return [radius * float(p.detach().norm()) / math.sqrt(max(p.numel(), 1)) for p in params]


@torch.no_grad()
def perturbation_sharpness(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor],
                           radius: float, samples: int, generator: torch.Generator,
                           base: float | None = None) -> tuple[float, int]:
    """(mean loss increase over ``samples`` antithetic pairs, forward passes made).

    loss_fn: zero-argument, returns the scalar loss at the current values of ``params``."""
    if samples < 1:
        raise ValueError("samples must be >= 1")
    passes = 0
    if base is None:
        base, passes = float(loss_fn()), 1
    saved = [p.detach().clone() for p in params]
    sigmas = tensor_scales(saved, radius)
    total = 0.0
    try:
        for _ in range(samples):
            noise = [torch.randn(s.shape, generator=generator, dtype=torch.float32)
                     .to(device=s.device, dtype=s.dtype) * sigma
                     for s, sigma in zip(saved, sigmas)]
            for sign in (1.0, -1.0):
                for p, s, n in zip(params, saved, noise):
                    p.copy_(s + sign * n)
                total += float(loss_fn()) - base
                passes += 1
    finally:
        for p, s in zip(params, saved):
            p.copy_(s)
    return total / (2 * samples), passes


def hessian_top_eigenvalue(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor],
                           generator: torch.Generator, iterations: int = HESSIAN_ITERATIONS,
                           tol: float = 1e-4) -> float:
    """The Hessian's eigenvalue of largest magnitude (the top one at a minimum, where H is
    positive semi-definite) by power iteration on Hessian-vector products (double backward).
    One forward pass; ``requires_grad`` flags and ``.grad`` are left as they were. Attention
    runs on PyTorch's math kernel: the fused CPU/flash kernels have no double backward."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    flags = [p.requires_grad for p in params]
    grads_before = [p.grad for p in params]
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):
            loss = loss_fn()
            grads = torch.autograd.grad(loss, list(params), create_graph=True, allow_unused=True)
            # a tensor the loss does not use (EASE's proxy head under prediction) has a zero
            # Hessian block: leave it out
            used = [(p, g) for p, g in zip(params, grads) if g is not None]
            if not used:
                return 0.0
            live, grads = [p for p, _ in used], [g for _, g in used]
            v = [torch.randn(p.shape, generator=generator, dtype=torch.float32)
                 .to(device=p.device, dtype=p.dtype) for p in live]
            eig = 0.0
            for i in range(iterations):
                norm = math.sqrt(sum(float((t * t).sum()) for t in v))
                if norm == 0.0:
                    return 0.0
                v = [t / norm for t in v]
                dot = sum((g * t).sum() for g, t in zip(grads, v))
                hv = torch.autograd.grad(dot, live, retain_graph=True, allow_unused=True)
                hv = [torch.zeros_like(p) if h is None else h for p, h in zip(live, hv)]
                new = float(sum((h * t).sum() for h, t in zip(hv, v)))
                done = i > 0 and abs(new - eig) <= tol * abs(new)
                eig, v = new, [h.detach() for h in hv]
                if done:
                    break
            return eig
    finally:
        for p, flag, grad in zip(params, flags, grads_before):
            p.requires_grad_(flag)
            p.grad = grad


def measure(learner, params: Sequence[torch.Tensor], batches, seed: int, task: int,
            hessian: bool = False) -> tuple[dict[str, float], int]:
    """The sharpness metrics of ``learner`` after ``task`` on ``batches`` (the seen tasks' probe
    batches) over the trained tensors ``params``: ``sharpness`` (DEFAULT_RADIUS),
    ``sharpness_r<radius>`` (the other RADII), ``sharpness_base_loss`` (the unperturbed loss)
    and, with ``hessian``, ``hessian_top_eig``. Returns (metrics, forward passes); eval
    mode, restored after."""
    params = [p for p in params if p.numel()]
    if not params or not batches:
        return {}, 0
    n = sum(len(y) for _, y in batches)

    def loss_fn():
        return sum(prediction_loss(learner, x, y) * (len(y) / n) for x, y in batches)

    was_training = learner.training
    learner.eval()
    try:
        gen = torch.Generator().manual_seed(derive_seed(seed, SHARPNESS_STREAM, task))
        with torch.no_grad():
            base = float(loss_fn())
        passes = len(batches)
        metrics = {"sharpness_base_loss": base}
        for radius in RADII:
            value, used = perturbation_sharpness(loss_fn, params, radius, SAMPLES, gen, base)
            passes += used * len(batches)
            name = "sharpness" if radius == DEFAULT_RADIUS else f"sharpness_r{radius:g}"
            metrics[name] = value
        if hessian:
            metrics["hessian_top_eig"] = hessian_top_eigenvalue(loss_fn, params, gen)
            passes += len(batches)
        return metrics, passes
    finally:
        learner.train(was_training)


def measured_tensors(steppers, scope: str = "all") -> list[torch.Tensor]:
    """The tensors sharpness perturbs: every trained one (``all``), or those of the groups the
    trial's configured optimizer steps (``zo``: ZO-FC's adapter, not its first-order head;
    the same tensors in a first-order trial, so its row compares)."""
    return [p for s in steppers if scope == "all" or s.group.optimizer is None
            for p in s.group.params]


class Sharpness(Observer):
    """``sharpness: true``: after each task is evaluated, ``measure`` over the task's trained
    tensors (``sharpness_scope``) on the seen tasks' probe batches; its forward passes go to
    the probes' count."""

    def __init__(self, probes: TaskProbes, hessian: bool = False):
        self.probes, self.hessian = probes, hessian

    def after_eval(self, state: TrialState) -> dict[str, float]:
        metrics, passes = measure(
            state.learner, measured_tensors(state.steppers, state.config.sharpness_scope),
            self.probes.seen_batches(state.task + 1), state.config.seed, state.task,
            self.hessian)
        self.probes.forward_passes += passes
        return metrics
