"""The one training loop: every method × optimizer pair, exact forward-pass accounting, exact
resume, EASE's prototype completion, NaN handling, and the CLI's errors and output."""

import math

import numpy as np
import pytest
import torch
from conftest import tiny_trial

from zeroflow import optim
from zeroflow.cli import main
from zeroflow.errors import DivergenceError
from zeroflow.trial import run_trial

TINY = tiny_trial(init_cls=5, increment=5, epochs=1, limit_batches=1, eval_batch_size=512,
                  samples_per_class=12)


def passes_per_step(name: str, q: int) -> int:
    if optim.is_first_order(name):
        return 1
    if name == "forward-grad":
        return q
    return 2 * q + (3 if name.endswith("conserve") else 0)


@pytest.mark.parametrize("method", ["ease", "aper", "finetune", "zofc"])
def test_every_method_runs_with_every_optimizer(method):
    q = 2
    for name in optim.NAMES:
        result = run_trial({**TINY, "method": method, "optimizer": name, "q": q})
        m = result.matrix
        assert m.done == 2 and not np.isnan(m.seen).any()
        assert 0.0 <= result.summary["last"] <= 100.0
        steps = 1 if method == "aper" else 2  # APER trains task 0 only
        per_step = passes_per_step(name, q) + (1 if method == "zofc" else 0)
        assert result.summary["steps"] == steps
        assert result.summary["forward_passes"] == steps * per_step, (method, name)


def test_training_beats_chance_and_zo_moves_the_adapter():
    cfg = dict(dataset="digits", method="finetune", epochs=2, batch_size=32)
    fo = run_trial({**cfg, "optimizer": "fo-sgd", "lr": 0.05})
    assert fo.matrix.a[0, 0] > 60.0  # task 0 (2 classes) well above the 50 % chance level
    zo = run_trial({**cfg, "optimizer": "zo-sgd", "lr": 0.01, "limit_batches": 3})
    untrained = run_trial({**cfg, "optimizer": "zo-sgd", "lr": 1e-12, "limit_batches": 3})
    assert zo.summary["avg"] != untrained.summary["avg"]


@pytest.mark.parametrize("method,optimizer", [("ease", "zo-sgd"), ("zofc", "zo-adam"),
                                              ("finetune", "forward-grad")])
def test_resumed_trial_ends_bit_identical(tmp_path, method, optimizer, interrupt_trial):
    cfg = dict(dataset="digits", init_cls=4, increment=3, epochs=2, limit_batches=2,
               batch_size=16, method=method, optimizer=optimizer, hybrid_epochs=1, history=0.3)
    straight = run_trial(cfg, checkpoint_dir=tmp_path / "a")

    interrupt_trial(cfg, tmp_path / "b", task=1)
    logs = []
    resumed = run_trial(cfg, checkpoint_dir=tmp_path / "b", log=logs.append)
    assert any("resumed after task 2/3" in line for line in logs)
    assert np.array_equal(straight.matrix.a, resumed.matrix.a, equal_nan=True)
    assert straight.summary["forward_passes"] == resumed.summary["forward_passes"]
    a = torch.load(tmp_path / "a" / "trial.pt", weights_only=True)["learner"]["tensors"]
    b = torch.load(tmp_path / "b" / "trial.pt", weights_only=True)["learner"]["tensors"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_numbers_other_seed_differs():
    cfg = dict(TINY, method="finetune", optimizer="zo-sgd", limit_batches=3)
    r1, r2 = run_trial(cfg), run_trial(cfg)
    r3 = run_trial({**cfg, "seed": 5})
    assert np.array_equal(r1.matrix.a, r2.matrix.a, equal_nan=True)
    assert not np.array_equal(r1.matrix.a, r3.matrix.a, equal_nan=True)


def test_nan_loss_stops_with_task_and_step(tmp_path):
    cfg = dict(TINY, method="finetune", optimizer="fo-sgd", lr=1e30, limit_batches=5,
               epochs=3)
    with pytest.raises(DivergenceError, match=r"task 0, epoch \d+, step \d+ .*lower lr"):
        run_trial(cfg, checkpoint_dir=tmp_path)


def run_cli(capsys, *argv):
    """Exit code, stdout and stderr of ``zeroflow ...``; stderr without the progress lines
    (``zeroflow: ...``) a command prints first, so that what remains is its error, if any."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    err = "".join(ln for ln in err.splitlines(keepends=True) if not ln.startswith("zeroflow: "))
    return code, out, err


@pytest.mark.parametrize("argv,needle", [
    (["lrr=0.1"], "unknown config key(s) lrr; allowed: dataset, method"),
    (["optimizer=zo-sgdd"], "choose one of: fo-sgd"),
    (["q=0"], "q=0 is out of range"),
    (["lr=fast"], "lr='fast' is not a valid float"),
    (["dataset=cub", "data_root=/nonexistent/zf"], "/nonexistent/zf/cub"),
    (["missing.yaml"], "config file missing.yaml does not exist"),
    (["backbone=tiny", "weights=/nonexistent/w.pt"], "/nonexistent/w.pt"),
])
def test_cli_bad_input_is_one_line(capsys, argv, needle):
    code, out, err = run_cli(capsys, "run", *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


def test_cli_run_prints_table_and_summary(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("method: zofc\noptimizer: zo-sgd\nepochs: 1\n")
    code, out, err = run_cli(capsys, "run", str(config), "init_cls=5", "increment=5",
                             "limit_batches=2")
    assert code == 0
    assert "task 2/2 done" in err
    assert "after task" in out and "avg accuracy" in out and "forward passes 12 in 4 steps" in out
    last = float(out.split("last accuracy")[1].split("%")[0])
    assert 0.0 <= last <= 100.0 and not math.isnan(last)
    # the run is in MLflow with its per-task metrics and final values
    import mlflow

    client = mlflow.tracking.MlflowClient()
    exp = client.get_experiment_by_name("zeroflow-run")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["method"] == "zofc"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")] == [0, 1]
    assert run.data.metrics["last"] == pytest.approx(last, abs=0.01)


def test_cli_failed_run_is_recorded_as_failed(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "dataset=cub", f"data_root={tmp_path / 'none'}")
    assert code == 2 and "cub" in err
    import mlflow

    client = mlflow.tracking.MlflowClient()
    exp = client.get_experiment_by_name("zeroflow-run")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED" and run.data.params["dataset"] == "cub"


def test_hybrid_runs_first_order_then_forward_passes_within_each_task():
    """hybrid_epochs=1 of 2: epoch 0 of every task steps FO (one pass per step, grads flow),
    epoch 1 the ZO optimizer (2q passes per step); the counts prove the loop switched."""
    q, steps = 3, 2
    cfg = dict(TINY, method="finetune", optimizer="zo-sgd", q=q, epochs=2, limit_batches=steps)
    hybrid = run_trial({**cfg, "hybrid_epochs": 1})
    for task in hybrid.history:
        assert task["forward_passes_task"] == steps * 1 + steps * 2 * q
    zo = run_trial(cfg)
    assert all(task["forward_passes_task"] == 2 * steps * 2 * q for task in zo.history)
    assert not np.array_equal(hybrid.matrix.a, zo.matrix.a, equal_nan=True)
    # ZO-FC's head is pinned to FO-SGD: only its adapter group switches
    zofc = run_trial({**cfg, "method": "zofc", "hybrid_epochs": 1})
    for task in zofc.history:
        assert task["forward_passes_task"] == steps * (1 + 1) + steps * (2 * q + 1)


def test_cli_resumes_from_checkpoint_dir_and_refuses_another_config(capsys, tmp_path,
                                                                     interrupt_trial):
    cfg = dict(TINY, method="ease", optimizer="zo-sgd", limit_batches=2)
    argv = [f"{k}={v}" for k, v in cfg.items()]
    straight = run_trial(cfg)

    interrupt_trial(cfg, tmp_path / "ck")
    code, out, err = run_cli(capsys, "run", *argv, "--checkpoint-dir", str(tmp_path / "ck"))
    assert code == 0, err
    assert "resumed after task 1/2" in err
    assert "task 1/2 epoch" not in err and "task 2/2 epoch 1/1" in err  # task 0 not retrained
    last = float(out.split("last accuracy")[1].split("%")[0])
    assert last == pytest.approx(straight.summary["last"], abs=0.005)

    code, out, err = run_cli(capsys, "run", *argv, "lr=0.5", "--checkpoint-dir",
                             str(tmp_path / "ck"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert "checkpoint belongs to another trial (lr: None → 0.5)" in lines[0]


def test_cli_run_without_tracking_uri_writes_sqlite_store_in_launch_dir(capsys, tmp_path,
                                                                        monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    launch = tmp_path / "launch"
    launch.mkdir()
    monkeypatch.chdir(launch)
    from zeroflow.tracking import default_tracking_uri

    assert default_tracking_uri() == f"sqlite:///{launch / 'mlflow.db'}"
    code, out, err = run_cli(capsys, "run", *[f"{k}={v}" for k, v in TINY.items()],
                             "method=finetune", "optimizer=fo-sgd")
    assert code == 0, err
    assert (launch / "mlflow.db").is_file() and (launch / "mlartifacts").is_dir()
    import mlflow

    client = mlflow.tracking.MlflowClient(f"sqlite:///{launch / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("zeroflow-run").experiment_id])
    assert run.info.status == "FINISHED" and run.info.run_id in out


def test_zo_divergence_stops_the_trial_naming_lr_and_mu(tmp_path):
    """A forward-pass optimizer that blows up: the non-finite scalars skip the update, the loop
    sees the NaN loss and stops with where it happened and both knobs to lower."""
    cfg = dict(TINY, method="finetune", optimizer="zo-sgd", lr=1e30, mu=1.0, limit_batches=5,
               epochs=3)
    with pytest.raises(DivergenceError, match=r"task 0, epoch \d+, step \d+ \(zo-sgd, "
                                              r"lr=1e\+30, mu=1\).*lower lr or mu"):
        run_trial(cfg, checkpoint_dir=tmp_path)


class _Payload:
    """Unpickling this calls pathlib.Path.touch on the given file."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_checkpoint_holding_a_pickled_callable_is_refused_without_running_it(capsys, tmp_path):
    from zeroflow.checkpoint import CHECKPOINT_FILE

    target = tmp_path / "executed"
    ckpt = tmp_path / "ck"
    ckpt.mkdir()
    torch.save({"version": 2, "task": 0, "config": {}, "hook": _Payload(target)},
               ckpt / CHECKPOINT_FILE)
    code, out, err = run_cli(capsys, "run", *[f"{k}={v}" for k, v in TINY.items()],
                             "--checkpoint-dir", str(ckpt))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert f"checkpoint {ckpt / CHECKPOINT_FILE} cannot be loaded safely" in lines[0]
    assert "(it refers to getattr, which is not tensors or plain data)" in lines[0]
    assert "delete it" in lines[0]
    assert not target.exists()


@pytest.mark.parametrize("scope, bottleneck, buffered", [
    ("adapter", 8, True),  # adapters and head: ~2 % of the model -> the fast step
    ("full", 8, False),  # the whole backbone trains -> lean (seed-only), memory first
])
def test_trial_tells_the_auto_step_regime_the_model_size(scope, bottleneck, buffered):
    from zeroflow.assembly import build_learner
    from zeroflow.config import make_config
    from zeroflow.steppers import GroupStepper, task_steppers

    config = make_config({"method": "finetune", "finetune_scope": scope, "optimizer": "zo-sgd",
                          "adapter_bottleneck": bottleneck})
    learner, _ = build_learner(config, torch.device("cpu"))
    learner.before_task(0)
    group = learner.param_groups()[0]
    stepper = task_steppers(learner, config, 0, 1)[0]
    assert stepper.main.buffered is buffered, sum(p.numel() for p in group.params)
    # without the model size, auto sees only the (small) trainable count and picks fast
    assert GroupStepper(group, config, 0, 0, 1).main.buffered is True


def test_run_trial_gives_every_optimizer_the_model_size(monkeypatch):
    import zeroflow.steppers as steppers_mod

    seen = []
    real = steppers_mod.GroupStepper.__init__

    def spy(self, group, config, task, index, epochs, model_numel=None):
        seen.append(model_numel)
        real(self, group, config, task, index, epochs, model_numel)

    monkeypatch.setattr(steppers_mod.GroupStepper, "__init__", spy)
    run_trial({"method": "finetune", "finetune_scope": "full", "optimizer": "zo-sgd",
               "epochs": 1, "limit_batches": 1, "samples_per_class": 4})
    assert len(seen) == 5 and all(n is not None and n > 200_000 for n in seen), seen


def test_zero_epochs_is_the_untrained_baseline_whatever_the_seed():
    """EASE with epochs 0: no step, no forward pass of training, and prototypes of untrained
    adapters (zero up-projections), so the seed that would init and train them changes nothing."""
    cfg = {"method": "ease", "optimizer": "zo-sgd", "epochs": 0, "samples_per_class": 8}
    a, b = run_trial({**cfg, "seed": 0}), run_trial({**cfg, "seed": 1})
    assert a.summary["forward_passes"] == 0 and a.summary["steps"] == 0
    assert np.array_equal(a.matrix.a, b.matrix.a, equal_nan=True)
    trained = run_trial({**cfg, "epochs": 1, "lr": 0.05, "seed": 0})
    assert trained.summary["forward_passes"] > 0


def test_observers_are_called_at_the_named_points_in_order():
    from zeroflow.observers import Observer

    calls = []

    class Spy(Observer):
        def before_task(self, state):
            calls.append(("before_task", state.task))

        def before_epoch(self, state, epoch):
            calls.append(("before_epoch", epoch))

        def after_step(self, state, event):
            calls.append(("after_step", event.global_step))

        def after_epoch(self, state, event):
            calls.append(("after_epoch", event.steps))

        def after_eval(self, state):
            calls.append(("after_eval", state.matrix.done))
            return {}

        def after_task(self, state, metrics):
            calls.append(("after_task", metrics["steps"]))

    run_trial({**TINY, "epochs": 2}, observers=[Spy()])  # 2 tasks, 2 epochs of 1 step each
    per_task = [("before_epoch", 0), "step", ("after_epoch", 1),
                ("before_epoch", 1), "step", ("after_epoch", 1)]
    expected = []
    for t in range(2):
        steps = iter((2 * t + 1, 2 * t + 2))
        expected += [("before_task", t)]
        expected += [("after_step", next(steps)) if c == "step" else c for c in per_task]
        expected += [("after_eval", t + 1), ("after_task", 2.0 * (t + 1))]
    assert calls == expected


def test_a_metric_an_observer_did_not_declare_is_refused():
    from zeroflow.observers import Observer

    class Undeclared(Observer):
        def after_eval(self, state):
            return {"my_metric": 1.0}

    with pytest.raises(ValueError, match="my_metric.*zeroflow.metrics.TASK_METRICS"):
        run_trial(TINY, observers=[Undeclared()])
