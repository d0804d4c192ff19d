"""``zeroflow trajectories``: every registered optimizer (or those named) on a 2-D toy, the
paths written to ``trajectories.csv`` and drawn over the toy's contours.

Problems (``--problem``): ``infty`` (the default), the authors' toy behind ZeroFlow's Figures
3, 6 and 8 (``toy_infty``); ``sequential-bowls``, zeroflow's earlier two-bowl toy
(``toy_bowls``). FO optimizers ignore q (one run, q = 1); each ZO run draws its directions from
the optimizer's own seeded generator. Rows: (optimizer, q, task, step, x, y, loss_old,
loss_new), step 0 being where a task starts; loss_old is task 1's loss and loss_new task 2's,
at every row.
"""

from __future__ import annotations

import csv
from pathlib import Path

from zeroflow import optim
from zeroflow.analysis import toy_bowls, toy_infty
from zeroflow.analysis.toy_problems import Problem, run_path
from zeroflow.errors import ConfigError

PROBLEMS: dict[str, Problem] = {p.name: p for p in (toy_infty.PROBLEM, toy_bowls.PROBLEM)}
DEFAULT_PROBLEM = "infty"
COLUMNS = ("optimizer", "q", "task", "step", "x", "y", "loss_old", "loss_new")
DEFAULT_Q = (1, 4)
TASK_COLORS = ("tab:blue", "tab:orange")  # a path per task when there are several
Q_COLORS = ("tab:orange", "tab:purple", "tab:brown", "tab:pink")  # else a path per q


def problem(name: str) -> Problem:
    """The toy called ``name``; an unknown name is a one-line ``ConfigError``."""
    if name not in PROBLEMS:
        raise ConfigError(f"unknown problem {name!r}; choose one of: {', '.join(PROBLEMS)}")
    return PROBLEMS[name]


def run_all(optimizers: list[str] | None = None, qs: list[int] | tuple[int, ...] = DEFAULT_Q,
            steps: int | None = None, seed: int = 0,
            problem_name: str = DEFAULT_PROBLEM) -> list[dict]:
    """Rows of every (optimizer, q) run; FO optimizers run once (q = 1). ``steps`` per task
    (None: the problem's default)."""
    toy = problem(problem_name)
    names = list(optimizers or optim.NAMES)
    for name in names:
        if name not in optim.NAMES:
            raise ConfigError(f"unknown optimizer {name!r}; choose one of: "
                              f"{', '.join(optim.NAMES)}")
    if (steps is not None and steps < 1) or not qs or any(q < 1 for q in qs):
        raise ConfigError("--steps and every --q must be >= 1 (e.g. --steps 150 --q 1 4)")
    rows = []
    for name in names:
        for q in ([1] if optim.is_first_order(name) else sorted(set(qs))):
            rows += run_path(toy, name, q, steps, seed)
    return rows


def write_csv(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _draw(ax, toy: Problem, rows: list[dict], frame, title: str) -> None:
    """The toy's contours and minima, then each (q, task) path; one colour per task when there
    are several, else one per q."""
    toy.draw(ax, frame)
    qs = sorted({r["q"] for r in rows})
    tasks = sorted({r["task"] for r in rows})
    styles = dict(zip(qs, ("-", "--", ":", "-.")))
    for i, q in enumerate(qs):
        for task in tasks:
            seg = [r for r in rows if r["q"] == q and r["task"] == task]
            color = (TASK_COLORS[task % 2] if len(tasks) > 1 else Q_COLORS[i % len(Q_COLORS)])
            label = f"task {task + 1}, q={q}" if len(tasks) > 1 else f"path, q={q}"
            ax.plot([r["x"] for r in seg], [r["y"] for r in seg], linestyle=styles.get(q, "-"),
                    color=color, linewidth=1.1, label=label)
    ax.plot(*toy.start, marker="o", color="black", markersize=5, linestyle="none",
            label="start")
    x0, x1, y0, y1 = frame
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("θ₁ (first coordinate)", fontsize=8)
    ax.set_ylabel("θ₂ (second coordinate)", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, loc="best", framealpha=0.8)


def plot(rows: list[dict], out: Path, problem_name: str = DEFAULT_PROBLEM) -> list[Path]:
    """One PNG per optimizer and ``trajectories_grid.png`` of all."""
    from zeroflow.plotting import panels, pyplot, save

    toy = problem(problem_name)
    names = list(dict.fromkeys(r["optimizer"] for r in rows))
    of = {name: [r for r in rows if r["optimizer"] == name] for name in names}
    written = []
    for name in names:  # each panel its own frame: a wandering ZO path must not hide FO's
        fig, ax = pyplot().subplots(figsize=(4.2, 4.2))
        _draw(ax, toy, of[name], toy.frame(of[name]), f"{name} ({toy.name})")
        written.append(save(fig, out / f"trajectory_{name}.png"))
    fig, axes = panels(len(names), 3.6, 3.6)
    shared = toy.frame(rows)  # the grid compares optimizers: one frame for all
    for ax, name in zip(axes, names):
        _draw(ax, toy, of[name], shared, name)
    written.append(save(fig, out / "trajectories_grid.png"))
    return written


def write_trajectories(out: str | Path, optimizers: list[str] | None = None,
                       qs: list[int] | tuple[int, ...] = DEFAULT_Q, steps: int | None = None,
                       seed: int = 0, problem_name: str = DEFAULT_PROBLEM) -> list[Path]:
    """``zeroflow trajectories``: the CSV and the figures in ``out``; returns the paths."""
    rows = run_all(optimizers, qs, steps, seed, problem_name)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return [write_csv(rows, out / "trajectories.csv"), *plot(rows, out, problem_name)]
