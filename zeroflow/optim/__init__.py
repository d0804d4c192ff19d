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
from zeroflow.registry import Registry

_SPSA = ("lr", "mu", "q", "seed", "weight_decay", "perturbation", "difference", "history",
         "sparsity", "sparsity_resample", "exact_restore", "direction_buffer", "model_numel")
_SGD = ("momentum",)
_ADAM = ("betas", "eps")


@dataclass(frozen=True)
class OptimizerSpec:
    """A registry entry: the factory, the hyper-parameters it accepts, its preset options (those
    also in ``accepts`` can be overridden), and how reports file it: ``family`` (its update
    rule: SGD, Adam) and ``strategy`` (FO, ZO, Sign, Conserve, Forward)."""

    factory: Callable[..., torch.optim.Optimizer]
    accepts: tuple[str, ...]
    fixed: dict = field(default_factory=dict)
    family: str = ""
    strategy: str = ""


REGISTRY: Registry[OptimizerSpec] = Registry("optimizer", {
    "fo-sgd": OptimizerSpec(FOSGD, ("lr", "momentum", "weight_decay"), {}, "SGD", "FO"),
    "fo-adam": OptimizerSpec(FOAdam, ("lr", "betas", "eps", "weight_decay"), {}, "Adam", "FO"),
    "zo-sgd": OptimizerSpec(ZeroOrderOptimizer, _SPSA + _SGD, {"rule": "sgd"}, "SGD", "ZO"),
    "zo-sgd-sign": OptimizerSpec(ZeroOrderOptimizer, _SPSA + _SGD + ("sign",),
                                 {"rule": "sgd", "sign": "projected"}, "SGD", "Sign"),
    "zo-sgd-conserve": OptimizerSpec(ZeroOrderOptimizer, _SPSA + _SGD,
                                     {"rule": "sgd", "conserve": True}, "SGD", "Conserve"),
    "zo-adam": OptimizerSpec(ZeroOrderOptimizer, _SPSA + _ADAM, {"rule": "adam"}, "Adam", "ZO"),
    "zo-adam-sign": OptimizerSpec(ZeroOrderOptimizer, _SPSA + _ADAM + ("sign",),
                                  {"rule": "adam", "sign": "projected"}, "Adam", "Sign"),
    "zo-adam-conserve": OptimizerSpec(ZeroOrderOptimizer, _SPSA + _ADAM,
                                      {"rule": "adam", "conserve": True}, "Adam", "Conserve"),
    "forward-grad": OptimizerSpec(
        ZeroOrderOptimizer,
        ("lr", "q", "seed", "weight_decay", "perturbation", "history", "sparsity",
         "sparsity_resample", "rule", "direction_buffer", "model_numel") + _SGD + _ADAM,
        {"estimator": "jvp"}, "", "Forward",
    ),
})

NAMES: tuple[str, ...] = REGISTRY.names()
FIRST_ORDER: tuple[str, ...] = tuple(n for n, s in REGISTRY.items() if s.factory.uses_backward)


def accepted_hparams(name: str) -> tuple[str, ...]:
    """The hyper-parameters ``build(name, ...)`` accepts."""
    return REGISTRY.lookup(name).accepts


def is_first_order(name: str) -> bool:
    return REGISTRY.lookup(name).factory.uses_backward


def report_order() -> list[str]:
    """The optimizers as reports list them: grouped by family in order of first registration,
    registration order within a family (the paper's: SGD's FO, ZO, Sign, Conserve, then Adam's,
    then Forward-Grad)."""
    families = list(dict.fromkeys(s.family for s in REGISTRY.values()))
    return sorted(NAMES, key=lambda n: families.index(REGISTRY[n].family))


def build(name: str, params, **hparams) -> torch.optim.Optimizer:
    """Make the optimizer ``name`` over ``params`` (tensors or param-group dicts)."""
    spec = REGISTRY.lookup(name)
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


__all__ = ["NAMES", "FIRST_ORDER", "REGISTRY", "Estimate", "HybridSchedule", "OptimizerSpec",
           "ZeroOrderOptimizer", "build", "accepted_hparams", "fo_counterpart", "is_first_order",
           "report_order"]
