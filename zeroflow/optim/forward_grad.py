"""Forward-Grad: the directional derivative ∇f·v from one forward-mode jvp, no backward.

    g = (1/q) sum_i (∇f(θ)·v_i) v_i,   v_i ~ N(0, I) (or Rademacher), seeded like SPSA's z_i.

E[(∇f·v) v] = ∇f, so the estimate is unbiased; it needs no mu. The closure is zero-argument, so
the tangent is attached by swapping each trainable tensor with a dual tensor for the duration of
the call (``torch.utils.swap_tensors``; assigning ``p.data`` a dual tensor loses the tangent).
One jvp counts as one forward pass.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.autograd.forward_ad as fwAD

from zeroflow.optim.perturb import DirectionBuffer, DirectionSampler
from zeroflow.optim.spsa import Estimate


@contextlib.contextmanager
def dual_parameters(params: Sequence[torch.Tensor], tangents: Sequence[torch.Tensor]):
    """Within an open ``fwAD.dual_level()``: each tensor in ``params`` is, in place, a dual
    tensor with the given tangent until the block ends (then swapped back, also on error)."""
    duals = [fwAD.make_dual(p.detach(), v) for p, v in zip(params, tangents)]
    for p, d in zip(params, duals):
        torch.utils.swap_tensors(p, d)
    try:
        yield
    finally:
        for p, d in zip(params, duals):
            torch.utils.swap_tensors(p, d)


def jvp_evaluate(
    closure: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    sampler: DirectionSampler,
    seeds: Sequence[int],
    buffer: DirectionBuffer | None = None,
    coeff: Callable[[float], float] | None = None,
) -> Estimate:
    """Evaluate ∇f(θ)·v_i for each direction seed; returns the scalars and f(θ). With a
    ``buffer`` (and ``coeff``), each v_i is drawn into it and coeff(c_i) v_i accumulated, so the
    update needs no second draw."""
    scalars: list[float] = []
    f0 = float("nan")
    with torch.no_grad(), warnings.catch_warnings():
        # torch's first make_dual loads jvp decompositions through deprecated torch.jit.script
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        for seed in seeds:
            with fwAD.dual_level():
                if buffer is None:
                    tangents = [sampler.block(seed, k, p) for k, p in enumerate(params)]
                else:
                    buffer.select(seed)
                    tangents = buffer.tangents()
                with dual_parameters(params, tangents):
                    out = closure()
                primal, tangent = fwAD.unpack_dual(out)
                if tangent is None:
                    raise RuntimeError(
                        "forward-grad: the closure's loss does not depend on the trainable "
                        "tensors through forward-mode AD; check that it uses them"
                    )
                f0 = float(primal)
                scalars.append(float(tangent))
            del tangents
            if buffer is not None and coeff is not None:
                buffer.accumulate(coeff(scalars[-1]))
    return Estimate(list(seeds), scalars, f0, f0)
