"""Seeded perturbation directions, regenerated on demand and never stored (MeZO's trick).

A direction is named by one integer, its *direction seed* (derived from the optimizer's seed,
its step counter and the query index). Its block for the k-th trainable tensor is drawn by a
private ``torch.Generator`` seeded from (direction seed, k), so each block can be regenerated on
its own: perturbing, restoring and updating need O(largest parameter) scratch memory and nothing
of parameter size. The same seeds give the same directions on any process, which is what lets
query actors exchange seeds and scalars only.
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

    def block(self, direction_seed: int, k: int, like: torch.Tensor) -> torch.Tensor:
        """The k-th block of direction ``direction_seed``, shaped and typed like ``like``."""
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
        return z.to(like.dtype)

    def combine(
        self, direction_seeds: Sequence[int], coeffs: Sequence[float], k: int, like: torch.Tensor
    ) -> torch.Tensor:
        """sum_i coeffs[i] * z_i for the k-th block: the gradient estimate of one tensor."""
        # accumulate in at least fp32 (fp16/bf16 tensors would lose the sum's low bits)
        out = torch.zeros_like(like, dtype=torch.promote_types(like.dtype, torch.float32))
        for seed, c in zip(direction_seeds, coeffs):
            out.add_(self.block(seed, k, out), alpha=float(c))
        return out.to(like.dtype)


def perturb_(
    params: Iterable[torch.Tensor], sampler: DirectionSampler, direction_seed: int, scale: float
) -> None:
    """In place: p += scale * z for every tensor, z regenerated block by block."""
    for k, p in enumerate(params):
        p.add_(sampler.block(direction_seed, k, p), alpha=scale)
