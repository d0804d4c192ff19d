"""Forward-pass optimizers against an independent reference, step by step.

The test recomputes each step's gradient estimate itself, from the step's direction seeds and
finite differences (or exact directional derivatives for Forward-Grad) evaluated here, and feeds
it to ``torch.optim.SGD`` / ``torch.optim.Adam``: momentum, dampening, Adam's bias correction,
weight decay, sign, history and the Conserve choice are each checked against torch's own
formulas, over several steps with q > 1 and nonzero momentum and weight decay.
"""

import copy

import pytest
import torch

from zeroflow import optim
from zeroflow.optim.perturb import DirectionSampler

D = 6


def problem(seed=0):
    """f(θ) = ½ θᵀAθ − bᵀθ + 0.3 Σ sin(3θ) in float64: smooth, not quadratic."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(D, D, generator=g, dtype=torch.float64)
    a = m @ m.T / D + torch.eye(D, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    theta0 = torch.randn(D, generator=g, dtype=torch.float64)

    def f(theta):
        return 0.5 * theta @ a @ theta - b @ theta + 0.3 * torch.sin(3 * theta).sum()

    def grad(theta):
        return a @ theta - b + 0.9 * torch.cos(3 * theta)

    return f, grad, theta0


def reference_estimate(name, hp, f, grad, theta, seeds, sampler, prev):
    """ĝ of one step, computed here from the seeds: (1/q) Σ c_i z_i with c_i from finite
    differences of f (or ∇f·z for forward-grad), sign and history applied as documented."""
    mu = hp.get("mu", 1e-3)
    difference = hp.get("difference", "central")
    zs = [sampler.block(s, 0, theta) for s in seeds]
    with torch.no_grad():
        if name == "forward-grad":
            cs = [float(grad(theta) @ z) for z in zs]
        elif difference == "forward":
            cs = [(float(f(theta + mu * z)) - float(f(theta))) / mu for z in zs]
        else:
            cs = [(float(f(theta + mu * z)) - float(f(theta - mu * z))) / (2 * mu) for z in zs]
    if hp.get("sign") == "projected" or (name.endswith("-sign") and "sign" not in hp):
        cs = [1.0 if c > 0 else -1.0 for c in cs]
    g = sum(c * z for c, z in zip(cs, zs)) / len(zs)
    alpha = hp.get("history", 0.0)
    if alpha and prev is not None:
        g = (1 - alpha) * g + alpha * prev
    smoothed = g.clone()
    if hp.get("sign") == "elementwise":
        g = torch.sign(g)
    return g, smoothed


def torch_reference(name, hp, theta):
    rule = hp.get("rule", "adam" if "adam" in name else "sgd")
    lr, wd = hp["lr"], hp.get("weight_decay", 5e-4)
    if rule == "sgd":
        return torch.optim.SGD([theta], lr=lr, momentum=hp.get("momentum", 0.9), dampening=0,
                               weight_decay=wd)
    return torch.optim.Adam([theta], lr=lr, betas=hp.get("betas", (0.9, 0.999)),
                            eps=hp.get("eps", 1e-8), weight_decay=wd)


CASES = [
    ("zo-sgd", {"q": 3, "weight_decay": 0.05}),
    ("zo-sgd", {"q": 2, "momentum": 0.5, "weight_decay": 0.0, "difference": "forward"}),
    ("zo-sgd", {"q": 4, "history": 0.3, "sparsity": 0.5, "weight_decay": 0.05}),
    ("zo-sgd", {"q": 2, "perturbation": "rademacher", "weight_decay": 0.05}),
    ("zo-sgd-sign", {"q": 3, "weight_decay": 0.05}),
    ("zo-sgd-sign", {"q": 3, "sign": "elementwise", "history": 0.4}),
    ("zo-adam", {"q": 3, "weight_decay": 0.05}),
    ("zo-adam", {"q": 2, "betas": (0.8, 0.95), "eps": 1e-3, "history": 0.5}),
    ("zo-adam-sign", {"q": 4, "weight_decay": 0.05}),
    ("forward-grad", {"q": 3, "weight_decay": 0.05}),
    ("forward-grad", {"q": 2, "rule": "adam", "weight_decay": 0.05, "history": 0.2}),
]


@pytest.mark.parametrize("name,hp", CASES)
def test_zo_rules_equal_torch_optim_fed_the_same_estimate(name, hp):
    f, grad, theta0 = problem()
    hp = {"lr": 0.02, "seed": 5, **({} if name == "forward-grad" else {"mu": 1e-3}), **hp}
    theta = torch.nn.Parameter(theta0.clone())
    opt = optim.build(name, [theta], **hp)
    sampler = DirectionSampler(hp.get("perturbation", "gaussian"), hp.get("sparsity", 0.0),
                               True, hp["seed"])
    ref_theta = torch.nn.Parameter(theta0.clone())
    ref = torch_reference(name, hp, ref_theta)
    prev = None
    for step in range(6):
        seeds = opt.direction_seeds()
        g, prev = reference_estimate(name, hp, f, grad, ref_theta.detach(), seeds, sampler, prev)
        ref_theta.grad = g
        ref.step()
        opt.step(lambda: f(theta))
        torch.testing.assert_close(theta.detach(), ref_theta.detach(), rtol=1e-7, atol=1e-9,
                                   msg=lambda m, step=step: f"step {step}: {m}")
    assert not torch.allclose(theta.detach(), theta0)  # it moved


def run_conserve(name, hp, n_steps=60):
    """Step zo-*-conserve beside a torch reference that tries both candidates of every step;
    yields (kept, ours, reference) after each step."""
    f, grad, theta0 = problem(seed=2)
    theta = torch.nn.Parameter(theta0.clone())
    opt = optim.build(name, [theta], **hp)
    sampler = DirectionSampler("gaussian", 0.0, True, hp["seed"])
    ref_theta = torch.nn.Parameter(theta0.clone())
    ref = torch_reference(name, hp, ref_theta)
    lr = hp["lr"]
    for _ in range(n_steps):
        seeds = opt.direction_seeds()
        g, _ = reference_estimate(name, hp, f, grad, ref_theta.detach(), seeds, sampler, None)
        trial = copy.deepcopy(ref)  # its own copy of θ and of the rule's state
        trial_theta = trial.param_groups[0]["params"][0]
        trial_theta.grad = g.clone()
        trial.step()
        with torch.no_grad():
            u = (ref_theta - trial_theta) / lr
            candidates = [ref_theta.detach().clone(), trial_theta.detach().clone(),
                          (ref_theta + lr * u).detach()]
            values = [float(f(c)) for c in candidates]
        kept = min(range(3), key=lambda i: (values[i], i))  # ties keep the earlier
        if kept == 1:
            ref = trial
            ref_theta = trial_theta
        elif kept == 2:
            ref = trial
            ref_theta = trial_theta
            with torch.no_grad():
                ref_theta.copy_(candidates[2])
            state = ref.state[ref_theta]
            for key in ("momentum_buffer", "exp_avg"):
                if key in state:
                    state[key].neg_()
        opt.step(lambda: f(theta))
        yield kept, opt.state[theta], theta.detach(), ref.state[ref_theta], ref_theta.detach()


CONSERVE_SETTINGS = [  # each keeps θ, θ - lr·u and θ + lr·u at some of 60 steps (checked)
    ("zo-sgd-conserve", {"lr": 0.2, "mu": 0.5, "q": 1, "seed": 3, "weight_decay": 0.05}),
    ("zo-adam-conserve", {"lr": 0.1, "mu": 0.5, "q": 2, "seed": 3, "weight_decay": 0.05}),
]


@pytest.mark.parametrize("name,hp", CONSERVE_SETTINGS)
def test_conserve_keeps_the_best_candidate_and_commits_the_matching_state(name, hp):
    """Each of θ, θ − lr·u and θ + lr·u is kept at some step; after every step θ and the whole
    rule state (momentum buffer / Adam's m, v and step) equal the reference's."""
    kept_counts = [0, 0, 0]
    for kept, ours, theta, ref_state, ref_theta in run_conserve(name, hp):
        kept_counts[kept] += 1
        torch.testing.assert_close(theta, ref_theta, rtol=1e-7, atol=1e-9)
        if "sgd" in name:
            if "momentum_buffer" in ref_state:
                torch.testing.assert_close(ours["momentum_buffer"], ref_state["momentum_buffer"],
                                           rtol=1e-7, atol=1e-9)
            else:
                assert "momentum_buffer" not in ours
        else:
            if "exp_avg" in ref_state:
                assert ours["step"] == int(ref_state["step"])
                for key in ("exp_avg", "exp_avg_sq"):
                    torch.testing.assert_close(ours[key], ref_state[key], rtol=1e-7, atol=1e-12)
            else:
                assert "exp_avg" not in ours and "step" not in ours
    assert all(n > 0 for n in kept_counts), f"θ/minus/plus kept {kept_counts} times"


def test_rademacher_directions_are_plus_minus_one_and_gaussian_are_not():
    like = torch.empty(40, 50)
    z = DirectionSampler("rademacher", 0.0, True, 0).block(7, 0, like)
    values = set(z.unique().tolist())
    assert values == {-1.0, 1.0}
    assert abs(float(z.mean())) < 0.1  # balanced: 2,000 draws, std of the mean ≈ 0.022
    sparse = DirectionSampler("rademacher", 0.3, True, 0).block(7, 0, like)
    assert set(sparse.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert int((sparse == 0).sum()) == int(0.3 * like.numel())
    g = DirectionSampler("gaussian", 0.0, True, 0).block(7, 0, like)
    assert len(g.unique()) > 1000 and 0.9 < float(g.std()) < 1.1


def test_conserve_with_nonfinite_candidates_keeps_theta_and_state():
    """A NaN or inf at θ ± lr·u never wins: θ and the rule's state stay as they were."""
    theta = torch.nn.Parameter(torch.tensor([0.5, -0.25], dtype=torch.float64))
    start = theta.detach().clone()
    for name, bad in (("zo-sgd-conserve", float("nan")), ("zo-adam-conserve", float("inf"))):
        opt = optim.build(name, [theta], lr=1.0, mu=1e-6, q=2, seed=1)

        def closure(bad=bad):
            moved = float((theta.detach() - start).abs().max()) > 1e-4  # not the ±mu·z probes
            return (theta ** 2).sum() + (bad if moved else 0.0)

        loss = opt.step(closure)
        assert torch.isfinite(loss)
        assert torch.equal(theta.detach(), start), name
        assert dict(opt.state[theta]) == {}, name


@pytest.mark.parametrize("name,hp", CONSERVE_SETTINGS)
def test_a_replica_given_conserves_decision_applies_the_same_step_without_passes(name, hp):
    """How query-worker replicas follow the trial: the decision the trial's Conserve returns
    makes a replica's apply (no closure, no pass) land on the same θ and state bit for bit."""
    f, _, theta0 = problem(seed=2)
    thetas = [torch.nn.Parameter(theta0.clone()) for _ in range(2)]
    trial, replica = (optim.build(name, [t], **hp) for t in thetas)
    decisions = []
    for _ in range(60):
        estimate = trial.evaluate(lambda: f(thetas[0]), trial.direction_seeds())
        decision = trial.apply(estimate, lambda: f(thetas[0]))
        passes = replica.forward_passes
        assert replica.apply(estimate, decision=decision) == decision
        assert replica.forward_passes == passes
        decisions.append(decision)
        assert torch.equal(thetas[0], thetas[1])
        ours, theirs = trial.state[thetas[0]], replica.state[thetas[1]]
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(torch.as_tensor(ours[k]), torch.as_tensor(theirs[k]))
                   for k in ours)
    assert set(decisions) == {0.0, -1.0, 1.0}
    with pytest.raises(ValueError) as err:
        replica.apply(estimate)
    assert str(err.value) == "conserve needs the closure in apply(estimate, closure)"
