"""First-order baselines: torch.optim.SGD / Adam, counting forward passes.

The closure does what torch expects of it (zero the grads, forward, backward, return the loss);
each call counts one forward pass. Numerically these are torch.optim's optimizers, unchanged.
"""

from __future__ import annotations

import torch

from zeroflow.optim.zo import CountingOptimizer


class _FirstOrder(CountingOptimizer):
    uses_backward = True

    def step(self, closure=None):
        if closure is None:
            raise ValueError("zeroflow optimizers need a closure that returns the loss")
        return super().step(self._counted(closure))


class FOSGD(_FirstOrder, torch.optim.SGD):
    """SGD with momentum 0.9 and weight decay 5e-4 by default (the paper's code)."""

    def __init__(self, params, lr=1e-2, *, momentum=0.9, weight_decay=5e-4):
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay)


class FOAdam(_FirstOrder, torch.optim.Adam):
    """Adam (L2 weight decay, torch's form)."""

    def __init__(self, params, lr=1e-3, *, betas=(0.9, 0.999), eps=1e-8, weight_decay=5e-4):
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
