"""The q-query SPSA estimator: projected-gradient scalars from forward passes only.

    g = (1/q) sum_i [(f(θ + mu z_i) - f(θ - mu z_i)) / (2 mu)] z_i          (central, 2q passes)
    g = (1/q) sum_i [(f(θ + mu z_i) - f(θ)) / mu] z_i                       (forward, q + 1 passes)

This module computes the scalars (the *evaluate* half of a ZO step); turning (seed, scalar)
pairs into an update is the optimizer's *apply* half (``zo.py``). Both halves regenerate z from
its seed, so the pairs are all that needs to travel between query workers.

Restoring θ after a perturbation: with ``exact_restore=True`` (default) the trainable tensors are
copied once per step and copied back after each perturbation, so in every dtype the parameters
after the step's perturbations equal the originals bit for bit. That copy is the size of the
*trainable* tensors only (an adapter set: ~1.4 % of a ViT-B/16), freed when the step ends.
With ``exact_restore=False`` (MeZO's way) θ is restored by subtracting mu z again: no copy at all,
but floating-point rounding leaves θ off by about one ulp per perturbation in fp32, and by far
more in fp16/bf16, whose 8- or 11-bit mantissas round θ ± mu z to a coarse grid (at mu = 1e-3 a
bf16 weight above ~0.25 does not move at all). Keep trainable tensors in fp32 for ZO training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from zeroflow.optim.perturb import DirectionSampler, perturb_

DIFFERENCES = ("central", "forward")


@dataclass
class Estimate:
    """What the evaluate half hands to the apply half.

    seeds/scalars: the direction seeds and their projected-gradient scalars (f'(θ; z_i) estimates).
    loss: the step's loss estimate (f(θ) for forward differences; mean of (f+ + f-)/2, which is
        f(θ) + O(mu²), for central ones; the primal f(θ) for forward-grad).
    f0: f(θ) when it was evaluated exactly (forward differences, forward-grad), else None.
    parts: central differences' per-direction (f+ + f-)/2, so that estimates of disjoint seed
        shares can be merged into exactly the float loss one evaluation of all seeds gives.
    """

    seeds: list[int]
    scalars: list[float]
    loss: float
    f0: float | None = None
    parts: list[float] | None = None

    @staticmethod
    def merge(shares: Sequence[Estimate]) -> Estimate:
        """One estimate from the estimates of consecutive seed shares (in seed order), equal bit
        for bit to evaluating all the seeds at once: the loss is re-summed from ``parts`` in
        the same order; f0 (the same on every share) is taken from the last share."""
        shares = [s for s in shares if s.seeds]
        seeds = [seed for s in shares for seed in s.seeds]
        scalars = [c for s in shares for c in s.scalars]
        last = shares[-1]
        if last.parts is None:
            return Estimate(seeds, scalars, last.loss, last.f0)
        parts = [p for s in shares for p in s.parts]
        return Estimate(seeds, scalars, _mean(parts), None, parts)


def _mean(parts: Sequence[float]) -> float:
    total = 0.0
    for part in parts:
        total += part
    return total / len(parts)


class Restorer:
    """Puts perturbed tensors back: from a copy (exact) or by subtraction (no memory)."""

    def __init__(self, params: Sequence[torch.Tensor], exact: bool):
        self.params = params
        self.backup = [p.detach().clone() for p in params] if exact else None

    def restore(self, sampler: DirectionSampler, seed: int, applied_scale: float) -> None:
        if self.backup is not None:
            for p, b in zip(self.params, self.backup):
                p.copy_(b)
        else:
            perturb_(self.params, sampler, seed, -applied_scale)


def spsa_evaluate(
    closure: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    sampler: DirectionSampler,
    seeds: Sequence[int],
    mu: float,
    difference: str = "central",
    exact_restore: bool = True,
) -> Estimate:
    """Evaluate the SPSA scalars for the given direction seeds; θ is unchanged on return."""
    if difference not in DIFFERENCES:
        raise ValueError(f"difference must be one of {DIFFERENCES}, got {difference!r}")
    restorer = Restorer(params, exact_restore)
    scalars: list[float] = []
    with torch.no_grad():
        if difference == "forward":
            f0 = float(closure())
            for seed in seeds:
                perturb_(params, sampler, seed, mu)
                f_plus = float(closure())
                restorer.restore(sampler, seed, mu)
                scalars.append((f_plus - f0) / mu)
            return Estimate(list(seeds), scalars, f0, f0)
        parts: list[float] = []
        for seed in seeds:
            perturb_(params, sampler, seed, mu)
            f_plus = float(closure())
            if restorer.backup is not None:
                restorer.restore(sampler, seed, mu)
                perturb_(params, sampler, seed, -mu)
                f_minus = float(closure())
                restorer.restore(sampler, seed, -mu)
            else:
                perturb_(params, sampler, seed, -2 * mu)
                f_minus = float(closure())
                perturb_(params, sampler, seed, mu)
            scalars.append((f_plus - f_minus) / (2 * mu))
            parts.append(0.5 * (f_plus + f_minus))
    return Estimate(list(seeds), scalars, _mean(parts), None, parts)
