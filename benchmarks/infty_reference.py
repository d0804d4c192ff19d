"""INFTY's zo-sgd step, re-implemented for the benchmarks from reading THUDM/INFTY
(``src/infty/optim/gradient_bans/zeroflow.py``, class ``ZeroFlow`` with ``inftyopt="zo_sgd"``,
q = 1, two-sided differences, ``memory_efficient=False``: its defaults).

What one step of that optimizer does, and so what this class does with the same tensor
operations and allocations (it is a cost model for timing and memory, not a zeroflow optimizer):

1. pick a fresh seed; reseed the generator and draw a new N(0, 1) tensor z for every trainable
   tensor, add ``z * eps`` to it (a temporary of the tensor's size), and keep each z in the
   optimizer state (they stay there until the next step overwrites them);
2. one forward in eval mode under ``torch.inference_mode``;
3. reseed, draw every z again, add ``z * (-2) * eps``; forward;
4. reseed, draw every z a third time, add ``z * eps`` (a subtractive restore: θ is back to
   within rounding, not bit for bit);
5. projected gradient ``(loss1 - loss2) / (2 eps)`` as a Python float; every ``.grad`` becomes a
   new tensor ``projected * z / q`` from the kept z;
6. the wrapped ``torch.optim`` optimizer steps, then its gradients are set to None.

INFTY draws from torch's global generator, reseeded from NumPy's; here a seeded
``torch.Generator`` gives the seeds and the draws (the same kernels and sizes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


class InftyZoSgd:
    """INFTY's ``ZeroFlow(zo_sgd)`` step (q = 1) over ``params`` and ``base`` (a torch
    optimizer over the same tensors); ``forward()`` returns the scalar loss, ``model`` is put in
    eval mode before each forward as INFTY does."""

    def __init__(self, params: Sequence[torch.Tensor], base: torch.optim.Optimizer,
                 model: torch.nn.Module, forward: Callable[[], torch.Tensor],
                 eps: float = 1e-3, seed: int = 0):
        self.params, self.base, self.model, self.forward = list(params), base, model, forward
        self.eps, self.q = eps, 1
        self.seeds = torch.Generator().manual_seed(seed)
        self.draws = torch.Generator(device=self.params[0].device)
        self.kept: dict[int, torch.Tensor] = {}  # INFTY's state[param]["z"]
        self.forward_passes = 0

    def _perturb(self, seed: int, scale: float, keep: bool) -> None:
        self.draws.manual_seed(seed)
        for i, p in enumerate(self.params):
            z = torch.normal(0.0, 1.0, size=p.shape, generator=self.draws, dtype=p.dtype,
                             device=p.device)
            p.data += z * scale * self.eps
            if keep:
                self.kept[i] = z

    def _loss(self) -> float:
        self.model.eval()
        with torch.inference_mode():
            loss = self.forward()
        self.forward_passes += 1
        return loss

    def next_seed(self) -> int:
        return int(torch.randint(0, 10**9, (1,), generator=self.seeds))

    @torch.no_grad()
    def step(self) -> float:
        for p in self.params:
            p.grad = None
        seed = self.next_seed()
        self._perturb(seed, 1.0, keep=True)
        loss1 = self._loss()
        self._perturb(seed, -2.0, keep=False)
        loss2 = self._loss()
        self._perturb(seed, 1.0, keep=False)
        projected = float((loss1 - loss2) / (2 * self.eps))
        for i, p in enumerate(self.params):
            p.grad = projected * self.kept[i] * 1.0 / self.q  # 1.0: INFTY's cons_scale
        self.base.step()
        self.base.zero_grad(set_to_none=True)
        return float(loss1)
