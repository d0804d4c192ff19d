"""The optimizer registry: ``build(name, params, **hparams)`` is the one way to make one;
``register_optimizer`` (stable, public) adds one, e.g. from a plugin (docs/extending.md).

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
from zeroflow.optim.schedule import HybridSchedule
from zeroflow.optim.spsa import Estimate
from zeroflow.optim.zo import CountingOptimizer, ZeroOrderOptimizer
from zeroflow.registry import Registry

_ENHANCE = ("history", "history_mode", "sparsity", "sparsity_mask", "sparsity_resample",
            "mask_seed")
_SPSA = ("lr", "mu", "q", "seed", "weight_decay", "perturbation", "difference", *_ENHANCE,
         "exact_restore", "direction_buffer", "model_numel")
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
        ("lr", "q", "seed", "weight_decay", "perturbation", *_ENHANCE, "rule",
         "direction_buffer", "model_numel") + _SGD + _ADAM,
        {"estimator": "jvp"}, "", "Forward",
    ),
})

# the built-ins (the paper's nine); ``REGISTRY.names()`` has plugins' too
NAMES: tuple[str, ...] = REGISTRY.names()
FIRST_ORDER: tuple[str, ...] = tuple(n for n, s in REGISTRY.items() if s.factory.uses_backward)
FAMILIES = ("SGD", "Adam", "")  # the update rule a report files an optimizer under
STRATEGIES = ("FO", "ZO", "Sign", "Conserve", "Forward")  # the paper's; plugins may add others


def register_optimizer(name: str, factory: Callable[..., torch.optim.Optimizer], *,
                       accepts, fixed: dict | None = None, family: str = "",
                       strategy: str = "ZO") -> OptimizerSpec:
    """Register optimizer ``name`` (stable API; a taken name is a ``ConfigError``).

    factory: ``factory(params, **hparams)``, a ``torch.optim.Optimizer`` class with the
    contract of ``zeroflow.testing.check_optimizer``: ``uses_backward`` (False for a
    forward-pass one), ``forward_passes``, an exact ``state_dict`` round trip and, to run with
    query workers, ``direction_seeds``/``evaluate``/``apply`` as ``ZeroOrderOptimizer`` has.
    accepts: the trial keys it takes (from ``lr``, ``mu``, ``q``, ``seed``, ``weight_decay``,
    ``momentum``, ``perturbation``, ``difference``, ``history``, ``history_mode``,
    ``sparsity``, ``sparsity_mask``, ``sparsity_resample``, ``mask_seed``, ``model_numel``);
    ``build`` refuses others. fixed: options always passed (those also in
    ``accepts`` can be overridden). family/strategy: where reports file it (its update rule:
    ``SGD``, ``Adam`` or ``""``; ``ZO``, ``Sign``, ``Conserve``, ``Forward``, ``FO`` or a new
    strategy of its own)."""
    if not callable(factory) or not isinstance(getattr(factory, "uses_backward", None), bool):
        raise ConfigError(f"optimizer {name!r}: factory must be an optimizer class with "
                          "uses_backward = True/False (subclass zeroflow.optim.ZeroOrderOptimizer "
                          "or CountingOptimizer)")
    accepts = (accepts,) if isinstance(accepts, str) else tuple(accepts)
    if not all(isinstance(a, str) and a for a in accepts):
        raise ConfigError(f"optimizer {name!r}: accepts must be hyper-parameter names, "
                          f"got {accepts!r}")
    if family not in FAMILIES:
        raise ConfigError(f"optimizer {name!r}: family={family!r}; use one of "
                          f"{', '.join(repr(f) for f in FAMILIES)}")
    if not isinstance(strategy, str) or not strategy:
        raise ConfigError(f"optimizer {name!r}: strategy must be a non-empty name (e.g. 'ZO')")
    return REGISTRY.add(name, OptimizerSpec(factory, accepts, dict(fixed or {}), family,
                                            strategy))


def fo_counterpart(name: str) -> str:
    """The first-order optimizer a forward-pass one hands over from in the hybrid schedule:
    fo-adam for the Adam family, fo-sgd otherwise."""
    spec = REGISTRY.get(name)
    return "fo-adam" if "adam" in name or (spec and spec.family == "Adam") else "fo-sgd"


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
    return sorted(REGISTRY.names(), key=lambda n: families.index(REGISTRY[n].family))


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


__all__ = ["NAMES", "FIRST_ORDER", "REGISTRY", "CountingOptimizer", "Estimate", "HybridSchedule",
           "OptimizerSpec", "ZeroOrderOptimizer", "accepted_hparams", "build", "fo_counterpart",
           "is_first_order", "register_optimizer", "report_order"]
