"""The authors' trajectory toy (ZeroFlow's Figures 3, 6 and 8), written anew from
THUDM/INFTY ``src/infty/plot/visualize_trajectory.py`` at commit
2383906b9fa6e78ea372a7cbb0fc2b78ce67a252 (its ``Toy`` objectives, ``mean_grad``, ``zo_step``,
``zo_step_q4`` and ``run``).

Two non-convex objectives of a point (x, y), both minimised at once from (-8.5, 5) with lr 0.1:
above y = 0 each is a log-valley (weight max(tanh(y/2), 0)), below it a shallow bowl (weight
max(tanh(-y/2), 0)) centred at x = +7 (f1) or x = -7 (f2). A first-order optimizer (plain
torch SGD or Adam) steps on the mean of the two gradients; a forward-pass one estimates the
gradient of f1 + f2 (the sum, as their ``zo_step`` does) by SPSA. The point is float32, as
theirs. One phase: every row has task 0; ``loss_old`` is f1, ``loss_new`` f2.

Where ours differs from theirs (docs/analyses.md lists it too): directions come from the
optimizer's seeded generator (theirs: ``np.random.randint`` unseeded, then
``torch.manual_seed``); θ is restored exactly after a perturbation (theirs: +mu z, -2 mu z,
+mu z in place); their ZO variants all update with Adam, ours with the optimizer's own rule
(zo-sgd: plain SGD); their sign variant sums sign(f1's scalar) z and sign(f2's scalar) z, ours
takes the sign of the scalar of f1 + f2; their Conserve steps Adam up to three times per step,
ours keeps the best of θ, θ - lr u, θ + lr u and advances the state once; the minima are
computed here (theirs marks all three at y = -8.3552).
"""

from __future__ import annotations

import math

import torch

from zeroflow.analysis.toy_problems import Phase, Problem, accepted

START = (-8.5, 5.0)
LR = 0.1
MU = 1e-3  # their zo_eps
FLOOR = 5e-6  # |.| is clamped here before the log
FRAME = (-11.0, 11.0, -11.0, 11.0)  # their plot's extent
DEFAULT_STEPS = 2000


def _objective(theta: torch.Tensor, task: int) -> torch.Tensor:
    """f1 (task 0) or f2 (task 1). The terms are built in the order their ``Toy.forward``
    builds them (valley, its weight, bowl, its weight), so that float32 rounds alike."""
    x, y = theta[..., 0], theta[..., 1]
    if task == 0:
        valley_arg = (-x - 7) / 2 + torch.tanh(y)
    else:
        valley_arg = (3 - x) / 2 - torch.tanh(y) + 2
    valley = torch.log(torch.abs(valley_arg).clamp(min=FLOOR)) + 6
    valley_weight = torch.tanh(y / 2).clamp(min=0)
    centre = 7.0 if task == 0 else -7.0
    bowl = ((x - centre) ** 2 + 0.1 * (y + 8) ** 2) / 10 - 20
    bowl_weight = torch.tanh(-y / 2).clamp(min=0)
    return valley * valley_weight + bowl * bowl_weight


def f1(theta: torch.Tensor) -> torch.Tensor:
    """Task 1's objective (minimum near (7, -8.36))."""
    return _objective(theta, 0)


def f2(theta: torch.Tensor) -> torch.Tensor:
    """Task 2's objective (minimum near (-7, -8.36))."""
    return _objective(theta, 1)


def total(theta: torch.Tensor) -> torch.Tensor:
    """f1 + f2: what a forward-pass optimizer evaluates."""
    return f1(theta) + f2(theta)


def mean_gradient(theta: torch.Tensor) -> torch.Tensor:
    """(∇f1 + ∇f2) / 2 at ``theta`` (a leaf requiring grad): the first-order step's gradient."""
    with torch.enable_grad():
        g1 = torch.autograd.grad(f1(theta), theta)[0]
        g2 = torch.autograd.grad(f2(theta), theta)[0]
    return (g1 + g2) / 2


def _bowl_floor_y(offset: float) -> float:
    """The y < 0 minimising tanh(-y/2) (offset + 0.01 (y + 8)^2), by bisection on its
    derivative over [-11, -8] (negative at -11, positive at -8)."""
    lo, hi = -11.0, -8.0
    for _ in range(80):
        y = (lo + hi) / 2
        t = math.tanh(-y / 2)
        slope = -0.5 * (1 - t * t) * (offset + 0.01 * (y + 8) ** 2) + t * 0.02 * (y + 8)
        lo, hi = (y, hi) if slope < 0 else (lo, y)
    return (lo + hi) / 2


# f_i's bowl at its own centre is offset -20; the mean's at x = 0 is 49/10 - 20
TASK_MINIMA = ((7.0, _bowl_floor_y(-20.0)), (-7.0, _bowl_floor_y(-20.0)))
JOINT_MINIMUM = (0.0, _bowl_floor_y(4.9 - 20.0))


def hparams(name: str, q: int, seed: int) -> dict:
    """lr 0.1 for every optimizer, plain updates (no momentum, no weight decay; Adam's betas
    and eps torch's defaults, as theirs), their mu 1e-3, q and a seed."""
    values = {"lr": LR, "q": q, "seed": seed, "mu": MU, "weight_decay": 0.0, "momentum": 0.0}
    if name == "forward-grad":
        values["rule"] = "sgd"
    return accepted(name, values)


def draw(ax, frame: tuple[float, float, float, float]) -> None:
    """The mean loss's contours over ``frame``; both task minima (crosses) and the joint one
    (star), as their figure marks them."""
    import numpy as np

    x0, x1, y0, y1 = frame
    gx, gy = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
    grid = torch.tensor(np.stack([gx, gy], -1), dtype=torch.float64)
    mean = ((f1(grid) + f2(grid)) / 2).numpy()
    ax.contour(gx, gy, mean, levels=14, cmap="viridis", linewidths=0.8, alpha=0.8)
    for (mx, my), color, label in ((TASK_MINIMA[0], "tab:red", "f1 (task 1) minimum"),
                                   (TASK_MINIMA[1], "tab:blue", "f2 (task 2) minimum")):
        ax.plot(mx, my, marker="X", color=color, markersize=10, linestyle="none", label=label)
    ax.plot(*JOINT_MINIMUM, marker="*", color="black", markersize=13, linestyle="none",
            label="joint minimum (mean loss)")


PROBLEM = Problem(
    name="infty", start=START, phases=(Phase(loss=total, grad=mean_gradient),), old=f1, new=f2,
    hparams=hparams, default_steps=DEFAULT_STEPS, dtype=torch.float32,
    frame=lambda rows: FRAME, draw=draw,
    summary="the authors' toy, f1 and f2 minimised jointly from (-8.5, 5) at lr 0.1",
)
