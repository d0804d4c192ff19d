"""The two-task toy of ZeroFlow's Figures 3 and 6: a point in 2-D learns task 1 (a quadratic
bowl with one minimum), then task 2 (another bowl, another minimum), with every optimizer of the
registry built through ``zeroflow.optim.build`` exactly as a trial builds them. The path shows
how far each optimizer walks away from the old task's minimum, and how q smooths ZO's jitter.

Each task's loss is ``(1/2) (theta - m)^T H (theta - m)`` with its own minimum ``m`` and
rotated, ill-conditioned ``H``. FO optimizers ignore q (one run, q = 1); each ZO run draws its
directions from the optimizer's own seeded generator. Rows: (optimizer, q, task, step, x, y,
loss_old, loss_new), step 0 being where the task starts; loss_old is task 1's loss and loss_new
task 2's, at every row.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from zeroflow import optim
from zeroflow.errors import ConfigError

START = (2.5, -2.0)
COLUMNS = ("optimizer", "q", "task", "step", "x", "y", "loss_old", "loss_new")
DEFAULT_LR = {"sgd": 0.01, "adam": 0.05}  # per update rule; small enough for every variant
DEFAULT_STEPS = 150
DEFAULT_Q = (1, 4)


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


def _rule(name: str) -> str:
    return "adam" if "adam" in name else "sgd"


def hparams(name: str, q: int, seed: int, lr: float | None = None) -> dict:
    """What ``optim.build(name, ...)`` gets here: lr by update rule, no weight decay (it would
    pull the point to the origin), the trial's default mu, q and a seed."""
    values = {"lr": lr if lr is not None else DEFAULT_LR[_rule(name)], "q": q, "seed": seed,
              "mu": 1e-3, "weight_decay": 0.0}
    if name == "forward-grad":
        values["rule"] = "sgd"
    accepted = optim.accepted_hparams(name)
    return {k: v for k, v in values.items() if k in accepted}


def run_one(name: str, q: int = 1, steps: int = DEFAULT_STEPS, seed: int = 0,
            lr: float | None = None) -> list[dict]:
    """One optimizer's path over both tasks (a fresh optimizer per task, as a trial builds
    one per task); rows as in ``COLUMNS``."""
    theta = torch.nn.Parameter(torch.tensor(START, dtype=torch.float64))
    rows = []

    def record(task: int, step: int) -> None:
        with torch.no_grad():
            x = theta.detach().clone()
            rows.append({"optimizer": name, "q": q, "task": task, "step": step,
                         "x": float(x[0]), "y": float(x[1]),
                         "loss_old": float(TASKS[0](x)), "loss_new": float(TASKS[1](x))})

    for task, loss_fn in enumerate(TASKS):
        opt = optim.build(name, [theta], **hparams(name, q, seed + 1000 * task, lr))
        theta.requires_grad_(opt.uses_backward)

        def closure(opt=opt, loss_fn=loss_fn):
            if opt.uses_backward:
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(theta)
                loss.backward()
                return loss.detach()
            return loss_fn(theta)

        record(task, 0)
        for step in range(1, steps + 1):
            opt.step(closure)
            record(task, step)
    return rows


def run_all(optimizers: list[str] | None = None, qs: list[int] | tuple[int, ...] = DEFAULT_Q,
            steps: int = DEFAULT_STEPS, seed: int = 0) -> list[dict]:
    """Rows of every (optimizer, q) run; FO optimizers run once (q = 1)."""
    names = list(optimizers or optim.NAMES)
    for name in names:
        if name not in optim.NAMES:
            raise ConfigError(f"unknown optimizer {name!r}; choose one of: "
                              f"{', '.join(optim.NAMES)}")
    if steps < 1 or not qs or any(q < 1 for q in qs):
        raise ConfigError("--steps and every --q must be >= 1 (e.g. --steps 150 --q 1 4)")
    rows = []
    for name in names:
        for q in ([1] if optim.is_first_order(name) else sorted(set(qs))):
            rows += run_one(name, q, steps, seed)
    return rows


def write_csv(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _bounds(rows: list[dict]) -> tuple[float, float, float, float]:
    xs = [r["x"] for r in rows] + [m for t in TASKS for m in t.minimum[:1]] + [START[0]]
    ys = [r["y"] for r in rows] + [t.minimum[1] for t in TASKS] + [START[1]]
    pad = 0.5
    return min(xs) - pad, max(xs) + pad, min(ys) - pad, max(ys) + pad


def _draw(ax, rows: list[dict], bounds, title: str) -> None:
    import numpy as np

    x0, x1, y0, y1 = bounds
    gx, gy = np.meshgrid(np.linspace(x0, x1, 120), np.linspace(y0, y1, 120))
    grid = torch.tensor(np.stack([gx, gy], -1), dtype=torch.float64)
    for task, color in zip(TASKS, ("tab:blue", "tab:orange")):
        d = grid - torch.tensor(task.minimum, dtype=torch.float64)
        z = 0.5 * torch.einsum("...i,ij,...j->...", d, task.hessian, d)
        ax.contour(gx, gy, z.numpy(), levels=np.geomspace(0.05, max(float(z.max()), 0.1), 9),
                   colors=color, alpha=0.35, linewidths=0.7)
        ax.plot(*task.minimum, marker="*", color=color, markersize=12, linestyle="none")
    qs = sorted({r["q"] for r in rows})
    styles = dict(zip(qs, ("-", "--", ":", "-.")))
    for q in qs:
        for task, color in ((0, "tab:blue"), (1, "tab:orange")):
            seg = [r for r in rows if r["q"] == q and r["task"] == task]
            ax.plot([r["x"] for r in seg], [r["y"] for r in seg], linestyle=styles.get(q, "-"),
                    color=color, linewidth=1.1, label=f"task {task + 1}, q={q}")
    ax.plot(*START, marker="o", color="black", markersize=5, linestyle="none")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    ax.set_xlabel("θ₁ (first coordinate)", fontsize=8)
    ax.set_ylabel("θ₂ (second coordinate)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="lower right")


def plot(rows: list[dict], out: Path) -> list[Path]:
    """One PNG per optimizer and ``trajectories_grid.png`` of all; contours of both tasks."""
    from zeroflow.plotting import panels, pyplot, save

    names = list(dict.fromkeys(r["optimizer"] for r in rows))
    of = {name: [r for r in rows if r["optimizer"] == name] for name in names}
    written = []
    for name in names:  # each panel its own bounds: a wandering ZO path must not hide FO's
        fig, ax = pyplot().subplots(figsize=(4.2, 4.2))
        _draw(ax, of[name], _bounds(of[name]), name)
        written.append(save(fig, out / f"trajectory_{name}.png"))
    fig, axes = panels(len(names), 3.6, 3.6)
    shared = _bounds(rows)  # the grid compares optimizers: one frame for all
    for ax, name in zip(axes, names):
        _draw(ax, of[name], shared, name)
    written.append(save(fig, out / "trajectories_grid.png"))
    return written


def write_trajectories(out: str | Path, optimizers: list[str] | None = None,
                       qs: list[int] | tuple[int, ...] = DEFAULT_Q,
                       steps: int = DEFAULT_STEPS, seed: int = 0) -> list[Path]:
    """``zeroflow trajectories``: the CSV and the figures in ``out``; returns the paths."""
    rows = run_all(optimizers, qs, steps, seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [write_csv(rows, out / "trajectories.csv"), *plot(rows, out)]
