"""Method options for comparing with the authors' code: EASE's prototypes in the ZO set (as
THUDM/INFTY perturbs them), one ``mask_old_logits`` for finetune and ZO-FC, and sharpness over
the tensors of the trial's own optimizer only."""

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_trial

from zeroflow.analysis.sharpness import measured_tensors
from zeroflow.assembly import build_learner
from zeroflow.config import make_config
from zeroflow.models.backbone import TINY_VIT_CONFIG

TINY = tiny_trial(init_cls=4, increment=3, epochs=1, samples_per_class=12)
SIZE = TINY_VIT_CONFIG["img_size"]


def learner_at_task(method, task, **keys):
    learner, scenario = build_learner(make_config({**TINY, "method": method, **keys}),
                                      torch.device("cpu"))
    for t in range(task + 1):
        learner.before_task(t)
    return learner, scenario


def test_ease_prototypes_join_the_zo_set_only_when_asked():
    plain, _ = learner_at_task("ease", 1)
    infty, _ = learner_at_task("ease", 1, ease_perturb_prototypes=True)
    [group] = infty.param_groups()
    assert group.params[-1] is infty.protos and group.optimizer is None
    assert all(p is not plain.protos for p in plain.param_groups()[0].params)


def test_query_workers_push_the_prototypes_with_the_other_trained_tensors():
    from zeroflow.distributed.replica import trainable_tensors

    learner, _ = learner_at_task("ease", 1, ease_perturb_prototypes=True)
    pushed = trainable_tensors(learner)
    assert pushed["protos"] is not None and pushed["protos"].shape == learner.protos.shape


def test_perturbed_prototypes_change_only_earlier_classes_prototypes(monkeypatch):
    """The loss never reads the prototypes, so the adapters train exactly as without them and
    task 0's accuracy is the same; only earlier classes' prototypes carry the update noise."""
    from zeroflow import trial

    cfg = {**TINY, "method": "ease", "optimizer": "zo-sgd", "limit_batches": 2, "lr": 0.05}
    learned = {}
    for flag in (False, True):
        built = []

        def capture(config, device, built=built):
            pair = build_learner(config, device)
            built.append(pair[0])
            return pair

        monkeypatch.setattr(trial, "build_learner", capture)
        result = trial.run_trial({**cfg, "ease_perturb_prototypes": flag})
        learned[flag] = (result.matrix.a, built[0].trainable_state()["tensors"])
    (a0, t0), (a1, t1) = learned[False], learned[True]
    assert a0[0, 0] == a1[0, 0]
    adapters = [k for k in t0 if "adapter" in k]
    assert adapters and all(torch.equal(t0[k], t1[k]) for k in adapters)
    p0, p1 = t0["protos"], t1["protos"]  # tasks of 4, 3, 3 classes
    for task, own in ((0, slice(0, 4)), (1, slice(4, 7))):  # noisy in their own subspace
        assert not torch.equal(p0[own, task], p1[own, task])
    last = slice(7, 10)  # the last task's: overwritten after training, as the authors' code
    assert torch.equal(p0[last], p1[last])
    assert not np.array_equal(a0, a1)


@pytest.mark.parametrize("method,setting,masked", [
    ("finetune", None, False), ("finetune", True, True), ("zofc", None, True),
    ("zofc", False, False)])
def test_mask_old_logits_is_one_option_for_finetune_and_zofc(method, setting, masked):
    learner, scenario = learner_at_task(method, 1, mask_old_logits=setting)
    new = scenario.task_classes(1)
    g = torch.Generator().manual_seed(2)
    x = torch.rand(6, 3, SIZE, SIZE, generator=g)
    y = torch.tensor([new.start, new.start + 1, new.start + 2] * 2)
    with torch.no_grad():
        logits = learner.head(learner.model.features(x, 0))
        expected = (F.cross_entropy(logits[:, new.start:], y - new.start) if masked
                    else F.cross_entropy(logits, y))
        torch.testing.assert_close(learner.loss(x, y), expected)


def test_full_finetune_keeps_its_slice_and_can_unmask():
    sliced, scenario = learner_at_task("finetune", 1, finetune_scope="full")
    plain, _ = learner_at_task("finetune", 1, finetune_scope="full", mask_old_logits=False)
    assert sliced.masks_old and not plain.masks_old


def test_sharpness_scope_zo_measures_the_configured_optimizers_tensors_only():
    learner, _ = learner_at_task("zofc", 0, sharpness=True, sharpness_scope="zo")
    steppers = [types.SimpleNamespace(group=g) for g in learner.param_groups()]
    adapter = set(map(id, learner.model.adapter_sets[0].parameters()))
    assert set(map(id, measured_tensors(steppers, "zo"))) == adapter
    every = set(map(id, measured_tensors(steppers, "all")))
    assert every == adapter | set(map(id, learner.head.parameters()))
