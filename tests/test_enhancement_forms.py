"""The enhancements' two forms (ours and the authors' code, THUDM/INFTY) checked against their
definitions, computed here independently: direction history h <- αh + (1-α)z, the infty
sparsity mask (zeroed where N(0, 1) < s: a fraction Φ(s)), masks fixed within a task and
changing across tasks; the constant ZO lr and the hybrid's FO lr; exact state round trips."""

import copy
import math

import pytest
import torch
from conftest import tiny_trial

from zeroflow import optim
from zeroflow.config import make_config
from zeroflow.errors import ConfigError
from zeroflow.methods.base import ParamGroup
from zeroflow.optim.perturb import DirectionSampler
from zeroflow.steppers import GroupStepper

A = torch.tensor([[2.0, 0.5, 0.0], [0.0, 1.0, -1.0], [1.0, 0.0, 3.0]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


def loss(theta):
    return 0.5 * ((A @ theta - B) ** 2).sum()


def phi(s: float) -> float:
    return 0.5 * (1.0 + math.erf(s / math.sqrt(2.0)))


def test_direction_history_is_the_average_of_directions_query_by_query():
    theta = torch.nn.Parameter(torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64))
    lr, mu, alpha, q = 0.05, 1e-3, 0.6, 3
    opt = optim.build("zo-sgd", [theta], lr=lr, mu=mu, q=q, seed=4, momentum=0.0,
                      weight_decay=0.0, history=alpha, history_mode="direction")
    expected = theta.detach().clone()
    h = None
    for _ in range(3):
        zs = [opt.sampler.block(s, 0, theta) for s in opt.direction_seeds()]
        g = torch.zeros(3, dtype=torch.float64)
        for z in zs:  # the definition: per query, h <- αh + (1-α)z (h0 = z), g += c h / q
            c = (loss(expected + mu * z) - loss(expected - mu * z)) / (2 * mu)
            h = z.clone() if h is None else alpha * h + (1 - alpha) * z
            g += c * h / q
        expected = expected - lr * g
        opt.step(lambda: loss(theta))
        torch.testing.assert_close(theta.detach(), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(opt.state[theta]["history_direction"], h)


@pytest.mark.parametrize("name", ["zo-sgd", "zo-adam-conserve", "forward-grad"])
def test_direction_history_is_the_same_in_every_step_regime_and_in_halves(name):
    runs = []
    for buffer, halves in (("off", False), ("on", False), ("off", True)):
        theta = torch.nn.Parameter(torch.tensor([0.3, -0.2, 1.0]))
        opt = optim.build(name, [theta], lr=0.05, q=2, seed=3, history=0.7,
                          history_mode="direction", direction_buffer=buffer)
        for _ in range(4):
            closure = lambda theta=theta: loss(theta.double()).float()  # noqa: E731
            if halves:  # what query workers run: evaluate, then apply
                opt.apply(opt.evaluate(closure, opt.direction_seeds()), closure)
            else:
                opt.step(closure)
        runs.append(theta.detach().clone())
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])


def test_estimate_history_is_unchanged_and_differs_from_direction_history():
    runs = {}
    for mode in ("estimate", "direction"):
        theta = torch.nn.Parameter(torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64))
        opt = optim.build("zo-sgd", [theta], lr=0.05, q=2, seed=1, history=0.5,
                          history_mode=mode)
        for _ in range(3):
            opt.step(lambda theta=theta: loss(theta))
        runs[mode] = theta.detach().clone()
    assert not torch.equal(runs["estimate"], runs["direction"])


@pytest.mark.parametrize("s", [0.1, 0.5, 0.9])
def test_infty_mask_zeroes_a_fraction_phi_of_s_and_is_one_mask_per_optimizer(s):
    like = torch.empty(200_000)
    sampler = DirectionSampler(sparsity=s, sparsity_resample=False, seed=3,
                               sparsity_mask="infty")
    a, b = sampler.block(11, 0, like), sampler.block(12, 0, like)
    assert abs(float((a == 0).double().mean()) - phi(s)) < 0.005  # not s: Φ(s)
    assert torch.equal(a == 0, b == 0) and not torch.equal(a, b)  # one mask, new values
    exact = DirectionSampler(sparsity=s, sparsity_resample=False, seed=3).block(11, 0, like)
    assert int((exact == 0).sum()) == int(s * like.numel())
    resampled = DirectionSampler(sparsity=s, seed=3, sparsity_mask="infty")
    assert not torch.equal(resampled.block(11, 0, like) == 0, resampled.block(12, 0, like) == 0)


def masks(config, task: int, group: int = 0) -> torch.Tensor:
    """The zero pattern of one direction of ``task``'s optimizer of parameter group ``group``."""
    p = torch.nn.Parameter(torch.zeros(5000))
    stepper = GroupStepper(ParamGroup("g", [p]), config, task, group, epochs=2)
    return stepper.main.sampler.block(99, 0, p) == 0


@pytest.mark.parametrize("form", ["exact", "infty"])
def test_trial_masks_are_fixed_within_a_task_and_change_across_tasks(form):
    task_cfg = make_config(dataset="digits", optimizer="zo-sgd", sparsity=0.5, sparsity_mask=form,
                           sparsity_resample="task")
    assert torch.equal(masks(task_cfg, 0), masks(task_cfg, 0))
    assert not torch.equal(masks(task_cfg, 0), masks(task_cfg, 1))
    fixed_cfg = make_config(task_cfg.to_dict(), sparsity_resample="fixed")
    assert torch.equal(masks(fixed_cfg, 0), masks(fixed_cfg, 3))
    assert not torch.equal(masks(fixed_cfg, 0), masks(fixed_cfg, 0, group=1))


def test_constant_zo_schedule_and_the_hybrid_fo_lr():
    p = torch.nn.Parameter(torch.zeros(4))
    cfg = make_config(dataset="digits", optimizer="zo-adam", lr=1e-3, hybrid_epochs=2,
                      hybrid_fo_lr=0.05, zo_lr_schedule="constant")
    stepper = GroupStepper(ParamGroup("g", [p]), cfg, 0, 0, epochs=4)
    assert stepper.fo.param_groups[0]["lr"] == 0.05
    for _ in range(3):
        stepper.epoch_end()
    assert stepper.main.param_groups[0]["lr"] == 1e-3  # constant, as the authors' code
    assert stepper.fo.param_groups[0]["lr"] < 0.05  # the FO phase keeps its cosine
    cosine = GroupStepper(ParamGroup("g", [p]), make_config(cfg.to_dict(),
                                                            zo_lr_schedule="cosine"), 0, 0, 4)
    cosine.epoch_end()
    assert cosine.main.param_groups[0]["lr"] < 1e-3


@pytest.mark.parametrize("name,hp", [
    ("zo-sgd", {"history": 0.5, "history_mode": "direction", "q": 3, "sparsity": 0.3,
                "sparsity_mask": "infty", "sparsity_resample": False, "mask_seed": 17}),
    ("zo-adam-conserve", {"history": 0.4, "history_mode": "direction", "sparsity": 0.6,
                          "sparsity_mask": "infty"}),
    ("forward-grad", {"history": 0.3, "history_mode": "direction", "sparsity": 0.2,
                      "sparsity_mask": "infty", "sparsity_resample": False}),
])
def test_state_dict_mid_task_continues_bit_for_bit(name, hp):
    def run(opt, theta, n):
        for _ in range(n):
            opt.step(lambda: loss(theta))
        return theta.detach().clone()

    theta = torch.nn.Parameter(torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64))
    opt = optim.build(name, [theta], lr=1e-2, seed=5, **hp)
    run(opt, theta, 3)
    saved, saved_theta = copy.deepcopy(opt.state_dict()), theta.detach().clone()
    straight = run(opt, theta, 3)
    theta2 = torch.nn.Parameter(saved_theta)
    opt2 = optim.build(name, [theta2], lr=1e-2, **{**hp, "seed": 99, "mask_seed": 98})
    opt2.load_state_dict(saved)  # seeds, the mask's seed and the history come back
    assert torch.equal(straight, run(opt2, theta2, 3))


def test_resumed_trial_with_the_new_options_ends_bit_identical(tmp_path, interrupt_trial):
    import numpy as np

    from zeroflow.trial import run_trial

    cfg = tiny_trial(init_cls=4, increment=3, epochs=2, limit_batches=2, method="ease",
                     optimizer="zo-adam", ease_perturb_prototypes=True, history=0.5,
                     history_mode="direction", sparsity=0.4, sparsity_mask="infty",
                     sparsity_resample="task", hybrid_epochs=1, hybrid_fo_lr=0.02,
                     zo_lr_schedule="constant")
    straight = run_trial(cfg, checkpoint_dir=tmp_path / "a")
    interrupt_trial(cfg, tmp_path / "b", task=1)
    resumed = run_trial(cfg, checkpoint_dir=tmp_path / "b")
    assert np.array_equal(straight.matrix.a, resumed.matrix.a, equal_nan=True)
    a = torch.load(tmp_path / "a" / "trial.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "trial.pt", weights_only=True)
    ta, tb = a["learner"]["tensors"], b["learner"]["tensors"]
    assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


@pytest.mark.parametrize("keys,needle", [
    ({"history_mode": "ema"}, "history_mode='ema' is not valid; choose one of: estimate"),
    ({"sparsity_mask": "random"}, "sparsity_mask='random' is not valid; choose one of: exact"),
    ({"sparsity_resample": "step"}, "sparsity_resample='step' is not valid; choose one of"),
    ({"zo_lr_schedule": "linear"}, "zo_lr_schedule='linear' is not valid; choose one of"),
    ({"hybrid_fo_lr": 0}, "hybrid_fo_lr=0.0 is out of range"),
    ({"mask_old_logits": "maybe"}, "mask_old_logits='maybe' is not a valid bool (or none)"),
    ({"mask_old_logits": True, "method": "ease"}, "mask_old_logits applies to finetune and"),
    ({"ease_perturb_prototypes": True, "method": "aper"}, "ease_perturb_prototypes=true "
                                                          "applies to method=ease"),
    ({"sharpness_scope": "zo"}, "sharpness_scope=zo needs sharpness=true"),
    ({"sharpness_scope": "head", "sharpness": True}, "sharpness_scope='head' is not valid"),
])
def test_bad_values_are_one_line_errors(keys, needle):
    with pytest.raises(ConfigError) as err:
        make_config(dataset="digits", **keys)
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_the_config_offers_the_forms_the_optimizer_takes():
    """config.py keeps its own copy of the choices (it stays importable without torch): the
    two copies must agree, or a trial would pass validation and fail at the optimizer."""
    from zeroflow import config
    from zeroflow.optim import enhance

    assert config.HISTORY_MODES == enhance.HISTORY_MODES
    assert config.SPARSITY_MASKS == enhance.SPARSITY_MASKS
