"""The q-query SPSA estimator: projected-gradient scalars from forward passes only.

    g = (1/q) sum_i [(f(θ + mu z_i) - f(θ - mu z_i)) / (2 mu)] z_i          (central, 2q passes)
    g = (1/q) sum_i [(f(θ + mu z_i) - f(θ)) / mu] z_i                       (forward, q + 1 passes)

This module computes the scalars (the *evaluate* half of a ZO step); turning (seed, scalar)
pairs into an update is the optimizer's *apply* half (``zo.py``). Both halves regenerate z from
its seed, so the pairs are all that needs to travel between query workers.

Restoring θ after a perturbation: with ``exact_restore=True`` (default) θ itself is never
written: θ ± mu z is computed into a second set of tensors of the trainable tensors' size, which
is swapped in (``p.data``) for the forward pass, and the untouched originals are swapped back,
so in every dtype the parameters after the step's perturbations are the originals bit for bit,
with no copy passes (θ ± mu z is the same float operation as in place). The second set is the
size of the *trainable* tensors only (an adapter set: ~1.4 % of a ViT-B/16); the optimizer
keeps it for its next step (``work``), since allocating and first touching it anew each step
costs time on CPU. (Conserve keeps a plain copy: ``Restorer``.)
With ``exact_restore=False`` (MeZO's way) θ is restored by subtracting mu z again: no copy at all,
but floating-point rounding leaves θ off by about one ulp per perturbation in fp32, and by far
more in fp16/bf16, whose 8- or 11-bit mantissas round θ ± mu z to a coarse grid (at mu = 1e-3 a
bf16 weight above ~0.25 does not move at all). Keep trainable tensors in fp32 for ZO training.

Directions come from their seeds (regenerated for each use: +mu z, -mu z, restore) or, given a
``DirectionBuffer``, are drawn once per direction and reused (``zeroflow.optim.perturb``); both
give the same floats. ``leave_last=True`` (the lean step) skips the subtractive restore of the
last direction and reports it in ``Estimate.unrestored`` for the update to fold in.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from zeroflow.optim.perturb import DirectionBuffer, DirectionSampler, perturb_

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
    unrestored: tuple[int, float] | None = None  # (seed, scale): θ still needs += scale * z

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


class _SeedDirections:
    """The regenerating counterpart of ``DirectionBuffer``: each use redraws z from its seed."""

    def __init__(self, params: Sequence[torch.Tensor], sampler: DirectionSampler):
        self.params, self.sampler, self.seed = params, sampler, 0

    def select(self, direction_seed: int) -> None:
        self.seed = direction_seed

    def perturb(self, scale: float) -> None:
        perturb_(self.params, self.sampler, self.seed, scale)

    def write(self, sources, outs, scale: float) -> None:
        for k, (src, out) in enumerate(zip(sources, outs)):
            torch.add(src, self.sampler.block(self.seed, k, src), alpha=scale, out=out)


def work_set(params: Sequence[torch.Tensor],
             work: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
    """``work`` if it still matches ``params`` (shape, type, device, layout), else a new set
    of tensors like them: the exact restore's swapped-in set, kept from step to step."""
    if work is not None and len(work) == len(params) and all(
            w.shape == p.shape and w.dtype == p.dtype and w.device == p.device
            and w.stride() == p.stride() for w, p in zip(work, params)):
        return work
    return [torch.empty_like(p.detach()) for p in params]


class _Swapper:
    """Exact restore without copies: θ + s z goes into a second set of tensors (``work``) that
    is swapped in for the forward pass; ``restore`` swaps the untouched originals back."""

    def __init__(self, params: Sequence[torch.Tensor], work: list[torch.Tensor] | None = None):
        self.params = params
        self.originals = [p.data for p in params]
        self.work = work_set(self.originals, work)

    def perturbed(self, dirs, scale: float) -> None:
        dirs.write(self.originals, self.work, scale)
        for p, w in zip(self.params, self.work):
            p.data = w

    def restore(self) -> None:
        for p, o in zip(self.params, self.originals):
            p.data = o


@contextlib.contextmanager
def _restored_on_error(swap: _Swapper | None):
    """A closure that raises must not leave the swapped-in perturbed tensors in place."""
    try:
        yield
    except BaseException:
        if swap is not None:
            swap.restore()
        raise


def spsa_evaluate(
    closure: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    sampler: DirectionSampler,
    seeds: Sequence[int],
    mu: float,
    difference: str = "central",
    exact_restore: bool = True,
    buffer: DirectionBuffer | None = None,
    coeff: Callable[[float], float] | None = None,
    leave_last: bool = False,
    work: list[torch.Tensor] | None = None,
) -> Estimate:
    """Evaluate the SPSA scalars for the given direction seeds; θ is unchanged on return
    (except with ``leave_last``, see the module docstring).

    buffer: draw each direction once into it; with ``coeff`` also accumulate coeff(c_i) z_i.
    work: the exact restore's swapped-in set from an earlier call (``work_set``), reused when
    it still matches.
    """
    if difference not in DIFFERENCES:
        raise ValueError(f"difference must be one of {DIFFERENCES}, got {difference!r}")
    exact = bool(exact_restore)
    swap = _Swapper(params, work) if exact else None
    dirs = buffer if buffer is not None else _SeedDirections(params, sampler)
    scalars: list[float] = []
    unrestored = None
    with torch.no_grad(), _restored_on_error(swap):
        f0 = float(closure()) if difference == "forward" else None
        parts: list[float] = []
        for i, seed in enumerate(seeds):
            keep = leave_last and not exact and i == len(seeds) - 1
            dirs.select(seed)
            if exact:
                swap.perturbed(dirs, mu)
            else:
                dirs.perturb(mu)
            f_plus = float(closure())
            if difference == "forward":
                if exact:
                    swap.restore()
                elif keep:
                    unrestored = (seed, -mu)
                else:
                    dirs.perturb(-mu)
                scalars.append((f_plus - f0) / mu)
            else:
                if exact:
                    swap.perturbed(dirs, -mu)
                    f_minus = float(closure())
                    swap.restore()
                else:
                    dirs.perturb(-2 * mu)
                    f_minus = float(closure())
                    if keep:
                        unrestored = (seed, mu)
                    else:
                        dirs.perturb(mu)
                scalars.append((f_plus - f_minus) / (2 * mu))
                parts.append(0.5 * (f_plus + f_minus))
            if buffer is not None and coeff is not None:
                buffer.accumulate(coeff(scalars[-1]))
    if difference == "forward":
        return Estimate(list(seeds), scalars, f0, f0, unrestored=unrestored)
    return Estimate(list(seeds), scalars, _mean(parts), None, parts, unrestored)
