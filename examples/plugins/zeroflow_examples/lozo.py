"""LOZO: the low-rank zeroth-order estimator of

    Yiming Chen, Yuan Zhang, Liyuan Cao, Kun Yuan, Zaiwen Wen. "Enhancing Zeroth-order
    Fine-tuning for Language Models with Low-rank Structures". ICLR 2025, arXiv:2410.07698.

Re-implemented here from the paper's equations (LOZO, its Algorithm 1, without momentum). For a
weight matrix θ (m × n; a tensor of more dimensions is read as m = shape[0] rows) a step draws
U ~ N(0, I) of m × r and perturbs along the rank-r direction U Vᵀ, with V ~ N(0, I) of n × r
redrawn only every ν steps ("lazy sampling": V is shared by ν consecutive steps, the iterates
move in one subspace for a while):

    c = (F(θ + ε U Vᵀ) − F(θ − ε U Vᵀ)) / (2ε),    ĝ = c · U Vᵀ / r,    θ ← θ − η ĝ.

A vector (bias, norm scale) gets a plain Gaussian direction z and ĝ = c z. With ``q`` > 1 the
q estimates (U drawn per direction, V shared) are averaged, as MeZO averages its queries.
Weight decay is the L2 form (ĝ += λθ), as zeroflow's other optimizers.

The zeroflow contract (``zeroflow.testing.check_optimizer``): U of direction i comes from a
generator seeded by derive_seed(seed, step, i) (regenerated, never stored), V from
(seed, V_STREAM, step // ν); ``evaluate`` returns the scalars c of the given seeds and
leaves θ exactly as it was (a copy restores it); ``apply`` rebuilds the directions from the
seeds, so query workers exchange seeds and scalars only; every closure call is counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from zeroflow.optim import CountingOptimizer, Estimate
from zeroflow.seeding import derive_seed

V_STREAM = 0x10_20  # the lazily resampled right factors


class LOZO(CountingOptimizer, torch.optim.Optimizer):
    """Low-rank ZO-SGD. lr: η; mu: ε; q: directions per step; rank: r; nu: ν, the steps V is
    kept; seed: the seed of every draw; weight_decay: λ."""

    uses_backward = False

    def __init__(self, params, lr: float = 1e-3, *, mu: float = 1e-3, q: int = 1, seed: int = 0,
                 weight_decay: float = 0.0, rank: int = 2, nu: int = 50):
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not mu > 0.0:
            raise ValueError(f"mu must be > 0, got {mu}")
        if int(q) != q or q < 1:
            raise ValueError(f"q must be a positive integer, got {q}")
        if int(rank) != rank or rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank}")
        if int(nu) != nu or nu < 1:
            raise ValueError(f"nu must be a positive integer, got {nu}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))
        self.mu, self.q, self.rank, self.nu = float(mu), int(q), int(rank), int(nu)
        self._counters()["seed"] = self.seed = int(seed)

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.seed = int(self._counters()["seed"])

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def direction_seeds(self) -> list[int]:
        step = self._counters()["step"]
        return [derive_seed(self.seed, step, i) for i in range(self.q)]

    def _direction(self, seed: int, k: int, p: torch.Tensor, step: int):
        """Tensor k's direction for ``seed`` at ``step`` and its estimate's scale (1/r or 1)."""
        gen = torch.Generator(device=p.device).manual_seed(derive_seed(seed, k))
        if p.dim() < 2:
            return torch.randn(p.shape, generator=gen, device=p.device, dtype=p.dtype), 1.0
        m, n = p.shape[0], p.numel() // p.shape[0]
        u = torch.randn(m, self.rank, generator=gen, device=p.device, dtype=p.dtype)
        vgen = torch.Generator(device=p.device).manual_seed(
            derive_seed(self.seed, V_STREAM, step // self.nu, k))
        v = torch.randn(n, self.rank, generator=vgen, device=p.device, dtype=p.dtype)
        return (u @ v.T).reshape(p.shape), 1.0 / self.rank

    @torch.no_grad()
    def _perturb(self, seed: int, scale: float, step: int) -> None:
        for k, p in enumerate(self._params()):
            p.add_(self._direction(seed, k, p, step)[0], alpha=scale)

    @torch.no_grad()
    def evaluate(self, closure: Callable[[], torch.Tensor], seeds: list[int]) -> Estimate:
        """c_i = (F(θ + ε U_i Vᵀ) − F(θ − ε U_i Vᵀ)) / (2ε) for each seed; θ restored exactly."""
        counted, step = self._counted(closure), self._counters()["step"]
        saved = [p.detach().clone() for p in self._params()]
        scalars, parts = [], []
        try:
            for seed in seeds:
                self._perturb(seed, self.mu, step)
                f_plus = float(counted())
                for p, s in zip(self._params(), saved):
                    p.copy_(s)
                self._perturb(seed, -self.mu, step)
                f_minus = float(counted())
                for p, s in zip(self._params(), saved):
                    p.copy_(s)
                scalars.append((f_plus - f_minus) / (2 * self.mu))
                parts.append((f_plus + f_minus) / 2)
        finally:
            for p, s in zip(self._params(), saved):
                p.copy_(s)
        loss = sum(parts) / len(parts) if parts else float("nan")
        return Estimate(list(seeds), scalars, loss, None, parts)

    @torch.no_grad()
    def apply(self, estimate: Estimate, closure=None, decision: float | None = None) -> float:
        """θ ← θ − η ((1/q) Σ_i c_i U_i Vᵀ / r + λθ); a non-finite c skips the update."""
        counters = self._counters()
        step = counters["step"]
        counters["step"] += 1
        if not all(math.isfinite(c) for c in estimate.scalars):
            return 0.0
        n = len(estimate.seeds)
        pairs = [(group, p) for group in self.param_groups for p in group["params"]]
        for k, (group, p) in enumerate(pairs):
            g = torch.zeros_like(p)
            for seed, c in zip(estimate.seeds, estimate.scalars):
                z, scale = self._direction(seed, k, p, step)
                g.add_(z, alpha=c * scale / n)
            if group["weight_decay"]:
                g.add_(p, alpha=group["weight_decay"])
            p.add_(g, alpha=-group["lr"])
        return -1.0

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        estimate = self.evaluate(closure, self.direction_seeds())
        self.apply(estimate)
        finite = all(math.isfinite(c) for c in estimate.scalars)
        return torch.tensor(estimate.loss if finite else float("nan"))
