"""Backbones: frozen pre-trained ViTs with EASE/APER adapter sets (``create_backbone``).

``backbone``: ``AdaptedViT`` and the embedded tiny architecture; ``registry``: names →
backbones (``create_backbone``, ``BACKBONES``); ``weights``: where pre-trained weights come
from (the embedded file, a local file, the hub cache, a download)."""

from zeroflow.models.adapters import Adapter
from zeroflow.models.backbone import (
    PAPER_BACKBONE,
    TINY_VIT_CONFIG,
    TINY_WEIGHTS,
    AdaptedViT,
    build_tiny_vit,
)
from zeroflow.models.registry import (
    BACKBONES,
    create_backbone,
    list_backbones,
    register_backbone,
)

__all__ = [
    "BACKBONES",
    "PAPER_BACKBONE",
    "TINY_VIT_CONFIG",
    "TINY_WEIGHTS",
    "Adapter",
    "AdaptedViT",
    "build_tiny_vit",
    "create_backbone",
    "list_backbones",
    "register_backbone",
]
