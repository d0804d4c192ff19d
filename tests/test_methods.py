"""Methods against their documented formulas, computed independently here: EASE's subspace
reweighting and prototype completion over several tasks, ZO-FC's masking of earlier tasks'
logits, and the training closure's dropout masks shared by f(θ + μz) and f(θ − μz)."""

import math

import torch
import torch.nn.functional as F

from zeroflow import optim
from zeroflow.config import make_config
from zeroflow.methods.ease import complete_prototypes, reweighted_logits
from zeroflow.trial import _closure, build_learner

TINY = dict(dataset="digits", init_cls=4, increment=3, epochs=1, batch_size=16,
            samples_per_class=12)


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
    x = torch.rand(6, 3, 32, 32, generator=g)
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
    x = torch.rand(16, 3, 32, 32, generator=g)
    y = torch.arange(16) % len(scenario.task_classes(0))
    params = [p for group in learner.param_groups() for p in group.params]
    opt = optim.build("zo-sgd", params, mu=1e-4, q=8, seed=0)
    with torch.no_grad():
        same = [float(_closure(learner, opt, x, y, 11)()) for _ in range(2)]
        other = float(_closure(learner, opt, x, y, 12)())
    assert same[0] == same[1]
    assert abs(other - same[0]) > 1e-3, "dropout must matter in this setting"
    values = []
    closure = _closure(learner, opt, x, y, 11)

    def recording():
        values.append(float(closure()))
        return torch.tensor(values[-1])

    opt.evaluate(recording, opt.direction_seeds())
    pairs = list(zip(values[0::2], values[1::2]))  # (f(θ + μz), f(θ − μz)) per direction
    # same masks: f± differ by O(μ) only; other masks would differ like `other` does
    assert max(abs(a - b) for a, b in pairs) < 0.05 * abs(other - same[0])
