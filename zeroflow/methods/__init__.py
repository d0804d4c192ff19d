"""Continual-learning methods, each a ``Learner`` (see ``base.py``), behind one registry;
``register_method`` (stable, public) adds one, e.g. from a plugin (docs/extending.md)."""

from __future__ import annotations

from zeroflow.errors import ConfigError
from zeroflow.methods.aper import Aper
from zeroflow.methods.base import CosineHead, Learner, ParamGroup
from zeroflow.methods.ease import Ease, EaseOmni
from zeroflow.methods.finetune import Finetune
from zeroflow.methods.zofc import ZOFC
from zeroflow.registry import Registry

METHODS: Registry[type[Learner]] = Registry("method", {
    "ease": Ease, "aper": Aper, "finetune": Finetune, "zofc": ZOFC})


def register_method(name: str, learner_cls: type[Learner]) -> type[Learner]:
    """Register ``learner_cls`` (a ``Learner`` subclass) as method ``name`` (stable API; a taken
    name is a ``ConfigError``); returns the class."""
    if not (isinstance(learner_cls, type) and issubclass(learner_cls, Learner)):
        raise ConfigError(f"method {name!r}: {learner_cls!r} is not a subclass of "
                          "zeroflow.methods.Learner; subclass it (see methods/base.py)")
    return METHODS.add(name, learner_cls)


def get_method(name: str) -> type[Learner]:
    """The ``Learner`` class registered as ``name`` (``ConfigError`` naming the known ones)."""
    return METHODS.lookup(name)


def create_learner(name: str, model, scenario, config) -> Learner:
    """The learner of method ``name`` over ``model`` (an ``AdaptedViT``) and ``scenario``."""
    cls = METHODS.lookup(name)
    if cls is Ease and config.ease_variant == "omni":
        cls = EaseOmni
    return cls(model, scenario, config)


__all__ = ["METHODS", "CosineHead", "Learner", "ParamGroup", "create_learner", "get_method",
           "register_method"]
