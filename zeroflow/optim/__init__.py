"""The optimizer registry: ``build(name, params, **hparams)`` is the one way to make one.

Each named optimizer is a ``torch.optim.Optimizer`` with ``step(closure)`` returning the loss,
``forward_passes``, ``uses_backward`` (does the closure call backward?) and an exact
``state_dict()``/``load_state_dict()`` round trip. Forward-pass variants are one class
(``zo.ZeroOrderOptimizer``) with the options fixed below; FO ones are torch.optim's own.

>>> opt = build("zo-adam", model.parameters(), lr=1e-3, q=4, seed=0)
>>> loss = opt.step(lambda: loss_fn(model(x), y))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from zeroflow.errors import ConfigError
from zeroflow.optim.fo import FOSGD, FOAdam
from zeroflow.optim.schedule import HybridSchedule, fo_counterpart
from zeroflow.optim.spsa import Estimate
from zeroflow.optim.zo import ZeroOrderOptimizer

_SPSA = ("lr", "mu", "q", "seed", "weight_decay", "perturbation", "difference", "history",
         "sparsity", "sparsity_resample", "exact_restore", "direction_buffer", "model_numel")
_SGD = ("momentum",)
_ADAM = ("betas", "eps")


@dataclass(frozen=True)
class OptimizerSpec:
    """A registry entry: the factory, its preset options (those also in ``accepts`` can be
    overridden) and the hyper-parameters it accepts."""

    factory: Callable[..., torch.optim.Optimizer]
    accepts: tuple[str, ...]
    fixed: dict = field(default_factory=dict)


_REGISTRY: dict[str, OptimizerSpec] = {
    "fo-sgd": OptimizerSpec(FOSGD, ("lr", "momentum", "weight_decay")),
    "fo-adam": OptimizerSpec(FOAdam, ("lr", "betas", "eps", "weight_decay")),
    "zo-sgd": OptimizerSpec(ZeroOrderOptimizer, _SPSA + _SGD, {"rule": "sgd"}),
    "zo-sgd-sign": OptimizerSpec(ZeroOrderOptimizer, _SPSA + _SGD + ("sign",),
                                 {"rule": "sgd", "sign": "projected"}),
    "zo-sgd-conserve": OptimizerSpec(ZeroOrderOptimizer, _SPSA + _SGD,
                                     {"rule": "sgd", "conserve": True}),
    "zo-adam": OptimizerSpec(ZeroOrderOptimizer, _SPSA + _ADAM, {"rule": "adam"}),
    "zo-adam-sign": OptimizerSpec(ZeroOrderOptimizer, _SPSA + _ADAM + ("sign",),
                                  {"rule": "adam", "sign": "projected"}),
    "zo-adam-conserve": OptimizerSpec(ZeroOrderOptimizer, _SPSA + _ADAM,
                                      {"rule": "adam", "conserve": True}),
    "forward-grad": OptimizerSpec(
        ZeroOrderOptimizer,
        ("lr", "q", "seed", "weight_decay", "perturbation", "history", "sparsity",
         "sparsity_resample", "rule", "direction_buffer", "model_numel") + _SGD + _ADAM,
        {"estimator": "jvp"},
    ),
}

NAMES: tuple[str, ...] = tuple(_REGISTRY)
FIRST_ORDER: tuple[str, ...] = ("fo-sgd", "fo-adam")


def accepted_hparams(name: str) -> tuple[str, ...]:
    """The hyper-parameters ``build(name, ...)`` accepts."""
    return _spec(name).accepts


def is_first_order(name: str) -> bool:
    return _spec(name).factory.uses_backward


def _spec(name: str) -> OptimizerSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown optimizer {name!r}; choose one of: {', '.join(NAMES)}"
        ) from None


def build(name: str, params, **hparams) -> torch.optim.Optimizer:
    """Make the optimizer ``name`` over ``params`` (tensors or param-group dicts)."""
    spec = _spec(name)
    unknown = sorted(set(hparams) - set(spec.accepts))
    if unknown:
        raise ConfigError(
            f"optimizer {name!r} does not take {', '.join(unknown)}; "
            f"valid hyper-parameters: {', '.join(spec.accepts)}"
        )
    if name == "forward-grad" and hparams.get("rule", "sgd") not in ("sgd", "adam"):
        raise ConfigError(f"forward-grad rule must be 'sgd' or 'adam', got {hparams['rule']!r}")
    try:
        return spec.factory(params, **{**spec.fixed, **hparams})
    except ValueError as err:
        raise ConfigError(f"optimizer {name!r}: {err}") from None


__all__ = ["NAMES", "FIRST_ORDER", "Estimate", "HybridSchedule", "ZeroOrderOptimizer", "build",
           "accepted_hparams", "fo_counterpart", "is_first_order"]
