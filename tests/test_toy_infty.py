"""``zeroflow trajectories --problem infty``: the authors' toy (THUDM/INFTY
``src/infty/plot/visualize_trajectory.py``). FO paths are checked against a gradient derived by
hand here, in numpy float64, with SGD and Adam written out; ZO paths must descend f1 + f2."""

import csv

import numpy as np
import pytest
import torch

from zeroflow.analysis import toy_infty
from zeroflow.analysis.toy_problems import run_path
from zeroflow.cli import main

FLOOR = 5e-6


def losses(x, y):
    """(f1, f2) at (x, y), float64."""
    s, up, low = np.tanh(y), max(np.tanh(y / 2), 0.0), max(np.tanh(-y / 2), 0.0)
    u = (-0.5 * x - 3.5 + s, -0.5 * x + 3.5 - s)
    bowl = [((x - c) ** 2 + 0.1 * (y + 8) ** 2) / 10 - 20 for c in (7.0, -7.0)]
    return tuple((np.log(max(abs(u[k]), FLOOR)) + 6) * up + bowl[k] * low for k in (0, 1))


def mean_grad(x, y):
    """(∇f1 + ∇f2) / 2 at (x, y), float64, from the derivatives written out: valley part
    log|u| with u1 = -x/2 - 7/2 + tanh y, u2 = -x/2 + 7/2 - tanh y, weight max(tanh(y/2), 0);
    bowl part ((x ∓ 7)^2 + (y + 8)^2 / 10) / 10 - 20, weight max(tanh(-y/2), 0)."""
    s = np.tanh(y)
    h = np.tanh(y / 2)
    dh = 0.5 * (1 - h * h)  # d tanh(y/2) / dy
    up, dup = (h, dh) if h >= 0 else (0.0, 0.0)
    low, dlow = (-h, -dh) if h <= 0 else (0.0, 0.0)
    total = np.zeros(2)
    for u, du_dy, centre in ((-0.5 * x - 3.5 + s, 1 - s * s, 7.0),
                             (-0.5 * x + 3.5 - s, -(1 - s * s), -7.0)):
        inv = 1 / u if abs(u) >= FLOOR else 0.0  # d log|u| / du; flat where clamped
        valley = np.log(max(abs(u), FLOOR)) + 6
        bowl = ((x - centre) ** 2 + 0.1 * (y + 8) ** 2) / 10 - 20
        total += [-0.5 * inv * up + (x - centre) / 5 * low,
                  inv * du_dy * up + valley * dup + 0.02 * (y + 8) * low + bowl * dlow]
    return total / 2


class SGD:
    def __init__(self, lr):
        self.lr = lr

    def step(self, p, g):
        return p - self.lr * g


class Adam:
    """torch.optim.Adam's defaults: betas (0.9, 0.999), eps 1e-8, no weight decay."""

    def __init__(self, lr):
        self.lr, self.t, self.m, self.v = lr, 0, np.zeros(2), np.zeros(2)

    def step(self, p, g):
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * g
        self.v = 0.999 * self.v + 0.001 * g * g
        m_hat, v_hat = self.m / (1 - 0.9 ** self.t), self.v / (1 - 0.999 ** self.t)
        return p - self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)


RULES = {"fo-sgd": SGD, "fo-adam": Adam}


def reference_path(rule, steps):
    p, opt, path = np.array([-8.5, 5.0]), RULES[rule](0.1), []
    for _ in range(steps + 1):
        path.append(p)
        p = opt.step(p, mean_grad(*p))
    return np.array(path)


def read(path):
    with open(path) as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == ("optimizer", "q", "task", "step", "x", "y",
                                            "loss_old", "loss_new")
        return list(reader)


def xy(rows):
    return np.array([[float(r["x"]), float(r["y"])] for r in rows])


@pytest.mark.slow
def test_fo_paths_are_the_hand_derived_sgd_and_adam_steps(tmp_path, capsys):
    """The command of issue 23's 'done when' (float32, 2000 steps): every step is the
    independently computed step from the point it starts at, to float32 rounding; run in
    float64, to float64 rounding, and the whole path follows the reference path."""
    out = tmp_path / "infty"
    assert main(["trajectories", "--problem", "infty", "--optimizers", "fo-sgd", "fo-adam",
                 "--steps", "2000", "--out", str(out)]) == 0
    assert "infty" in capsys.readouterr().err
    rows = read(out / "trajectories.csv")
    for rule in RULES:
        seg = [r for r in rows if r["optimizer"] == rule]
        assert [int(r["step"]) for r in seg] == list(range(2001))
        assert {r["task"] for r in seg} == {"0"} and {r["q"] for r in seg} == {"1"}
        path = xy(seg)
        assert tuple(path[0]) == (-8.5, 5.0)
        opt = RULES[rule](0.1)
        predicted = np.array([opt.step(p, mean_grad(*p)) for p in path[:-1]])
        np.testing.assert_allclose(path[1:], predicted, rtol=0, atol=2e-6)  # float32 ulp at 8
        for r in seg[::250]:  # the loss columns are f1 and f2
            f1, f2 = losses(float(r["x"]), float(r["y"]))
            assert (float(r["loss_old"]), float(r["loss_new"])) == pytest.approx((f1, f2),
                                                                                 abs=1e-4)
        # both end near the joint minimum, (0, -8.355), below both task minima
        assert np.abs(path[-1] - toy_infty.JOINT_MINIMUM).max() < 0.05
        exact = xy(run_path(toy_infty.PROBLEM, rule, steps=600, dtype=torch.float64))
        opt = RULES[rule](0.1)
        predicted = np.array([opt.step(p, mean_grad(*p)) for p in exact[:-1]])
        np.testing.assert_allclose(exact[1:], predicted, rtol=0, atol=1e-13)
        # Adam passes within |u| = 0.003 of f1's log-valley (step 36), which magnifies
        # float64 rounding about 1e8-fold: the whole path agrees to 1e-6 (SGD's to 1e-11)
        np.testing.assert_allclose(exact, reference_path(rule, 600), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_zo_paths_descend_the_sum_and_are_seeded(tmp_path, capsys):
    """SPSA on f1 + f2 at q 1 and 4 (the default problem): the sum ends far below its start;
    each run's directions come from the seed alone."""
    out = tmp_path / "zo"
    assert main(["trajectories", "--optimizers", "zo-sgd", "zo-adam", "--q", "1", "4",
                 "--steps", "150", "--out", str(out)]) == 0
    capsys.readouterr()
    rows = read(out / "trajectories.csv")
    runs = {}
    for r in rows:
        runs.setdefault((r["optimizer"], r["q"]), []).append(r)
    assert set(runs) == {(n, q) for n in ("zo-sgd", "zo-adam") for q in ("1", "4")}
    start = sum(losses(-8.5, 5.0))
    for key, seg in runs.items():
        total = [float(r["loss_old"]) + float(r["loss_new"]) for r in seg]
        assert total[0] == pytest.approx(start, abs=1e-4)
        assert total[-1] < start - 15, (key, total[-1])
    again = run_path(toy_infty.PROBLEM, "zo-adam", 4, 150)
    assert xy(again).tolist() == xy(runs[("zo-adam", "4")]).tolist()
    assert xy(run_path(toy_infty.PROBLEM, "zo-adam", 4, 150, seed=1)).tolist() != xy(
        again).tolist()
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {"trajectories_grid.png", "trajectory_zo-sgd.png", "trajectory_zo-adam.png"}


def test_minima_and_bad_problem(tmp_path, capsys):
    """The marked minima are minima of f1, f2 and their mean (grid check, float64); an unknown
    problem is a one-line error."""
    g = np.linspace(-0.05, 0.05, 11)
    for point, loss in ((toy_infty.TASK_MINIMA[0], lambda x, y: losses(x, y)[0]),
                        (toy_infty.TASK_MINIMA[1], lambda x, y: losses(x, y)[1]),
                        (toy_infty.JOINT_MINIMUM, lambda x, y: sum(losses(x, y)) / 2)):
        best = min(loss(point[0] + dx, point[1] + dy) for dx in g for dy in g)
        assert loss(*point) <= best + 1e-12
    assert main(["trajectories", "--problem", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown problem 'nope'; choose one of: infty, sequential-bowls"]
