"""The ZO step regimes (``direction_buffer``): buffered (fast) and seed-only (lean) steps give the
same parameters bit for bit, the lean fold equals restore-then-update, the draws per step are
the documented counts, the subtractive restore's drift stays within its rounding bound, and
``auto`` picks by its documented rule."""

import pytest
import torch

from zeroflow import optim
from zeroflow.errors import ConfigError
from zeroflow.optim.zo import AUTO_MAX_NUMEL, resolve_direction_buffer

ZO_NAMES = [n for n in optim.NAMES if not optim.is_first_order(n)]
U = 2.0**-24  # fp32 unit roundoff


def problem(seed=0):
    """Two fp32 tensors of different shapes and a smooth non-quadratic loss of both."""
    g = torch.Generator().manual_seed(seed)
    w0 = torch.randn(5, 7, generator=g)
    b0 = torch.randn(7, generator=g)
    x = torch.randn(16, 5, generator=g)
    y = torch.randn(16, 7, generator=g)

    def make():
        w, b = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(b0.clone())

        def loss():
            return ((torch.tanh(x @ w + b) - y) ** 2).mean() + 0.1 * (w**2).sum()

        return [w, b], loss

    return make


def run(name, steps, **hp):
    params, loss = problem()()
    opt = optim.build(name, params, lr=0.05, seed=3, **hp)
    for _ in range(steps):
        opt.step(loss)
    return params, opt


def hps(name, q, exact):
    hp = {"q": q, "sparsity": 0.5, "history": 0.3, "weight_decay": 0.01}
    if name != "forward-grad":
        hp["exact_restore"] = exact
    return hp


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("q", [1, 4])
@pytest.mark.parametrize("name", ZO_NAMES)
def test_buffered_and_seed_only_steps_give_the_same_parameters(name, q, exact):
    """Every ZO optimizer, sparsity and history on: the fast and the lean regime end at the
    same parameters and rule state, bit for bit, with either restore."""
    if name == "forward-grad" and not exact:
        pytest.skip("forward-grad perturbs nothing: no restore to choose")
    p_on, opt_on = run(name, 4, direction_buffer="on", **hps(name, q, exact))
    p_off, opt_off = run(name, 4, direction_buffer="off", **hps(name, q, exact))
    assert opt_on.buffered and not opt_off.buffered
    moved = run(name, 0, **hps(name, q, exact))[0]
    for a, b, start in zip(p_on, p_off, moved):
        assert torch.equal(a, b)
        assert not torch.equal(a, start)  # the steps did move θ
    for a, b in zip(p_on, p_off):
        sa, sb = opt_on.state[a], opt_off.state[b]
        assert sorted(sa) == sorted(sb)
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key
    assert opt_on.forward_passes == opt_off.forward_passes


@pytest.mark.parametrize("difference", ["central", "forward"])
@pytest.mark.parametrize("name", ["zo-sgd", "zo-adam", "zo-sgd-sign", "zo-adam-conserve"])
def test_lean_step_folds_the_restore_and_equals_evaluate_then_apply(name, difference):
    """The lean step (subtractive restore, last restore folded into the update's draw) gives
    exactly what the unfolded halves give: θ restored by subtraction, then updated."""
    make = problem()
    hp = dict(q=2, exact_restore=False, direction_buffer="off", difference=difference,
              history=0.2)
    a_params, a_loss = make()
    a = optim.build(name, a_params, lr=0.05, seed=3, **hp)
    b_params, b_loss = make()
    b = optim.build(name, b_params, lr=0.05, seed=3, **hp)
    for _ in range(3):
        a.step(a_loss)
        est = b.evaluate(b._counted(b_loss), b.direction_seeds())
        assert est.unrestored is None  # the public half leaves θ restored
        b.apply(est, b_loss)
    for x, y in zip(a_params, b_params):
        assert torch.equal(x, y)


def count_draws(opt):
    calls = []
    block = opt.sampler.block

    def counting(seed, k, like, dtype=None, out=None):
        calls.append(k)
        return block(seed, k, like, dtype, out)

    opt.sampler.block = counting
    return calls


@pytest.mark.parametrize("q", [1, 4])
def test_draws_per_step(q):
    """Central differences, per tensor: lean 4q - 1 (three moves per direction and q for the
    update, the last restore sharing the update's draw: 3 for q = 1 where MeZO's step takes 4),
    exact copy restore 3q, fast q (one draw per direction, whatever the restore)."""
    expected = {("off", False): 4 * q - 1, ("off", True): 3 * q, ("on", False): q,
                ("on", True): q}
    for (mode, exact), n in expected.items():
        params, loss = problem()()
        opt = optim.build("zo-sgd", params, lr=0.05, q=q, direction_buffer=mode,
                          exact_restore=exact)
        calls = count_draws(opt)
        opt.step(loss)
        assert calls.count(0) == n and calls.count(1) == n, (mode, exact, calls)


def test_lean_restore_drift_stays_within_its_rounding_bound():
    """With lr = 0 the exact regime leaves θ bit for bit where it was and the lean one drifts
    by rounding only: each central direction's three subtractive moves (θ + mu z, - 2 mu z,
    + mu z) round thrice, so after n directions |drift| <= n · 3u · (|θ| + 2 mu |z|max) per
    coordinate (u = 2^-24), with |z|max the largest |z| that coordinate saw."""
    mu, q, steps = 1e-2, 4, 5
    make = problem()
    exact_p, loss_e = make()
    lean_p, loss_l = make()
    start = [p.detach().clone() for p in exact_p]
    exact = optim.build("zo-sgd", exact_p, lr=0.0, mu=mu, q=q, direction_buffer="off",
                        exact_restore=True, weight_decay=0.0)
    lean = optim.build("zo-sgd", lean_p, lr=0.0, mu=mu, q=q, direction_buffer="off",
                       exact_restore=False, weight_decay=0.0)
    zmax = [torch.zeros_like(p) for p in start]
    for _ in range(steps):
        for seed in lean.direction_seeds():
            for k, p in enumerate(start):
                zmax[k] = torch.maximum(zmax[k], lean.sampler.block(seed, k, p).abs())
        exact.step(loss_e)
        lean.step(loss_l)
    n = steps * q
    drifted = False
    for p0, pe, pl, z in zip(start, exact_p, lean_p, zmax):
        assert torch.equal(pe, p0)
        bound = n * 3 * U * (p0.abs() + 2 * mu * z) * 1.01
        assert bool(((pl - p0).abs() <= bound).all())
        drifted |= not torch.equal(pl, p0)
    assert drifted  # the lean restore really subtracts


def test_auto_rule():
    """auto: fast under 10 % of the model's parameters, lean from there on; without the model's
    size, fast up to AUTO_MAX_NUMEL trainable values."""
    assert resolve_direction_buffer("auto", 9, 100) is True
    assert resolve_direction_buffer("auto", 10, 100) is False
    assert resolve_direction_buffer("auto", 100, 100) is False
    assert resolve_direction_buffer("auto", AUTO_MAX_NUMEL, None) is True
    assert resolve_direction_buffer("auto", AUTO_MAX_NUMEL + 1, None) is False
    assert resolve_direction_buffer("on", 10**9, 10**9) is True
    assert resolve_direction_buffer("off", 1, 10**9) is False
    params, _ = problem()()  # 42 values
    assert optim.build("zo-sgd", params).buffered
    assert not optim.build("zo-sgd", params, model_numel=400).buffered
    assert optim.build("zo-adam", params, model_numel=430).buffered
    assert optim.build("forward-grad", params, direction_buffer="off").buffered is False


def test_bad_direction_buffer_names_the_choices():
    params, _ = problem()()
    with pytest.raises(ConfigError, match=r"direction_buffer must be one of \('auto', 'on', "
                                          r"'off'\), got 'yes'"):
        optim.build("zo-sgd", params, direction_buffer="yes")
    with pytest.raises(ConfigError, match="model_numel must be a positive integer, got 0"):
        optim.build("zo-sgd", params, model_numel=0)


@pytest.mark.parametrize("mode", ["on", "off"])
def test_exact_restore_swaps_back_the_untouched_originals_even_when_the_closure_raises(mode):
    """Exact restore never writes θ: after a step's evaluation (and after a closure that raises
    mid-evaluation) each parameter holds its original storage with the original values."""
    params, loss = problem()()
    before = [(p.data_ptr(), p.detach().clone()) for p in params]
    opt = optim.build("zo-sgd", params, lr=0.05, q=2, direction_buffer=mode)
    est = opt.evaluate(loss, opt.direction_seeds())
    assert len(est.scalars) == 2
    for p, (ptr, value) in zip(params, before):
        assert p.data_ptr() == ptr and torch.equal(p, value)
    calls = []

    def failing():
        calls.append(1)
        if len(calls) == 2:  # during θ - mu z
            raise RuntimeError("boom")
        return loss()

    with pytest.raises(RuntimeError, match="boom"):
        opt.step(failing)
    for p, (ptr, value) in zip(params, before):
        assert p.data_ptr() == ptr and torch.equal(p, value)


@pytest.mark.parametrize("perturbation", ["gaussian", "rademacher"])
@pytest.mark.parametrize("sparsity, resample", [(0.0, True), (0.5, True), (0.5, False)])
def test_in_place_draws_are_the_fresh_draws(perturbation, sparsity, resample):
    """A block drawn into reused storage (``out=``, the fast regime's buffer) holds the numbers
    of a fresh draw, and those are what the directions always were: ``torch.randn`` or
    ``torch.randint(0, 2)`` mapped to ±1 from the block's generator (then the mask)."""
    from zeroflow.optim.perturb import DirectionSampler
    from zeroflow.seeding import derive_seed

    sampler = DirectionSampler(perturbation, sparsity, resample, seed=4)
    for shape in [(3,), (17,), (40, 33)]:
        like = torch.zeros(shape)
        fresh = sampler.block(9, 2, like)
        out = torch.full(shape, 7.0)
        assert sampler.block(9, 2, like, out=out) is out
        assert torch.equal(out, fresh)
        gen = torch.Generator().manual_seed(derive_seed(9, 2))
        if perturbation == "gaussian":
            z = torch.randn(shape, generator=gen)
        else:
            z = torch.randint(0, 2, shape, generator=gen).to(torch.float32) * 2 - 1
        if sparsity == 0:
            assert torch.equal(fresh, z)
        else:
            kept = fresh != 0
            assert int((~kept).sum()) == int(sparsity * like.numel())
            assert torch.equal(fresh[kept], z[kept])


def test_threaded_fill_equals_block_by_block_draws():
    """A direction large enough to be drawn by several threads holds, in every dtype's
    accumulation type, exactly the blocks drawn one by one; an error in a thread surfaces."""
    from zeroflow.optim import perturb

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        like = [torch.zeros(700, 1000), torch.zeros(300, 1000, dtype=torch.bfloat16),
                torch.zeros(5, dtype=torch.float64), torch.zeros(400_000)]
        assert sum(t.numel() for t in like) >= perturb.PARALLEL_MIN_NUMEL
        sampler = perturb.DirectionSampler("gaussian", 0.1, True, seed=1)
        outs = [torch.empty_like(t, dtype=perturb.accumulation_dtype(t)) for t in like]
        sampler.fill(11, outs)
        for k, (t, out) in enumerate(zip(like, outs)):
            assert out.dtype == perturb.accumulation_dtype(t)
            assert torch.equal(out, sampler.block(11, k, t, perturb.accumulation_dtype(t)))
        seen = []

        def failing(k):
            seen.append(k)
            if k == 3:
                raise RuntimeError("draw failed")

        with pytest.raises(RuntimeError, match="draw failed"):
            perturb.parallel_map(failing, [t.numel() for t in like])
        assert 3 in seen and 0 in seen  # blocks 0 (the largest) and 3 run in different groups
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("q", [1, 3])
def test_fast_step_reuses_its_storage_and_never_keeps_it_as_state(q):
    """The fast regime's direction buffer and the exact restore's swapped-in set are allocated
    once and reused by later steps; the state a step keeps (SGD's momentum buffer, made from
    the first step's estimate) is never that storage, so the next draw cannot change it."""
    params, loss = problem()()
    opt = optim.build("zo-sgd", params, lr=0.05, q=q, momentum=0.9, direction_buffer="on")
    opt.step(loss)
    storage = {t.data_ptr() for s in opt._buffer._sets for t in s}
    storage |= {t.data_ptr() for t in opt._work}
    assert len(storage) == len(params) * (2 + (q > 1))
    momentum = [opt.state[p]["momentum_buffer"].clone() for p in params]
    assert not storage & {opt.state[p]["momentum_buffer"].data_ptr() for p in params}
    opt.evaluate(loss, [123, 456])  # draws over the buffer, leaves θ and the state alone
    for p, m in zip(params, momentum):
        assert torch.equal(opt.state[p]["momentum_buffer"], m)
    opt.step(loss)
    assert storage == ({t.data_ptr() for s in opt._buffer._sets for t in s}
                       | {t.data_ptr() for t in opt._work})


@pytest.mark.parametrize("q", [1, 4])
@pytest.mark.parametrize("name", ["zo-sgd", "zo-adam-conserve", "forward-grad"])
def test_buffers_made_per_step_give_the_same_parameters(name, q, monkeypatch):
    """Where buffers are not kept between steps (CUDA), each step makes and frees its own:
    the same parameters bit for bit as the seed-only regime, and nothing kept."""
    from zeroflow.optim.zo import ZeroOrderOptimizer

    monkeypatch.setattr(ZeroOrderOptimizer, "keeps_buffers", staticmethod(lambda params: False))
    p_on, opt_on = run(name, 4, direction_buffer="on", **hps(name, q, True))
    p_off, _ = run(name, 4, direction_buffer="off", **hps(name, q, True))
    assert opt_on.buffered and opt_on._buffer is None and opt_on._work is None
    for a, b in zip(p_on, p_off):
        assert torch.equal(a, b)
