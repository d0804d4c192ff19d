"""Insight analyses: task-loss probes (logged at the right steps, training untouched), the
sharpness measures against closed forms on quadratics, and two-task trajectories."""

import math
import os

import numpy as np
import pytest
import torch
from conftest import tiny_trial

from zeroflow.analysis.sharpness import hessian_top_eigenvalue, perturbation_sharpness
from zeroflow.cli import main
from zeroflow.config import make_config
from zeroflow.errors import ConfigError
from zeroflow.trial import run_trial

# 2 tasks (5 + 5 classes), 2 epochs x 3 batches = 6 steps per task
TINY = tiny_trial(init_cls=5, increment=5, epochs=2, limit_batches=3, eval_batch_size=512,
                  samples_per_class=12, method="finetune")


def test_probes_logged_at_the_right_steps_and_training_unchanged(capsys):
    plain = run_trial({**TINY, "optimizer": "zo-sgd"})
    probed = run_trial({**TINY, "optimizer": "zo-sgd", "track_task_losses": 4, "sharpness": True})
    np.testing.assert_array_equal(plain.matrix.a, probed.matrix.a)  # bit for bit, NaNs alike
    assert plain.summary["forward_passes"] == probed.summary["forward_passes"]
    # task 0: steps 1..6 (probe at 4, task 0 only); task 1: steps 7..12 (probes at 8, 12)
    assert [list(s) for s in probed.series] == [["task_loss_0"], ["task_loss_0", "task_loss_1"]]
    assert [p[0] for p in probed.series[0]["task_loss_0"]] == [4]
    assert [p[0] for p in probed.series[1]["task_loss_1"]] == [8, 12]
    # probe passes: 1 + 2 + 2 probes; per task 1 base + 3 radii x 8 pairs x 2 per seen batch
    sharp_passes = sum((1 + 3 * 16) * (t + 1) for t in range(2))
    assert probed.history[-1]["probe_forward_passes"] == 5 + sharp_passes
    assert "probe_forward_passes" not in plain.history[-1]

    # the same through `zeroflow run` into MLflow, step = global training step
    import mlflow

    code = main(["run", *[f"{k}={v}" for k, v in TINY.items()], "optimizer=fo-sgd",
                 "track_task_losses=3", "sharpness=true"])
    assert code == 0
    capsys.readouterr()
    client = mlflow.tracking.MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("zeroflow-run")
    (run,) = client.search_runs([exp.experiment_id])
    rid = run.info.run_id
    history = {key: [(m.step, m.value) for m in client.get_metric_history(rid, key)]
               for key in ("task_loss_0", "task_loss_1", "sharpness", "sharpness_r0.05",
                           "accuracy")}
    assert [s for s, _ in history["task_loss_0"]] == [3, 6, 9, 12]
    assert [s for s, _ in history["task_loss_1"]] == [9, 12]
    assert all(math.isfinite(v) and v > 0 for _, v in history["task_loss_1"])
    assert [s for s, _ in history["sharpness"]] == [0, 1]
    assert [s for s, _ in history["sharpness_r0.05"]] == [0, 1]
    assert [s for s, _ in history["accuracy"]] == [0, 1]  # the matrix is not confused by probes
    assert run.data.metrics["last"] == run.data.metrics["accuracy"]


def test_analysis_options_are_validated():
    with pytest.raises(ConfigError, match="sharpness_hessian=true needs sharpness=true"):
        make_config({"sharpness_hessian": True})
    with pytest.raises(ConfigError, match="track_task_losses=-1 is out of range"):
        make_config({"track_task_losses": -1})
    with pytest.raises(ConfigError, match="track_task_losses=2.5 is not a valid int"):
        make_config({"track_task_losses": 2.5})


def _quadratic(h_blocks, gs, params):
    """L = sum_p (1/2) p^T H_p p + g_p^T p over flattened tensors."""
    def loss():
        total = torch.zeros((), dtype=torch.float64)
        for h, g, p in zip(h_blocks, gs, params):
            v = p.reshape(-1)
            total = total + 0.5 * v @ h @ v + g @ v
        return total
    return loss


def _spd(n, eigs, seed):
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    return q @ torch.diag(torch.as_tensor(eigs, dtype=torch.float64)) @ q.T


def test_sharpness_is_zero_on_a_flat_or_linear_loss():
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(20, dtype=torch.float64, generator=gen)
    value, passes = perturbation_sharpness(lambda: torch.tensor(1.5), [p], 0.1, 16, gen)
    assert value == 0.0 and passes == 1 + 32
    g = torch.randn(20, dtype=torch.float64, generator=gen)
    value, _ = perturbation_sharpness(lambda: g @ p, [p], 0.1, 16, gen)
    assert abs(value) < 1e-12  # the antithetic pair cancels a linear term


def test_sharpness_matches_half_sigma_squared_trace_on_quadratics():
    """E[L(theta + delta) - L(theta)] = (1/2) sum_p sigma_p^2 tr(H_p) for a quadratic, with
    sigma_p = r ||p|| / sqrt(n_p) the per-coordinate scale the radius definition gives."""
    gen = torch.Generator().manual_seed(1)
    shapes = [(30,), (4, 5)]
    params = [torch.randn(s, dtype=torch.float64, generator=gen) * scale
              for s, scale in zip(shapes, (1.0, 7.0))]  # two scales: per-tensor radii matter
    sizes = [math.prod(s) for s in shapes]
    h_blocks = [_spd(n, torch.linspace(0.5, 4.0, n), seed) for n, seed in zip(sizes, (2, 3))]
    gs = [torch.randn(n, dtype=torch.float64, generator=gen) for n in sizes]
    before = [p.clone() for p in params]
    radius = 0.05
    expected = 0.5 * sum((radius * float(p.norm()) / math.sqrt(n)) ** 2 * float(torch.trace(h))
                         for p, n, h in zip(params, sizes, h_blocks))
    value, _ = perturbation_sharpness(_quadratic(h_blocks, gs, params), params, radius, 4000,
                                      torch.Generator().manual_seed(4))
    assert value == pytest.approx(expected, rel=0.03)
    for p, b in zip(params, before):
        assert torch.equal(p, b)  # restored bit for bit


def test_top_hessian_eigenvalue_within_one_percent():
    eigs = [6.0, 4.0, 3.0, 2.0, 1.0, 0.5, -0.3, 0.1]
    h = _spd(8, eigs, 5)
    # one quadratic over two tensors (3 and 5 coordinates), with cross terms between them
    a = torch.randn(3, dtype=torch.float64, requires_grad=False)
    b = torch.randn(5, dtype=torch.float64, requires_grad=False)

    def loss():
        v = torch.cat([a, b])
        return 0.5 * v @ h @ v + v.sum()

    unused = torch.zeros(4, dtype=torch.float64)  # e.g. EASE's proxy head under prediction
    top = hessian_top_eigenvalue(loss, [a, unused, b], torch.Generator().manual_seed(6),
                                 iterations=200)
    assert top == pytest.approx(6.0, rel=0.01)
    assert not a.requires_grad and a.grad is None  # flags left as they were
    assert not unused.requires_grad


def test_trajectories_cli_writes_csv_and_figures_and_paths_reach_task_2(tmp_path, capsys):
    import csv

    from zeroflow import optim
    from zeroflow.analysis.toy_bowls import START, TASKS

    out = tmp_path / "traj"
    assert main(["trajectories", "--problem", "sequential-bowls", "--q", "1", "4",
                 "--steps", "150", "--out", str(out)]) == 0
    capsys.readouterr()
    with open(out / "trajectories.csv") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == ("optimizer", "q", "task", "step", "x", "y",
                                            "loss_old", "loss_new")
        rows = list(reader)
    assert {r["optimizer"] for r in rows} == set(optim.NAMES)
    mins = [np.array(t.minimum) for t in TASKS]
    hess = [t.hessian.numpy() for t in TASKS]
    runs = {}
    for r in rows:
        runs.setdefault((r["optimizer"], int(r["q"])), []).append(r)
    for (name, q), seg in runs.items():
        assert [int(r["step"]) for r in seg] == list(range(151)) * 2
        assert (float(seg[0]["x"]), float(seg[0]["y"])) == START
        for r in seg[::37]:  # the loss columns are the two quadratics at (x, y)
            p = np.array([float(r["x"]), float(r["y"])])
            for key, m, h in (("loss_old", mins[0], hess[0]), ("loss_new", mins[1], hess[1])):
                assert float(r[key]) == pytest.approx(0.5 * (p - m) @ h @ (p - m), rel=1e-9)
        task2 = [np.array([float(r["x"]), float(r["y"])]) for r in seg if r["task"] == "1"]
        start, end = np.linalg.norm(task2[0] - mins[1]), np.linalg.norm(task2[-1] - mins[1])
        if optim.is_first_order(name):
            assert q == 1 and end < 0.1, (name, end)
        else:
            assert end < start, (name, q, start, end)
    assert {q for (name, q) in runs if name == "zo-sgd"} == {1, 4}
    pngs = {p.name for p in out.glob("*.png")}
    assert pngs == {"trajectories_grid.png", *{f"trajectory_{n}.png" for n in optim.NAMES}}
    for name in pngs:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["trajectories", "--optimizers", "zo-nope", "--out", str(out)]) == 2
    assert "unknown optimizer 'zo-nope'" in capsys.readouterr().err


def test_spearman_equals_scipy_with_ties():
    from scipy.stats import spearmanr

    from zeroflow.report.tables import spearman

    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(3, 12))
        x, y = rng.integers(0, 4, n).astype(float), rng.normal(size=n)
        if len(set(x)) == 1:
            continue
        assert spearman(list(x), list(y)) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(spearman([1.0, 2.0], [2.0, 1.0]))


def test_report_draws_old_new_losses_and_tabulates_sharpness_against_forgetting(tmp_path):
    """Runs written by the project's tracker (no training): the table's sharpness is the mean
    of the logged values, forgetting follows PILOT's definition, rho is scipy's."""
    from scipy.stats import spearmanr

    from zeroflow.report import build_report, write_report
    from zeroflow.report.figures import old_new_losses
    from zeroflow.tracking import TAG_MEMORY, SweepTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = SweepTracker("insight", uri, sweep_id="i1")
    rng = np.random.default_rng(11)
    truth = {}
    ends = [4, 8, 12]  # cumulative steps after each of 3 tasks; probes every 2 steps
    for name in ["fo-sgd", "zo-sgd", "zo-adam", "zo-sgd-sign", "forward-grad"]:
        config = make_config({"optimizer": name, "track_task_losses": 2, "sharpness": True,
                              "init_cls": 4, "increment": 3}).to_dict()
        run_id = tracker.trial_run(name, name, config)
        a = np.full((3, 3), np.nan)
        sharp = rng.uniform(0.0, 0.1, 3)
        losses = {}
        for t in range(3):
            a[t, : t + 1] = rng.uniform(30, 100, t + 1).round(2)
            series = {}
            for j in range(t + 1):
                points = [[s, float(rng.uniform(0.1, 3))] for s in range(2, 13, 2)
                          if ends[t] - 4 < s <= ends[t]]
                series[f"task_loss_{j}"] = points
                losses.setdefault(j, {}).update(dict(points))
            metrics = {"accuracy": float(rng.uniform(30, 100)), "steps": float(ends[t]),
                       "sharpness": float(sharp[t]),
                       **{f"accuracy_task_{j}": float(a[t, j]) for j in range(t + 1)}}
            tracker.log_task(run_id, t, metrics, {TAG_MEMORY: "cpu_peak_rss"}, series)
        tracker.finish_trial(run_id, config, 3, name)
        fgt = np.mean([a[j:, j].max() - a[2, j] for j in range(2)])
        truth[name] = (float(sharp.mean()), float(fgt), losses)
    report = build_report(tracking_uri=uri)
    table = next(t for t in report.tables if t.name == "sharpness_forgetting")
    data = table.data.set_index("optimizer")
    assert len(data) == 5
    for name, (sharp, fgt, _) in truth.items():
        assert data.loc[name, "sharpness_mean"] == pytest.approx(sharp, rel=1e-9)
        assert data.loc[name, "forgetting"] == pytest.approx(fgt, abs=1e-6)
    rho = spearmanr([v[0] for v in truth.values()], [v[1] for v in truth.values()]).statistic
    assert f"ρ = {rho:+.2f} over 5 run(s)" in table.remarks[0]

    run = next(r for r in report.runset.runs if r.config["optimizer"] == "zo-adam")
    steps, new, old = old_new_losses(run)
    losses = truth["zo-adam"][2]
    assert steps == [2, 4, 6, 8, 10, 12]
    for s, n, o in zip(steps, new, old):
        task = 0 if s <= 4 else (1 if s <= 8 else 2)
        assert n == pytest.approx(losses[task][s])
        if task == 0:
            assert math.isnan(o)
        else:
            assert o == pytest.approx(np.mean([losses[j][s] for j in range(task)]))
    written = write_report(report, tmp_path / "out", ["md"])
    assert tmp_path / "out" / "task_losses.png" in written
    assert (tmp_path / "out" / "sharpness_forgetting.md").read_text().count("\n|") >= 6


def test_probe_series_survive_a_resume_and_reach_the_reconciliation_path(tmp_path, interrupt_trial):
    """A trial resumed from its task checkpoint returns (and stores) the same probe series as an
    uninterrupted one; the sweep callback's reconciliation reads them back from the checkpoint."""
    from types import SimpleNamespace

    from ray.tune import Checkpoint

    from zeroflow.sweep.mlflow_callback import _checkpoint_results

    cfg = {**TINY, "optimizer": "zo-sgd", "track_task_losses": 5}
    straight = run_trial(cfg)

    interrupt_trial(cfg, tmp_path / "ck")
    resumed = run_trial(cfg, checkpoint_dir=tmp_path / "ck")
    assert resumed.series == straight.series
    assert [p[0] for p in straight.series[1]["task_loss_0"]] == [10]  # steps 7..12
    trial = SimpleNamespace(checkpoint=Checkpoint.from_directory(str(tmp_path / "ck")))
    results = _checkpoint_results(trial)
    assert [r["task"] for r in results] == [0, 1]
    assert [r["series"] for r in results] == straight.series
