"""Seeded perturbation directions: regenerated on demand (MeZO's trick) or drawn once per step.

A direction is named by one integer, its *direction seed* (derived from the optimizer's seed,
its step counter and the query index). Its block for the k-th trainable tensor is drawn by a
private ``torch.Generator`` seeded from (direction seed, k), so each block can be regenerated on
its own: perturbing, restoring and updating need O(largest parameter) scratch memory and nothing
of parameter size. The same seeds give the same directions on any process, which is what lets
query actors exchange seeds and scalars only.

``DirectionBuffer`` is the other regime (``direction_buffer="on"``): each direction is drawn
once into one buffer and reused for θ + mu z, θ - mu z and the update, whose estimate
sum_i c_i z_i is accumulated as the scalars arrive. It holds one direction and one estimate of
the trainable tensors' size, whatever q (at q = 1 the direction becomes the estimate: one), and
its numbers equal the regenerated ones bit for bit (the same draws, the same float operations
in the same order; the first term is c z where the regenerated sum computes 0 + c z, which
differs only in the sign of zeros).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from zeroflow.seeding import derive_seed

PERTURBATIONS = ("gaussian", "rademacher")
_MASK_STREAM = 0x6D61736B  # keeps sparsity masks independent of the direction values


class DirectionSampler:
    """Draws the blocks of seeded directions z for a fixed list of tensors.

    perturbation: ``gaussian`` (z ~ N(0, I)) or ``rademacher`` (z uniform on {-1, +1}).
    sparsity: a fraction s in [0, 1); exactly floor(s * numel) coordinates of every block are
        zeroed by a seeded mask (paper Enhancement 3). No rescaling: the estimate targets the
        masked coordinates of the gradient.
    sparsity_resample: draw a new mask for every direction (default), or keep one fixed mask
        per tensor for the whole run (derived from ``seed`` alone).
    """

    def __init__(
        self,
        perturbation: str = "gaussian",
        sparsity: float = 0.0,
        sparsity_resample: bool = True,
        seed: int = 0,
    ):
        if perturbation not in PERTURBATIONS:
            raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {perturbation!r}")
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        self.perturbation = perturbation
        self.sparsity = float(sparsity)
        self.sparsity_resample = bool(sparsity_resample)
        self.seed = int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def _generator(self, device: torch.device, seed: int) -> torch.Generator:
        gen = self._generators.get(device)
        if gen is None:
            gen = self._generators[device] = torch.Generator(device=device)
        gen.manual_seed(seed)
        return gen

    def block(self, direction_seed: int, k: int, like: torch.Tensor,
              dtype: torch.dtype | None = None) -> torch.Tensor:
        """The k-th block of direction ``direction_seed``, shaped like ``like`` and typed like
        it (or ``dtype``); the draw is fp32 whatever the type, so every type sees the same z."""
        gen = self._generator(like.device, derive_seed(direction_seed, k))
        if self.perturbation == "gaussian":
            z = torch.randn(like.shape, generator=gen, device=like.device, dtype=torch.float32)
        else:
            z = torch.randint(0, 2, like.shape, generator=gen, device=like.device)
            z = z.to(torch.float32).mul_(2).sub_(1)
        if self.sparsity > 0:
            n = z.numel()
            n_zero = int(self.sparsity * n)
            mask_seed = (
                derive_seed(direction_seed, k, _MASK_STREAM)
                if self.sparsity_resample
                else derive_seed(self.seed, k, _MASK_STREAM)
            )
            gen = self._generator(like.device, mask_seed)
            idx = torch.randperm(n, generator=gen, device=like.device)[:n_zero]
            z.view(-1)[idx] = 0.0
        return z.to(like.dtype if dtype is None else dtype)

    def combine(
        self, direction_seeds: Sequence[int], coeffs: Sequence[float], k: int, like: torch.Tensor,
        restore: tuple[int, float, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """sum_i coeffs[i] * z_i for the k-th block: the gradient estimate of one tensor.

        restore=(seed, scale, p): also p += scale * z_seed with the same draw (the lean step
        folds the restore of its last perturbation into the update's regeneration: the float
        operations on p are those of ``perturb_`` then the update, one draw fewer)."""
        out = torch.zeros_like(like, dtype=accumulation_dtype(like))
        for seed, c in zip(direction_seeds, coeffs):
            z = self.block(seed, k, out)
            if restore is not None and seed == restore[0]:
                restore[2].add_(z.to(restore[2].dtype), alpha=restore[1])
            out.add_(z, alpha=float(c))
        return out.to(like.dtype)


def accumulation_dtype(like: torch.Tensor) -> torch.dtype:
    """Estimates accumulate in at least fp32 (fp16/bf16 would lose the sum's low bits)."""
    return torch.promote_types(like.dtype, torch.float32)


class DirectionBuffer:
    """One direction of every tensor, drawn once from its seed and reused (the fast regime).

    ``select(seed)`` draws direction ``seed`` over the previous one, block by block (peak: one
    direction plus one block); ``perturb(scale)`` is ``perturb_`` with the drawn blocks;
    ``accumulate(c)`` adds c * z to the estimate, which ``estimate()`` hands to the update.
    Blocks are kept in the accumulation type, so the estimate is ``combine``'s bit for bit.
    """

    def __init__(self, sampler: DirectionSampler, params: Sequence[torch.Tensor]):
        self.sampler, self.params = sampler, list(params)
        self.blocks: list[torch.Tensor | None] = [None] * len(self.params)
        self.sums: list[torch.Tensor] | None = None
        self.seeds: list[int] = []

    def select(self, direction_seed: int) -> None:
        for k, p in enumerate(self.params):
            self.blocks[k] = None  # free the old block before drawing the new one
            self.blocks[k] = self.sampler.block(direction_seed, k, p, accumulation_dtype(p))
        self.seeds.append(direction_seed)

    def tangents(self) -> list[torch.Tensor]:
        """The drawn blocks in each tensor's own type (Forward-Grad's tangents)."""
        return [z.to(p.dtype) for z, p in zip(self.blocks, self.params)]

    def perturb(self, scale: float) -> None:
        for p, z in zip(self.params, self.blocks):
            p.add_(z.to(p.dtype), alpha=scale)

    def write(self, sources, outs, scale: float) -> None:
        """outs[k] = sources[k] + scale * z_k (the exact restore's swapped-in tensors)."""
        for src, out, z in zip(sources, outs, self.blocks):
            torch.add(src, z.to(src.dtype), alpha=scale, out=out)

    def accumulate(self, coeff: float) -> None:
        """Add coeff * z (the drawn direction, no longer needed after this) to the estimate.
        The first direction becomes the estimate in place (c * z: what 0 + c * z rounds to,
        up to the sign of zeros), so q = 1 holds one buffer and skips a pass."""
        if self.sums is None:
            self.sums = [z.mul_(float(coeff)) for z in self.blocks]
            self.blocks = [None] * len(self.params)
            return
        for s, z in zip(self.sums, self.blocks):
            s.add_(z, alpha=float(coeff))

    def estimate(self, direction_seeds: Sequence[int]) -> list[torch.Tensor] | None:
        """The accumulated sum_i c_i z_i if it is that of exactly ``direction_seeds``."""
        if self.sums is None or list(direction_seeds) != self.seeds:
            return None
        return self.sums


def perturb_(
    params: Iterable[torch.Tensor], sampler: DirectionSampler, direction_seed: int, scale: float
) -> None:
    """In place: p += scale * z for every tensor, z regenerated block by block."""
    for k, p in enumerate(params):
        p.add_(sampler.block(direction_seed, k, p), alpha=scale)
