"""The backbone registry: ``create_backbone(name)`` is the one way to make one.

A registered name maps to a factory ``factory(weights: str | None) -> VisionTransformer``
(``tiny``: the embedded ViT); any other name must be a timm ViT tag (e.g. ``PAPER_BACKBONE``),
created by timm with its pre-trained weights. Either way the result is wrapped as a frozen
``AdaptedViT``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from timm.models.vision_transformer import VisionTransformer

from zeroflow.errors import ConfigError
from zeroflow.models.backbone import PAPER_BACKBONE, AdaptedViT
from zeroflow.models.weights import is_timm_model, timm_vit, tiny_vit
from zeroflow.registry import Registry

BackboneFactory = Callable[[str | None], VisionTransformer]
BACKBONES: Registry[BackboneFactory] = Registry(
    "backbone", {"tiny": tiny_vit}, hint=f"or a timm ViT tag such as {PAPER_BACKBONE!r}")


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: register ``factory(weights: str | None) -> VisionTransformer`` as ``name``."""

    def decorate(factory: BackboneFactory) -> BackboneFactory:
        return BACKBONES.add(name, factory)

    return decorate


def list_backbones() -> list[str]:
    """Registered names; any timm ViT tag (e.g. ``PAPER_BACKBONE``) is accepted as well."""
    return sorted(BACKBONES.names())


def create_backbone(
    name: str = "tiny", weights: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> AdaptedViT:
    """A frozen pre-trained ViT wrapped as ``AdaptedViT`` (no adapter sets yet), on ``device``.

    ``name``: a registered name (``list_backbones()``, e.g. ``"tiny"``) or any timm ViT tag,
    created with ``timm.create_model(tag, pretrained=True, num_classes=0)``; the paper's
    backbone is ``PAPER_BACKBONE``. ``weights=PATH`` loads that local file instead of the
    registry/hub weights (.safetensors/.pth/.bin, or a JAX .npz for timm ViTs).
    Errors: ``ConfigError`` for an unknown or non-ViT name, ``WeightsError`` for a missing,
    unreadable or undownloadable weights file.
    """
    weights = None if weights is None else os.fspath(weights)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"backbone name must be a non-empty string, got {name!r}; use 'tiny'")
    if name in BACKBONES:
        vit = BACKBONES[name](weights)
    elif is_timm_model(name):
        vit = timm_vit(name, weights)
    else:
        raise BACKBONES.unknown(name)
    return AdaptedViT(vit, name=name).to(device)
