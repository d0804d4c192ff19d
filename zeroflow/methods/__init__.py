"""Continual-learning methods, each a ``Learner`` (see ``base.py``), behind one registry."""

from __future__ import annotations

from zeroflow.methods.aper import Aper
from zeroflow.methods.base import Learner, ParamGroup
from zeroflow.methods.ease import Ease, EaseOmni
from zeroflow.methods.finetune import Finetune
from zeroflow.methods.zofc import ZOFC
from zeroflow.registry import Registry

METHODS: Registry[type[Learner]] = Registry("method", {
    "ease": Ease, "aper": Aper, "finetune": Finetune, "zofc": ZOFC})


def create_learner(name: str, model, scenario, config) -> Learner:
    """The learner of method ``name`` over ``model`` (an ``AdaptedViT``) and ``scenario``."""
    cls = METHODS.lookup(name)
    if cls is Ease and config.ease_variant == "omni":
        cls = EaseOmni
    return cls(model, scenario, config)


__all__ = ["METHODS", "Learner", "ParamGroup", "create_learner"]
