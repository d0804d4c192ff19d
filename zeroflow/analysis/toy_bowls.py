"""``--problem sequential-bowls``: zeroflow's own two-task toy (not the authors'). A point in
2-D learns task 1 (a quadratic bowl), then task 2 (another bowl), from (2.5, -2), a fresh
optimizer per task; float64.

Each task's loss is ``(1/2) (theta - m)^T H (theta - m)`` with its own minimum ``m`` and
rotated, ill-conditioned ``H``. On a quadratic a central difference is exact, so forward-grad
follows zo-sgd's path and Conserve never rejects a step; the authors' toy (``toy_infty``) is
non-convex and minimises both objectives at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from zeroflow.analysis.toy_problems import Phase, Problem, accepted

START = (2.5, -2.0)
DEFAULT_LR = {"sgd": 0.01, "adam": 0.05}  # per update rule; small enough for every variant
DEFAULT_STEPS = 150
COLORS = ("tab:blue", "tab:orange")


def _hessian(eig_small: float, eig_large: float, angle_deg: float) -> torch.Tensor:
    a = math.radians(angle_deg)
    rot = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]],
                       dtype=torch.float64)
    return rot @ torch.diag(torch.tensor([eig_small, eig_large], dtype=torch.float64)) @ rot.T


@dataclass(frozen=True)
class Quadratic:
    """``(1/2) (theta - minimum)^T hessian (theta - minimum)``."""

    minimum: tuple[float, float]
    hessian: torch.Tensor

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        d = theta - torch.tensor(self.minimum, dtype=theta.dtype)
        return 0.5 * d @ self.hessian.to(theta.dtype) @ d


TASKS = (Quadratic((1.0, 1.0), _hessian(1.0, 6.0, 30.0)),
         Quadratic((-1.5, -0.5), _hessian(1.0, 4.0, -45.0)))


def hparams(name: str, q: int, seed: int) -> dict:
    """lr by update rule, no weight decay (it would pull the point to the origin), the trial's
    default mu (and momentum), q and a seed."""
    rule = "adam" if "adam" in name else "sgd"
    values = {"lr": DEFAULT_LR[rule], "q": q, "seed": seed, "mu": 1e-3, "weight_decay": 0.0}
    if name == "forward-grad":
        values["rule"] = "sgd"
    return accepted(name, values)


def frame(rows: list[dict]) -> tuple[float, float, float, float]:
    """The paths, both minima and the start, with a margin."""
    xs = [r["x"] for r in rows] + [t.minimum[0] for t in TASKS] + [START[0]]
    ys = [r["y"] for r in rows] + [t.minimum[1] for t in TASKS] + [START[1]]
    pad = 0.5
    return min(xs) - pad, max(xs) + pad, min(ys) - pad, max(ys) + pad


def draw(ax, bounds: tuple[float, float, float, float]) -> None:
    """Each task's contours in its colour, its minimum a star."""
    import numpy as np

    x0, x1, y0, y1 = bounds
    gx, gy = np.meshgrid(np.linspace(x0, x1, 120), np.linspace(y0, y1, 120))
    grid = torch.tensor(np.stack([gx, gy], -1), dtype=torch.float64)
    for k, (task, color) in enumerate(zip(TASKS, COLORS)):
        d = grid - torch.tensor(task.minimum, dtype=torch.float64)
        z = 0.5 * torch.einsum("...i,ij,...j->...", d, task.hessian, d).numpy()
        ax.contour(gx, gy, z, levels=np.geomspace(0.05, max(float(z.max()), 0.1), 9),
                   colors=color, alpha=0.35, linewidths=0.7)
        ax.plot(*task.minimum, marker="*", color=color, markersize=12, linestyle="none",
                label=f"task {k + 1} minimum")
    ax.set_aspect("equal")


PROBLEM = Problem(
    name="sequential-bowls", start=START, phases=tuple(Phase(loss=t) for t in TASKS),
    old=TASKS[0], new=TASKS[1], hparams=hparams, default_steps=DEFAULT_STEPS,
    dtype=torch.float64, frame=frame, draw=draw,
    summary="two quadratic bowls, task 1 then task 2, from (2.5, -2)",
)
