"""The one training loop: every method × optimizer pair, exact forward-pass accounting, exact
resume, EASE's prototype completion, NaN handling, and the CLI's errors and output."""

import math

import numpy as np
import pytest
import torch

from zeroflow import optim
from zeroflow.cli import main
from zeroflow.errors import DivergenceError
from zeroflow.methods.ease import complete_prototypes, reweighted_logits
from zeroflow.trial import run_trial

TINY = dict(dataset="digits", init_cls=5, increment=5, epochs=1, limit_batches=1, batch_size=16,
            eval_batch_size=512, samples_per_class=12)


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
def test_resumed_trial_ends_bit_identical(tmp_path, method, optimizer):
    cfg = dict(dataset="digits", init_cls=4, increment=3, epochs=2, limit_batches=2,
               batch_size=16, method=method, optimizer=optimizer, hybrid_epochs=1, history=0.3)
    straight = run_trial(cfg, checkpoint_dir=tmp_path / "a")

    class Crash(Exception):
        pass

    def crash_after_task_1(report):
        if report.task == 1:
            raise Crash

    with pytest.raises(Crash):
        run_trial(cfg, crash_after_task_1, checkpoint_dir=tmp_path / "b")
    logs = []
    resumed = run_trial(cfg, checkpoint_dir=tmp_path / "b", log=logs.append)
    assert any("resumed after task 2/3" in line for line in logs)
    assert np.array_equal(straight.matrix.a, resumed.matrix.a, equal_nan=True)
    assert straight.summary["forward_passes"] == resumed.summary["forward_passes"]
    a = torch.load(tmp_path / "a" / "trial.pt", weights_only=False)["learner"]["tensors"]
    b = torch.load(tmp_path / "b" / "trial.pt", weights_only=False)["learner"]["tensors"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_numbers_other_seed_differs():
    cfg = dict(TINY, method="finetune", optimizer="zo-sgd", limit_batches=3)
    r1, r2 = run_trial(cfg), run_trial(cfg)
    r3 = run_trial({**cfg, "seed": 5})
    assert np.array_equal(r1.matrix.a, r2.matrix.a, equal_nan=True)
    assert not np.array_equal(r1.matrix.a, r3.matrix.a, equal_nan=True)


def test_ease_prototype_completion_tiny_case():
    # two tasks of two classes, 2-d features, 2 subspaces
    protos = torch.zeros(4, 2, 2)
    protos[2:, 0] = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # new classes in old subspace
    protos[2:, 1] = torch.tensor([[3.0, 1.0], [-1.0, 2.0]])  # new classes in new subspace
    protos[:2, 0] = torch.tensor([[2.0, 0.0], [1.0, 1.0]])  # old classes in old subspace
    complete_prototypes(protos, [range(0, 2), range(2, 4)], 1)
    # class 0 ∥ new class 2 (cos 1 vs 0) → weights softmax([1, 0]); class 1: cos 1/√2 to both
    w0 = torch.softmax(torch.tensor([1.0, 0.0]), 0)
    expected0 = w0[0] * torch.tensor([3.0, 1.0]) + w0[1] * torch.tensor([-1.0, 2.0])
    expected1 = 0.5 * torch.tensor([3.0, 1.0]) + 0.5 * torch.tensor([-1.0, 2.0])
    torch.testing.assert_close(protos[0, 1], expected0)
    torch.testing.assert_close(protos[1, 1], expected1)
    # the real prototypes are untouched
    torch.testing.assert_close(protos[2:, 1], torch.tensor([[3.0, 1.0], [-1.0, 2.0]]))


def test_ease_reweighting():
    protos = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])  # [C=2, 2, D=2]
    feats = [torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]])]
    logits = reweighted_logits(feats, protos, [range(0, 1), range(1, 2)], alpha=0.1)
    # class 0 (task 0): 1·cos(f0, p00) + 0.1·cos(f1, p01) = 1 + 0; class 1: 0.1·0 + 1·1
    torch.testing.assert_close(logits, torch.tensor([[1.0, 1.0]]))
    feats = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])]
    logits = reweighted_logits(feats, protos, [range(0, 1), range(1, 2)], alpha=0.1)
    torch.testing.assert_close(logits, torch.tensor([[1.1, 0.0]]))


def test_nan_loss_stops_with_task_and_step(tmp_path):
    cfg = dict(TINY, method="finetune", optimizer="fo-sgd", lr=1e30, limit_batches=5,
               epochs=3)
    with pytest.raises(DivergenceError, match=r"task 0, epoch \d+, step \d+ .*lower lr"):
        run_trial(cfg, checkpoint_dir=tmp_path)


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
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
