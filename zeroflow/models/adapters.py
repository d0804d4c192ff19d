"""AdaptFormer-style bottleneck adapters (EASE/APER), with dropout drawn from a given generator.

An adapter runs parallel to a transformer block's MLP and is fed the post-attention residual:
``x = x + attn(norm1(x)); h = adapter(x); x = x + mlp(norm2(x)) + h``. Its up-projection is
zero-initialised, so a fresh adapter leaves the pre-trained model's output unchanged.

Dropout masks come from an explicit ``torch.Generator`` (never torch's global RNG): a zeroth-order
optimizer compares f(θ+μz) and f(θ−μz) on one batch and needs the same masks in both passes.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Adapter(nn.Module):
    """``scale * up(dropout(relu(down(x))))`` with ``up`` (weight and bias) zero-initialised.

    Parameters: ``2 * dim * bottleneck + bottleneck + dim`` (99,136 for dim 768, bottleneck 64).
    ``down.weight`` gets AdaptFormer's kaiming-uniform(a=√5) init from a private generator seeded
    with ``seed`` (drawn on the CPU in float32, so the values do not depend on device or dtype);
    both biases start at zero. Torch's global RNG is never touched.
    """

    def __init__(
        self,
        dim: int,
        bottleneck: int = 64,
        dropout: float = 0.1,
        scale: float = 0.1,
        *,
        seed: int = 0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"adapter dropout must be in [0, 1), got {dropout}")
        self.dim = int(dim)
        self.bottleneck = int(bottleneck)
        self.dropout = float(dropout)
        self.scale = float(scale)
        # built on "meta" so nn.Linear's default init does not draw from the global RNG
        self.down = nn.Linear(dim, bottleneck, device="meta")
        self.up = nn.Linear(bottleneck, dim, device="meta")
        self.to_empty(device=device if device is not None else "cpu")
        generator = torch.Generator().manual_seed(int(seed))
        w = nn.init.kaiming_uniform_(
            torch.empty(bottleneck, dim), a=math.sqrt(5), generator=generator
        )
        with torch.no_grad():
            self.down.weight.copy_(w)
            self.down.bias.zero_()
            self.up.weight.zero_()
            self.up.bias.zero_()
        if dtype is not None:
            self.to(dtype=dtype)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Adapter output for ``x`` [..., dim]. In train mode with dropout > 0, ``generator``
        (on ``x``'s device) is required and supplies the dropout mask; in eval mode it is unused."""
        h = torch.relu(self.down(x))
        if self.training and self.dropout > 0.0:
            if generator is None:
                raise RuntimeError(
                    "Adapter dropout in train mode needs a torch.Generator; call it through "
                    "AdaptedViT.features or pass generator=..."
                )
            keep = 1.0 - self.dropout
            # float32 uniform draws, so the mask does not depend on the activation dtype
            mask = torch.rand(h.shape, generator=generator, device=h.device) < keep
            h = h * mask.to(h.dtype) * (1.0 / keep)
        return self.up(h) * self.scale

    def extra_repr(self) -> str:
        return (
            f"dim={self.dim}, bottleneck={self.bottleneck}, dropout={self.dropout}, "
            f"scale={self.scale}"
        )
