"""The optimizers against math: estimator means vs true gradients, exact pass counts, Conserve's
guarantee, determinism, exact state round trips, equality with torch.optim, and that each one
learns."""

import copy

import pytest
import torch

from zeroflow import optim
from zeroflow.errors import ConfigError
from zeroflow.optim.perturb import DirectionSampler
from zeroflow.seeding import derive_seed

D = 50


def quadratic(d=D, seed=0, dtype=torch.float64):
    """f(θ) = ½ θᵀAθ − bᵀθ with A SPD; returns (A, b, θ0, ∇f(θ0))."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(d, d, generator=g, dtype=dtype)
    a = m @ m.T / d + torch.eye(d, dtype=dtype)
    b = torch.randn(d, generator=g, dtype=dtype)
    theta0 = torch.randn(d, generator=g, dtype=dtype)
    return a, b, theta0, a @ theta0 - b


def closure_for(opt, theta, a, b):
    def closure():
        if opt.uses_backward:
            opt.zero_grad()
        loss = 0.5 * theta @ a @ theta - b @ theta
        if opt.uses_backward:
            loss.backward()
        return loss

    return closure


def estimate_mean(name, n, seed, **hp):
    """Mean of n single-direction estimates (the q = n estimate) at θ0."""
    a, b, theta0, grad = quadratic()
    theta = torch.nn.Parameter(theta0.clone())
    opt = optim.build(name, [theta], lr=1.0, seed=seed, **hp)
    seeds = [derive_seed(seed, 10_000, i) for i in range(n)]
    est = opt.evaluate(closure_for(opt, theta, a, b), seeds)
    g = opt.sampler.combine(est.seeds, [s / n for s in est.scalars], 0, theta.detach())
    return g, grad


@pytest.mark.parametrize(
    "name,hp,extra_var",
    [
        ("zo-sgd", {"perturbation": "gaussian"}, 1),  # E‖(g·z)z − g‖² = (d + 1)‖g‖²
        ("zo-sgd", {"perturbation": "rademacher"}, -1),  # (d − 1)‖g‖²
        ("zo-sgd", {"difference": "forward"}, 1),
        ("zo-sgd", {"difference": "forward", "perturbation": "rademacher"}, -1),
        ("forward-grad", {}, 1),
    ],
)
@pytest.mark.slow
def test_estimator_mean_converges_like_one_over_sqrt_n(name, hp, extra_var):
    """MSE of the n-sample mean vs ∇f equals the closed form (d ± 1)‖g‖²/n."""
    mses = {}
    for n in (50, 800):
        errs = []
        for rep in range(12):
            g, grad = estimate_mean(name, n, seed=1000 * n + rep, **hp)
            errs.append(float(((g - grad) ** 2).sum()))
        mses[n] = sum(errs) / len(errs)
        theory = (D + extra_var) * float(grad @ grad) / n
        assert 0.6 * theory < mses[n] < 1.6 * theory, (n, mses[n], theory)
    # error shrinks like 1/sqrt(n): 16× more samples → 16× smaller MSE (4× smaller error)
    assert 8 < mses[50] / mses[800] < 32


@pytest.mark.slow
def test_sparse_estimate_targets_masked_gradient():
    """With s of coordinates zeroed uniformly, E[g] = (1 − k/n) ∇f."""
    s = 0.6
    n_keep = (D - int(s * D)) / D
    g, grad = estimate_mean("zo-sgd", 20_000, seed=3, sparsity=s)
    rel = float((g - n_keep * grad).norm() / (n_keep * grad).norm())
    assert rel < 0.15
    # and it is not the unmasked gradient
    assert float((g - grad).norm() / grad.norm()) > 0.3


def test_sparsity_zeroes_exact_fraction_and_resamples():
    like = torch.empty(7, 13)
    n = like.numel()
    for s in (0.0, 0.1, 0.5, 0.9):
        z = DirectionSampler("gaussian", s, True, 0).block(123, 0, like)
        assert int((z == 0).sum()) == int(s * n)
    resample = DirectionSampler("gaussian", 0.5, True, 0)
    fixed = DirectionSampler("gaussian", 0.5, False, 0)
    assert not torch.equal(resample.block(1, 0, like) == 0, resample.block(2, 0, like) == 0)
    assert torch.equal(fixed.block(1, 0, like) == 0, fixed.block(2, 0, like) == 0)


def counting(closure, calls):
    def counted():
        calls.append(1)
        return closure()

    return counted


def expected_passes(name, q, difference="central"):
    if not name.startswith(("zo", "forward")):
        return 1
    if name == "forward-grad":
        return q
    per = 2 * q if difference == "central" else q + 1
    if name.endswith("conserve"):
        per += 2 + (1 if difference == "central" else 0)
    return per


@pytest.mark.parametrize("name", optim.NAMES)
@pytest.mark.parametrize("q", [1, 4])
def test_exact_forward_pass_counts(name, q):
    a, b, theta0, _ = quadratic(dtype=torch.float32)
    hp = {} if optim.is_first_order(name) else {"q": q}
    cases = [("central", hp)]
    if name.startswith("zo"):
        cases.append(("forward", {**hp, "difference": "forward"}))
    for difference, kwargs in cases:
        theta = torch.nn.Parameter(theta0.clone())
        opt = optim.build(name, [theta], lr=1e-3, **kwargs)
        calls = []
        closure = counting(closure_for(opt, theta, a, b), calls)
        for _ in range(3):
            before = len(calls)
            opt.step(closure)
            assert len(calls) - before == expected_passes(name, q, difference)
        assert opt.forward_passes == len(calls)
    if name == "zo-sgd-conserve" and q == 1:
        assert expected_passes(name, 1) == 5


@pytest.mark.parametrize("name", ["zo-sgd-conserve", "zo-adam-conserve"])
def test_conserve_never_ends_a_step_worse(name):
    a, b, theta0, _ = quadratic(dtype=torch.float32)
    lr = 0.002 if "sgd" in name else 0.5  # both move often and plain steps go uphill often
    theta = torch.nn.Parameter(theta0.clone())
    opt = optim.build(name, [theta], lr=lr, seed=1, mu=1e-2)
    plain = optim.build(name.replace("-conserve", ""), [torch.nn.Parameter(theta0.clone())],
                        lr=lr, seed=1, mu=1e-2)
    closure = closure_for(opt, theta, a, b)
    plain_theta = plain.param_groups[0]["params"][0]
    plain_closure = closure_for(plain, plain_theta, a, b)
    plain_worse = moved = 0
    for _ in range(40):
        with torch.no_grad():
            before = float(closure())
            plain_before = float(plain_closure())
            theta_before = theta.detach().clone()
        opt.step(closure)
        plain.step(plain_closure)
        with torch.no_grad():
            assert float(closure()) <= before
            plain_worse += float(plain_closure()) > plain_before
            moved += not torch.equal(theta.detach(), theta_before)
    assert plain_worse >= 5, "the setting must make plain steps go uphill sometimes"
    assert moved >= 5, "Conserve must accept a candidate now and then, not only keep θ"


def test_conserve_keeps_theta_and_state_when_both_candidates_are_worse():
    a, b, theta0, _ = quadratic(dtype=torch.float32)
    theta = torch.nn.Parameter(theta0.clone())
    opt = optim.build("zo-adam-conserve", [theta], lr=50.0, seed=0)
    opt.step(closure_for(opt, theta, a, b))
    assert torch.equal(theta.detach(), theta0)
    assert "step" not in opt.state[theta] and "exp_avg" not in opt.state[theta]


@pytest.mark.parametrize("name", [n for n in optim.NAMES if not optim.is_first_order(n)])
def test_perturbations_restore_parameters_bit_for_bit(name):
    a, b, theta0, _ = quadratic(dtype=torch.float32)
    theta = torch.nn.Parameter(theta0.clone())
    opt = optim.build(name, [theta], lr=1e-3, q=4)
    opt.evaluate(closure_for(opt, theta, a, b), opt.direction_seeds())
    assert torch.equal(theta.detach(), theta0)


def one_step_delta(name, **hp):
    a, b, theta0, grad = quadratic()
    theta = torch.nn.Parameter(theta0.clone())
    opt = optim.build(name, [theta], lr=1.0, weight_decay=0.0, seed=7, **hp)
    seeds = opt.direction_seeds()
    opt.step(closure_for(opt, theta, a, b))
    zs = [opt.sampler.block(s, 0, theta0) for s in seeds]
    projections = [float(grad @ z) for z in zs]  # exact directional derivatives
    return theta.detach() - theta0, zs, projections


def test_sign_semantics():
    q = 3
    delta, zs, s = one_step_delta("zo-sgd-sign", q=q, momentum=0.0)
    expected = -sum((1.0 if si > 0 else -1.0) * z for si, z in zip(s, zs)) / q
    torch.testing.assert_close(delta, expected)
    delta, zs, s = one_step_delta("zo-sgd-sign", q=q, momentum=0.0, sign="elementwise")
    expected = -torch.sign(sum(si * z for si, z in zip(s, zs)) / q)
    torch.testing.assert_close(delta, expected)
    delta, zs, s = one_step_delta("zo-sgd", q=q, momentum=0.0)
    torch.testing.assert_close(delta, -sum(si * z for si, z in zip(s, zs)) / q)


def test_history_mixes_with_previous_estimate():
    alpha = 0.4
    a, b, theta0, _ = quadratic()
    theta = torch.nn.Parameter(theta0.clone())
    opt = optim.build("zo-sgd", [theta], lr=0.01, momentum=0.0, weight_decay=0.0,
                      history=alpha, seed=3)
    closure = closure_for(opt, theta, a, b)
    ests = []
    for _ in range(2):
        th = theta.detach().clone()
        seeds = opt.direction_seeds()
        z = opt.sampler.block(seeds[0], 0, th)
        ests.append(float((a @ th - b) @ z) * z)
        opt.step(closure)
    # θ2 − θ1 = −lr ((1 − α) ĝ2 + α ĝ1)
    theta_after_first = theta0 - 0.01 * ests[0]
    expected = theta_after_first - 0.01 * ((1 - alpha) * ests[1] + alpha * ests[0])
    torch.testing.assert_close(theta.detach(), expected)


def test_forward_grad_uses_configured_lr_and_schedule():
    d1, _, _ = one_step_delta("forward-grad", momentum=0.0)
    a, b, theta0, grad = quadratic()
    for lr in (0.5, 2.0):
        theta = torch.nn.Parameter(theta0.clone())
        opt = optim.build("forward-grad", [theta], lr=lr, momentum=0.0, weight_decay=0.0, seed=7)
        opt.step(closure_for(opt, theta, a, b))
        torch.testing.assert_close(theta.detach() - theta0, lr * d1)
    # an LR scheduler reaches forward-pass optimizers like any torch optimizer
    for name in ("zo-sgd", "zo-adam", "forward-grad"):
        theta = torch.nn.Parameter(theta0.clone())
        opt = optim.build(name, [theta], lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: 0.0)
        assert opt.param_groups[0]["lr"] == 0.0
        opt.step(closure_for(opt, theta, a, b))
        assert torch.equal(theta.detach(), theta0)
        del sched


def run_steps(opt, theta, a, b, n):
    closure = closure_for(opt, theta, a, b)
    for _ in range(n):
        opt.step(closure)
    return theta.detach().clone()


VARIANTS = [(n, {}) for n in optim.NAMES] + [
    ("zo-sgd", {"history": 0.5, "sparsity": 0.3, "q": 3}),
    ("zo-adam", {"sparsity": 0.5, "sparsity_resample": False, "difference": "forward"}),
    ("forward-grad", {"rule": "adam", "history": 0.2}),
]


@pytest.mark.parametrize("name,hp", VARIANTS)
def test_same_seed_same_trajectory_other_seed_differs(name, hp):
    a, b, theta0, _ = quadratic(dtype=torch.float32)
    runs = []
    for seed in (0, 0, 1):
        theta = torch.nn.Parameter(theta0.clone())
        kwargs = dict(hp) if optim.is_first_order(name) else {**hp, "seed": seed}
        runs.append(run_steps(optim.build(name, [theta], lr=1e-2, **kwargs), theta, a, b, 5))
    assert torch.equal(runs[0], runs[1])
    if not optim.is_first_order(name):
        assert not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("name,hp", VARIANTS)
def test_state_dict_mid_run_continues_bit_for_bit(name, hp):
    a, b, theta0, _ = quadratic(dtype=torch.float32)
    theta = torch.nn.Parameter(theta0.clone())
    opt = optim.build(name, [theta], lr=1e-2, **hp)
    run_steps(opt, theta, a, b, 4)
    saved_state, saved_theta = copy.deepcopy(opt.state_dict()), theta.detach().clone()
    straight = run_steps(opt, theta, a, b, 4)

    theta2 = torch.nn.Parameter(saved_theta)
    other_seed = {} if optim.is_first_order(name) else {"seed": 99}
    opt2 = optim.build(name, [theta2], lr=1e-2, **{**hp, **other_seed})
    opt2.load_state_dict(saved_state)
    resumed = run_steps(opt2, theta2, a, b, 4)
    assert torch.equal(straight, resumed)
    assert opt2.forward_passes == opt.forward_passes


@pytest.mark.parametrize("name,cls,hp", [
    ("fo-sgd", torch.optim.SGD, {"momentum": 0.9, "weight_decay": 5e-4}),
    ("fo-adam", torch.optim.Adam, {"weight_decay": 5e-4}),
])
def test_first_order_equals_torch_optim(name, cls, hp):
    a, b, theta0, _ = quadratic(dtype=torch.float32)
    ours_theta = torch.nn.Parameter(theta0.clone())
    ours = run_steps(optim.build(name, [ours_theta], lr=1e-2), ours_theta, a, b, 10)
    ref_theta = torch.nn.Parameter(theta0.clone())
    ref = cls([ref_theta], lr=1e-2, **hp)
    ref.uses_backward = True
    assert torch.equal(ours, run_steps(ref, ref_theta, a, b, 10))


LR = {"fo-sgd": 0.5, "fo-adam": 0.05, "zo-sgd": 0.05, "zo-sgd-sign": 0.02,
      "zo-sgd-conserve": 0.05, "zo-adam": 0.02, "zo-adam-sign": 0.02,
      "zo-adam-conserve": 0.02, "forward-grad": 0.05}


@pytest.mark.slow
@pytest.mark.parametrize("name", optim.NAMES)
def test_every_optimizer_lowers_logistic_regression_loss(name):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 10, generator=g)
    w_true = torch.randn(10, generator=g)
    y = (x @ w_true > 0).float()
    model = torch.nn.Linear(10, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    opt = optim.build(name, model.parameters(), lr=LR[name])

    def loss_fn():
        return torch.nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(1), y)

    def closure():
        if opt.uses_backward:
            opt.zero_grad()
        loss = loss_fn()
        if opt.uses_backward:
            loss.backward()
        return loss

    with torch.no_grad():
        start = float(loss_fn())
    for _ in range(150):
        opt.step(closure)
    with torch.no_grad():
        end = float(loss_fn())
    assert end < 0.75 * start, (start, end)


def test_plain_zo_sgd_holds_no_parameter_sized_state_and_momentum_one_buffer():
    a, b, theta0, _ = quadratic(dtype=torch.float32)
    theta = torch.nn.Parameter(theta0.clone())
    opt = optim.build("zo-sgd", [theta], lr=1e-3, q=4, momentum=0.0)
    run_steps(opt, theta, a, b, 2)
    assert dict(opt.state[theta]) == {}
    opt = optim.build("zo-sgd", [theta], lr=1e-3, q=4)
    run_steps(opt, theta, a, b, 2)
    assert list(opt.state[theta]) == ["momentum_buffer"]


def test_nonfinite_loss_leaves_parameters_untouched():
    theta = torch.nn.Parameter(torch.ones(4))
    opt = optim.build("zo-sgd", [theta], lr=1e-2)
    loss = opt.step(lambda: (theta * float("nan")).sum())
    assert not torch.isfinite(loss)
    assert torch.equal(theta.detach(), torch.ones(4))


def test_bad_names_and_hparams_list_the_valid_ones():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ConfigError, match="zo-adam-conserve"):
        optim.build("zo-sgdd", p)
    with pytest.raises(ConfigError, match="valid hyper-parameters: .*mu"):
        optim.build("zo-sgd", p, muu=1e-3)
    with pytest.raises(ConfigError, match="does not take mu"):
        optim.build("fo-sgd", p, mu=1e-3)
    with pytest.raises(ConfigError, match="mu must be > 0"):
        optim.build("zo-sgd", p, mu=0.0)
    with pytest.raises(ConfigError, match="perturbation"):
        optim.build("zo-sgd", p, perturbation="uniform")
    assert set(optim.NAMES) == {"fo-sgd", "fo-adam", "zo-sgd", "zo-sgd-sign", "zo-sgd-conserve",
                                "zo-adam", "zo-adam-sign", "zo-adam-conserve", "forward-grad"}


def test_hybrid_schedule():
    sched = optim.HybridSchedule(2)
    assert [sched.use_first_order(e) for e in range(4)] == [True, True, False, False]
    assert optim.fo_counterpart("zo-adam-sign") == "fo-adam"
    assert optim.fo_counterpart("forward-grad") == "fo-sgd"
    with pytest.raises(ValueError):
        optim.HybridSchedule(-1)


def test_conserve_history_state_matches_the_kept_move():
    """The smoothing state follows the candidate kept: u for θ - lr·u, -u for θ + lr·u.

    f = sin(θ) with a huge mu makes many estimates point the wrong way, so both candidates win
    sometimes; u is recomputed here from the exact finite differences."""
    theta = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    lr, mu, alpha = 0.5, 4.0, 0.5
    opt = optim.build("zo-sgd-conserve", [theta], lr=lr, momentum=0.0, weight_decay=0.0,
                      history=alpha, seed=4, mu=mu)

    def closure():
        return torch.sin(theta).sum()

    plus = minus = 0
    for _ in range(60):
        (seed,) = opt.direction_seeds()
        prev = opt.state[theta].get("history")
        before = theta.detach().clone()
        z = opt.sampler.block(seed, 0, before)
        g = float((torch.sin(before + mu * z) - torch.sin(before - mu * z)).sum()) / (2 * mu) * z
        u = g if prev is None else (1 - alpha) * g + alpha * prev
        opt.step(closure)
        delta = theta.detach() - before
        if torch.equal(delta, torch.zeros_like(delta)):
            continue
        if torch.allclose(delta, -lr * u):
            minus += 1
            torch.testing.assert_close(opt.state[theta]["history"], u)
        else:
            torch.testing.assert_close(delta, lr * u)
            plus += 1
            torch.testing.assert_close(opt.state[theta]["history"], -u)
    assert plus > 0 and minus > 0, (plus, minus)


def test_nonfinite_forward_difference_reports_nan_not_progress():
    theta = torch.nn.Parameter(torch.ones(4))
    start = theta.detach().clone()
    opt = optim.build("zo-sgd", [theta], lr=1e-2, difference="forward")

    def closure():  # finite at θ, infinite anywhere else
        return theta.sum() + (0.0 if torch.equal(theta, start) else float("inf"))

    loss = opt.step(closure)
    assert torch.isnan(loss) and torch.equal(theta.detach(), start)


def test_documented_defaults():
    """docs/optimizers.md's hyper-parameter table, as each optimizer actually builds."""
    p = [torch.nn.Parameter(torch.zeros(2))]
    for name in optim.NAMES:
        opt = optim.build(name, p)
        d = opt.defaults
        assert d["lr"] == (1e-2 if name == "fo-sgd" else 1e-3), name
        assert d["weight_decay"] == 5e-4, name
        if "adam" in name:
            assert tuple(d["betas"]) == (0.9, 0.999) and d["eps"] == 1e-8, name
            other = optim.build(name, p, betas=(0.5, 0.75), eps=1e-3).defaults
            assert tuple(other["betas"]) == (0.5, 0.75) and other["eps"] == 1e-3, name
        if name == "fo-sgd" or (not optim.is_first_order(name) and "adam" not in name):
            assert d["momentum"] == 0.9, name
        if not optim.is_first_order(name):
            assert (opt.q, opt.seed, opt.history, opt.exact_restore) == (1, 0, 0.0, True)
            assert opt.sampler.perturbation == "gaussian" and opt.sampler.sparsity == 0.0
            assert opt.sampler.sparsity_resample is True
            assert (opt.by_direction, opt.sampler.sparsity_mask, opt.sampler.mask_seed) == (
                False, "exact", None)
            if name != "forward-grad":
                assert (opt.mu, opt.difference) == (1e-3, "central"), name


def test_hybrid_schedule_zero_epochs_is_pure_zo_and_negative_is_refused():
    assert not any(optim.HybridSchedule(0).use_first_order(e) for e in range(3))
    with pytest.raises(ValueError, match="hybrid fo_epochs must be >= 0, got -1"):
        optim.HybridSchedule(-1)


def test_forward_grad_refuses_a_loss_that_ignores_the_trainable_tensors():
    theta = torch.nn.Parameter(torch.ones(3))
    opt = optim.build("forward-grad", [theta], lr=0.1)
    with pytest.raises(RuntimeError) as err:
        opt.step(lambda: torch.tensor(1.0))
    assert str(err.value) == ("forward-grad: the closure's loss does not depend on the trainable "
                              "tensors through forward-mode AD; check that it uses them")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_estimate_accumulates_in_fp32_and_keeps_the_dtype(dtype):
    """The sum of several c_i z_i is formed in fp32 and rounded once to the tensor's dtype."""
    like = torch.zeros(64, 64, dtype=dtype)
    sampler = DirectionSampler("gaussian", 0.0, True, 0)
    seeds, coeffs = [11, 12, 13, 14], [0.37, -1.3, 2.1, 0.011]
    g = sampler.combine(seeds, coeffs, 0, like)
    assert g.dtype == dtype
    exact = sum(c * sampler.block(s, 0, like.float()) for s, c in zip(seeds, coeffs))
    assert torch.equal(g, exact.to(dtype))


@pytest.mark.parametrize("name,kwargs,message", [
    ("zo-sgd", {"lr": -1.0}, "lr must be >= 0, got -1.0"),
    ("zo-sgd", {"mu": 0.0}, "mu must be > 0, got 0.0"),
    ("zo-sgd", {"q": 0}, "q must be a positive integer, got 0"),
    ("zo-sgd", {"q": 2.5}, "q must be a positive integer, got 2.5"),
    ("zo-sgd", {"difference": "backward"},
     "difference must be one of ('central', 'forward'), got 'backward'"),
    ("zo-sgd-sign", {"sign": "stochastic"},
     "sign must be one of (None, 'projected', 'elementwise'), got 'stochastic'"),
    ("zo-sgd", {"momentum": 1.0}, "momentum must be in [0, 1), got 1.0"),
    ("zo-sgd", {"momentum": -0.1}, "momentum must be in [0, 1), got -0.1"),
    ("zo-sgd", {"weight_decay": -1e-4}, "weight_decay must be >= 0, got -0.0001"),
    ("zo-adam", {"betas": (1.0, 0.999)}, "betas must be in [0, 1), got (1.0, 0.999)"),
    ("zo-adam", {"betas": (0.9, 1.0)}, "betas must be in [0, 1), got (0.9, 1.0)"),
    ("zo-adam", {"betas": (-0.1, 0.9)}, "betas must be in [0, 1), got (-0.1, 0.9)"),
    ("zo-adam", {"eps": 0.0}, "eps must be > 0, got 0.0"),
    ("zo-sgd", {"history": 1.0}, "history must be in [0, 1), got 1.0"),
    ("zo-sgd", {"history": -0.5}, "history must be in [0, 1), got -0.5"),
    ("zo-sgd", {"sparsity": 1.0}, "sparsity must be in [0, 1), got 1.0"),
    ("zo-sgd", {"sparsity": -0.1}, "sparsity must be in [0, 1), got -0.1"),
    ("zo-sgd", {"perturbation": "uniform"},
     "perturbation must be one of ('gaussian', 'rademacher'), got 'uniform'"),
    ("forward-grad", {"rule": "rmsprop"},
     "forward-grad rule must be 'sgd' or 'adam', got 'rmsprop'"),
])
def test_every_invalid_hyper_parameter_is_named_with_its_allowed_range(name, kwargs, message):
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ConfigError) as err:
        optim.build(name, p, **kwargs)
    assert str(err.value) in (f"optimizer {name!r}: {message}", message)


def test_direct_construction_checks_what_the_registry_never_passes():
    from zeroflow.optim.zo import ZeroOrderOptimizer

    p = [torch.nn.Parameter(torch.zeros(2))]
    for kwargs, message in [({"estimator": "fd"}, "estimator must be one of ('spsa', 'jvp'), "
                                                  "got 'fd'"),
                            ({"rule": "rmsprop"}, "rule must be one of ('sgd', 'adam'), got "
                                                  "'rmsprop'")]:
        with pytest.raises(ValueError) as err:
            ZeroOrderOptimizer(p, **kwargs)
        assert str(err.value) == message


@pytest.mark.parametrize("name,kwargs", [
    ("zo-sgd", {"lr": 0.0}), ("zo-sgd", {"q": 1}), ("zo-sgd", {"momentum": 0.0}),
    ("zo-sgd", {"weight_decay": 0.0}), ("zo-adam", {"betas": (0.0, 0.0)}),
    ("zo-sgd", {"history": 0.0}), ("zo-sgd", {"sparsity": 0.0}), ("zo-sgd", {"q": 2.0}),
])
def test_boundary_values_are_accepted(name, kwargs):
    opt = optim.build(name, [torch.nn.Parameter(torch.zeros(2))], **kwargs)
    assert opt.q >= 1


def test_estimates_of_seed_shares_merge_into_the_estimate_of_all_seeds():
    """What query workers rely on: evaluating consecutive shares of a step's seeds apart and
    merging gives exactly (bit for bit) the estimate of evaluating them together."""
    from zeroflow.optim import Estimate

    a, b, theta0, _ = quadratic(dtype=torch.float32)
    for difference in ("central", "forward"):
        theta = torch.nn.Parameter(theta0.clone())
        opt = optim.build("zo-sgd", [theta], q=5, difference=difference)
        closure = closure_for(opt, theta, a, b)
        seeds = opt.direction_seeds()
        whole = opt.evaluate(closure, seeds)
        shares = [opt.evaluate(closure, seeds[:2]), opt.evaluate(closure, []) if difference ==
                  "forward" else Estimate([], [], 0.0), opt.evaluate(closure, seeds[2:])]
        merged = Estimate.merge(shares)
        assert merged.seeds == seeds and merged.scalars == whole.scalars
        assert merged.loss == whole.loss and merged.f0 == whole.f0
        assert merged.parts == whole.parts
        if difference == "central":
            assert len(whole.parts) == 5 and whole.f0 is None
            assert whole.loss == sum(whole.parts) / 5


def test_apply_reports_its_decision_and_counts_passes_made_elsewhere():
    theta = torch.nn.Parameter(torch.ones(3))
    opt = optim.build("zo-sgd", [theta], lr=0.1)
    estimate = opt.evaluate(lambda: (theta ** 2).sum(), opt.direction_seeds())
    assert opt.apply(estimate) == -1.0  # plain rules always take θ - lr·u
    nan = optim.Estimate(estimate.seeds, [float("nan")], float("nan"))
    before = theta.detach().clone()
    assert opt.apply(nan) == 0.0 and torch.equal(theta.detach(), before)
    passes = opt.forward_passes
    opt.count_passes(7)
    assert opt.forward_passes == passes + 7


def test_conserve_ties_keep_the_earlier_candidate():
    """A flat loss: θ, θ - lr·u and θ + lr·u all tie (u is weight decay's pull alone), so θ."""
    theta = torch.nn.Parameter(torch.ones(3))
    for name in ("zo-sgd-conserve", "zo-adam-conserve"):
        opt = optim.build(name, [theta], lr=0.1, weight_decay=0.1)
        opt.step(lambda: theta.sum() * 0.0 + 1.0)
        assert torch.equal(theta.detach(), torch.ones(3)), name


def test_accepted_hparams_and_step_without_closure():
    assert optim.accepted_hparams("fo-sgd") == ("lr", "momentum", "weight_decay")
    assert "mu" in optim.accepted_hparams("zo-adam") and "rule" in optim.accepted_hparams(
        "forward-grad")
    opt = optim.build("zo-sgd", [torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError) as err:
        opt.step(None)
    assert str(err.value) == "forward-pass optimizers need a closure that returns the loss"


def test_each_tensor_is_updated_with_its_own_block():
    """Three trainable tensors (two of one shape): direction i's block k is drawn for tensor
    k, in perturbation and update alike (the test rebuilds both from the seeds)."""
    g = torch.Generator().manual_seed(0)
    start = [torch.randn(4, 3, generator=g, dtype=torch.float64),
             torch.randn(3, generator=g, dtype=torch.float64),
             torch.randn(3, generator=g, dtype=torch.float64)]
    x = torch.randn(8, 4, generator=g, dtype=torch.float64)

    def f(w, b, c):
        return ((x @ w + b) ** 2 * c.exp()).mean()

    params = [torch.nn.Parameter(t.clone()) for t in start]
    opt = optim.build("zo-sgd", params, lr=0.1, q=3, mu=1e-4, momentum=0.0, weight_decay=0.0)
    blocks = [[opt.sampler.block(s, k, t) for k, t in enumerate(start)]
              for s in opt.direction_seeds()]
    cs = [(float(f(*[t + 1e-4 * z for t, z in zip(start, zs)])) -
           float(f(*[t - 1e-4 * z for t, z in zip(start, zs)]))) / 2e-4 for zs in blocks]
    opt.step(lambda: f(*params))
    for k, (p, t) in enumerate(zip(params, start)):
        expected = t - 0.1 * sum(c * zs[k] for c, zs in zip(cs, blocks)) / 3
        torch.testing.assert_close(p.detach(), expected, msg=f"tensor {k}")


def test_central_loss_is_the_mean_of_the_pairs_and_spsa_defaults():
    from zeroflow.optim.spsa import Restorer, spsa_evaluate

    a, b, theta0, _ = quadratic()
    theta = torch.nn.Parameter(theta0.clone())
    sampler = DirectionSampler()
    calls = []

    def f():
        calls.append(1)
        return 0.5 * theta @ a @ theta - b @ theta

    est = spsa_evaluate(f, [theta], sampler, [5, 6], 1e-3)  # central, exact restore
    assert len(calls) == 4 and torch.equal(theta.detach(), theta0)
    pairs = []
    for s in (5, 6):
        z = sampler.block(s, 0, theta0)
        with torch.no_grad():
            pairs.append(0.5 * (float(0.5 * (theta0 + 1e-3 * z) @ a @ (theta0 + 1e-3 * z) - b @
                                      (theta0 + 1e-3 * z)) +
                                float(0.5 * (theta0 - 1e-3 * z) @ a @ (theta0 - 1e-3 * z) - b @
                                      (theta0 - 1e-3 * z))))
    assert est.parts == pytest.approx(pairs, rel=1e-12)
    assert est.loss == pytest.approx(sum(pairs) / 2, rel=1e-12) and est.f0 is None
    with pytest.raises(ValueError) as err:
        spsa_evaluate(f, [theta], sampler, [5], 1e-3, difference="backward")
    assert str(err.value) == "difference must be one of ('central', 'forward'), got 'backward'"
    assert Restorer([theta], exact=False).backup is None  # MeZO's way holds no copy
    assert torch.equal(Restorer([theta], exact=True).backup[0], theta0)


@pytest.mark.parametrize("difference", ["central", "forward"])
def test_subtractive_restore_is_close_and_really_subtracts(difference):
    """exact_restore=False reaches the estimator: θ comes back within rounding, not bit for
    bit (MeZO's drift), while the default copy restores exactly."""
    a, b, theta0, _ = quadratic(dtype=torch.float32)
    theta = torch.nn.Parameter(theta0.clone())
    opt = optim.build("zo-sgd", [theta], q=8, difference=difference, exact_restore=False)
    opt.evaluate(closure_for(opt, theta, a, b), opt.direction_seeds())
    torch.testing.assert_close(theta.detach(), theta0, rtol=0, atol=1e-5)
    assert not torch.equal(theta.detach(), theta0)


def test_merge_of_a_single_share_is_that_share():
    from zeroflow.optim import Estimate

    theta = torch.nn.Parameter(torch.ones(3))
    for difference in ("central", "forward"):
        opt = optim.build("zo-sgd", [theta], q=2, difference=difference)
        est = opt.evaluate(lambda: (theta ** 2).sum(), opt.direction_seeds())
        assert Estimate.merge([est]) == est


def test_state_dict_without_counters_keeps_the_optimizers_own():
    theta = torch.nn.Parameter(torch.ones(3))
    opt = optim.build("zo-sgd", [theta], seed=4)
    opt.step(lambda: (theta ** 2).sum())
    state = copy.deepcopy(opt.state_dict())
    del state["state"]["zeroflow"]
    fresh = optim.build("zo-sgd", [theta], seed=9)
    fresh.load_state_dict(state)
    assert fresh.seed == 9 and fresh.forward_passes == 0
    state = copy.deepcopy(opt.state_dict())
    del state["state"]["zeroflow"]["seed"]
    fresh.load_state_dict(state)
    assert fresh.seed == 9 and fresh.forward_passes == 2


def test_first_step_seeds_and_sampler_defaults():
    from zeroflow.seeding import derive_seed

    opt = optim.build("zo-sgd", [torch.nn.Parameter(torch.zeros(2))], q=3, seed=7)
    assert opt.direction_seeds() == [derive_seed(7, 0, i) for i in range(3)]
    s = DirectionSampler()
    assert (s.perturbation, s.sparsity, s.sparsity_resample, s.seed) == ("gaussian", 0.0, True, 0)
    fo = optim.build("fo-sgd", [torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError) as err:
        fo.step(None)
    assert str(err.value) == "zeroflow optimizers need a closure that returns the loss"


def test_sparsity_masks_differ_per_tensor_and_fixed_masks_follow_the_seed():
    like = torch.empty(10, 10)
    for resample in (True, False):
        a = DirectionSampler("gaussian", 0.5, resample, 1)
        assert not torch.equal(a.block(3, 0, like) == 0, a.block(3, 1, like) == 0), resample
    masks = []
    for seed in (1, 2):  # through the optimizer: its seed reaches the fixed masks
        opt = optim.build("zo-sgd", [torch.nn.Parameter(torch.zeros(10, 10))], seed=seed,
                          sparsity=0.5, sparsity_resample=False)
        masks.append(opt.sampler.block(3, 0, like) == 0)
    assert not torch.equal(*masks)


def test_error_messages_list_the_choices_comma_separated():
    p = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(ConfigError) as err:
        optim.build("adam", p)
    assert str(err.value) == "unknown optimizer 'adam'; choose one of: " + ", ".join(optim.NAMES)
    with pytest.raises(ConfigError) as err:
        optim.build("fo-sgd", p, mu=1.0, q=2)
    assert str(err.value) == ("optimizer 'fo-sgd' does not take mu, q; valid hyper-parameters: "
                              "lr, momentum, weight_decay")
