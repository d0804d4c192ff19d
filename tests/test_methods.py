"""Methods against their documented formulas, computed independently here: EASE's subspace
reweighting and prototype completion over several tasks, ZO-FC's masking of earlier tasks'
logits, the training closure's dropout masks shared by f(θ + μz) and f(θ − μz), full-backbone
finetune (what trains, its loss, its checkpoint) and EASE's OmniBenchmark variant."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_trial

from zeroflow import optim
from zeroflow.assembly import build_learner
from zeroflow.config import make_config
from zeroflow.methods.ease import complete_prototypes, reweighted_logits
from zeroflow.models.backbone import TINY_VIT_CONFIG
from zeroflow.steppers import training_closure

TINY_SIZE = TINY_VIT_CONFIG["img_size"]

TINY = tiny_trial(init_cls=4, increment=3, epochs=1, samples_per_class=12)


def cos(u, v):
    return float(u @ v) / (float(u.norm()) * float(v.norm()))


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


def test_ease_reweighting_weights_other_subspaces_alpha_over_t():
    """Three tasks (t = 2): a class of task i scores Σ_j w_ij cos(f_j, P[c, j]), w_ii = 1 and
    w_ij = α / t for j ≠ i, written out as loops over classes and subspaces."""
    g = torch.Generator().manual_seed(0)
    ranges = [range(0, 2), range(2, 3), range(3, 5)]
    protos = torch.randn(5, 3, 4, generator=g)
    feats = [torch.randn(2, 4, generator=g) for _ in range(3)]
    for alpha in (0.1, 0.3):
        logits = reweighted_logits(feats, protos, ranges, alpha)
        expected = torch.zeros(2, 5)
        for b in range(2):
            for i, cls in enumerate(ranges):
                for c in cls:
                    expected[b, c] = sum((1.0 if j == i else alpha / 2) *
                                         cos(feats[j][b], protos[c, j]) for j in range(3))
        torch.testing.assert_close(logits, expected)


def test_ease_completion_over_several_later_tasks():
    """t = 2: old task 0 is completed in subspaces 1 (from tasks 1..2's classes) and 2 (from
    task 2's), old task 1 in subspace 2; similarities measured in the old task's subspace."""
    g = torch.Generator().manual_seed(1)
    ranges = [range(0, 2), range(2, 4), range(4, 7)]
    real = torch.randn(7, 3, 5, generator=g)
    protos = real.clone()
    for old in range(2):  # what completion must overwrite starts as garbage
        protos[ranges[old].start:ranges[old].stop, old + 1:] = 1e6
    complete_prototypes(protos, ranges, 2)
    expected = real.clone()
    for old in range(2):
        for s in range(old + 1, 3):
            later = list(range(ranges[s].start, 7))
            for c in ranges[old]:
                sims = [cos(real[c, old], real[r, old]) for r in later]
                weights = [math.exp(v) / sum(math.exp(w) for w in sims) for v in sims]
                expected[c, s] = sum(w * real[r, s] for w, r in zip(weights, later))
    torch.testing.assert_close(protos, expected)


def learner_at_task(method, task, **overrides):
    config = make_config({**TINY, "method": method, **overrides})
    learner, scenario = build_learner(config, torch.device("cpu"))
    for t in range(task + 1):
        learner.before_task(t)
    return learner, scenario


def test_zofc_loss_ignores_earlier_tasks_logits():
    learner, scenario = learner_at_task("zofc", 1)
    new = scenario.task_classes(1)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(6, 3, TINY_SIZE, TINY_SIZE, generator=g)
    y = torch.tensor([new.start, new.start + 1, new.start + 2] * 2)
    with torch.no_grad():
        loss = learner.loss(x, y)
        logits = learner.head(learner.model.features(x, 0))
        expected = F.cross_entropy(logits[:, new.start:], y - new.start)
        torch.testing.assert_close(loss, expected)
        learner.head.weight[: new.start].add_(torch.randn(new.start, learner.head.dim,
                                                          generator=g))
        assert torch.equal(learner.loss(x, y), loss)  # old rows do not matter
        learner.head.weight[new.start].mul_(-3.0)
        assert not torch.equal(learner.loss(x, y), loss)  # new rows do


def test_training_closure_gives_f_plus_and_f_minus_the_same_dropout_masks():
    learner, scenario = learner_at_task("finetune", 0)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # a non-zero up-projection, so adapter dropout changes the loss
        for p in learner.model.adapter_sets[0].parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    learner.train()
    x = torch.rand(16, 3, TINY_SIZE, TINY_SIZE, generator=g)
    y = torch.arange(16) % len(scenario.task_classes(0))
    params = [p for group in learner.param_groups() for p in group.params]
    opt = optim.build("zo-sgd", params, mu=1e-4, q=8, seed=0)
    with torch.no_grad():
        same = [float(training_closure(learner, opt, x, y, 11)()) for _ in range(2)]
        other = float(training_closure(learner, opt, x, y, 12)())
    assert same[0] == same[1]
    assert abs(other - same[0]) > 1e-3, "dropout must matter in this setting"
    values = []
    closure = training_closure(learner, opt, x, y, 11)

    def recording():
        values.append(float(closure()))
        return torch.tensor(values[-1])

    opt.evaluate(recording, opt.direction_seeds())
    pairs = list(zip(values[0::2], values[1::2]))  # (f(θ + μz), f(θ − μz)) per direction
    # same masks: f± differ by O(μ) only; other masks would differ like `other` does
    assert max(abs(a - b) for a, b in pairs) < 0.05 * abs(other - same[0])


def run_capturing(monkeypatch, cfg, reporter=None, built=None):
    """``run_trial(cfg)`` and the learner it trained (its ``build_learner`` wrapped; the
    learner is also appended to ``built`` as soon as it exists, for a reporter to inspect)."""
    from zeroflow import trial

    built = [] if built is None else built

    def capture(config, device):
        learner, scenario = build_learner(config, device)
        built.append(learner)
        return learner, scenario

    monkeypatch.setattr(trial, "build_learner", capture)
    result = trial.run_trial(cfg, reporter)
    return result, built[0]


def backbone_tensors(learner):
    return {k: v.detach().clone() for k, v in learner.model.backbone.named_parameters()}


@pytest.mark.parametrize("optimizer", ["fo-sgd", "zo-sgd"])
def test_finetune_full_trains_every_backbone_tensor_and_adapter_scope_none(monkeypatch,
                                                                           optimizer):
    cfg = {**TINY, "method": "finetune", "optimizer": optimizer, "limit_batches": 2, "lr": 0.05}
    fresh = backbone_tensors(learner_at_task("finetune", 0)[0])
    _, full = run_capturing(monkeypatch, {**cfg, "finetune_scope": "full"})
    trained = backbone_tensors(full)
    assert trained.keys() == fresh.keys()
    unchanged = [k for k in fresh if torch.equal(trained[k], fresh[k])]
    assert not unchanged, f"full scope left these backbone tensors untouched: {unchanged}"
    assert len(full.model.adapter_sets) == 0  # full scope has no adapter
    _, adapted = run_capturing(monkeypatch, {**cfg, "finetune_scope": "adapter"})
    kept = backbone_tensors(adapted)
    assert all(torch.equal(kept[k], fresh[k]) for k in fresh)


def test_finetune_full_loss_is_all_logits_on_task_0_then_new_class_logits_only():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(6, 3, TINY_SIZE, TINY_SIZE, generator=g)
    learner, scenario = learner_at_task("finetune", 0, finetune_scope="full")
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    with torch.no_grad():  # task 0: cross-entropy over every logit, on the plain backbone
        logits = F.linear(learner.model.backbone(x), learner.head.weight, learner.head.bias)
        torch.testing.assert_close(learner.loss(x, y), F.cross_entropy(logits, y))
    learner, scenario = learner_at_task("finetune", 1, finetune_scope="full")
    new = scenario.task_classes(1)
    y = torch.tensor([new.start, new.start + 1, new.start + 2] * 2)
    with torch.no_grad():
        loss = learner.loss(x, y)
        logits = F.linear(learner.model.backbone(x), learner.head.weight, learner.head.bias)
        torch.testing.assert_close(loss, F.cross_entropy(logits[:, new.start:], y - new.start))
        learner.head.weight[: new.start].add_(torch.randn(new.start, learner.head.dim,
                                                          generator=g))
        learner.head.bias[: new.start].add_(5.0)
        assert torch.equal(learner.loss(x, y), loss)  # old classes' logits do not matter
        learner.head.bias[new.start].add_(1.0)
        assert not torch.equal(learner.loss(x, y), loss)  # new ones do


def test_finetune_full_checkpoints_the_backbone_and_resumes_bit_identical(tmp_path,
                                                                        interrupt_trial):
    from zeroflow.trial import run_trial

    cfg = {**TINY, "method": "finetune", "finetune_scope": "full", "optimizer": "zo-sgd",
           "limit_batches": 2, "lr": 0.05}
    straight = run_trial(cfg, checkpoint_dir=tmp_path / "a")

    interrupt_trial(cfg, tmp_path / "b")
    resumed = run_trial(cfg, checkpoint_dir=tmp_path / "b")
    assert np.array_equal(straight.matrix.a, resumed.matrix.a, equal_nan=True)
    a = torch.load(tmp_path / "a" / "trial.pt", weights_only=True)["learner"]["tensors"]
    b = torch.load(tmp_path / "b" / "trial.pt", weights_only=True)["learner"]["tensors"]
    assert any(k.startswith("model.backbone.") for k in a)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_ease_omni_trains_task_0_only_and_predicts_with_pretrained_and_adapter_prototypes(
        monkeypatch):
    cfg = {**TINY, "method": "ease", "ease_variant": "omni", "optimizer": "fo-sgd",
           "lr": 0.05, "limit_batches": 2}
    fresh = learner_at_task("ease", 0, ease_variant="omni")[0]
    init = [p.detach().clone() for p in fresh.model.adapter_sets[0].parameters()]
    after_task, built = [], []

    def snapshot(report):
        after_task.append([p.detach().clone()
                           for p in built[0].model.adapter_sets[0].parameters()])

    result, learner = run_capturing(monkeypatch, cfg, snapshot, built)
    scenario = learner.scenario
    n_tasks = scenario.n_tasks
    assert n_tasks == 3 and len(after_task) == n_tasks
    assert result.summary["steps"] == 2  # task 0's two batches, nothing later
    assert len(learner.model.adapter_sets) == 1
    assert any(not torch.equal(a, b) for a, b in zip(after_task[0], init))  # task 0 trained
    for later in after_task[1:]:
        assert all(torch.equal(a, b) for a, b in zip(later, after_task[0]))
    # independent: class means of [plain ViT CLS ‖ adapter-0 features] (test transform), cosine
    learner.eval()
    with torch.no_grad():
        protos = []
        for t in range(n_tasks):
            data = scenario.train_set(t, augment=False)
            xs = torch.stack([data[i][0] for i in range(len(data))])
            ys = torch.tensor([data[i][1] for i in range(len(data))])
            feats = torch.cat([learner.model.backbone(xs), learner.model.features(xs, 0)], dim=1)
            protos += [feats[ys == c].mean(0) for c in scenario.task_classes(t)]
        protos = torch.stack(protos)
        test = scenario.test_set_upto(n_tasks - 1)
        x = torch.stack([test[i][0] for i in range(0, len(test), 3)])
        f = torch.cat([learner.model.backbone(x), learner.model.features(x, 0)], dim=1)
        expected = torch.tensor([[cos(f[b], protos[c]) for c in range(len(protos))]
                                 for b in range(len(x))])
        torch.testing.assert_close(learner.predict(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("argv,needle", [
    (["ease_variant=omnii"], "ease_variant='omnii' is not valid; choose one of: standard, omni"),
    (["finetune_scope=all"], "finetune_scope='all' is not valid; choose one of: adapter, full"),
])
def test_bad_ease_variant_or_finetune_scope_is_a_one_line_error(capsys, argv, needle):
    from zeroflow.cli import main

    code = main(["run", *argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if not ln.startswith("zeroflow: ")]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], err
