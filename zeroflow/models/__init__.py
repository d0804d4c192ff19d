"""Backbones: frozen pre-trained ViTs with EASE/APER adapter sets (``create_backbone``)."""

from zeroflow.models.adapters import Adapter
from zeroflow.models.backbone import (
    PAPER_BACKBONE,
    TINY_VIT_CONFIG,
    TINY_WEIGHTS,
    AdaptedViT,
    build_tiny_vit,
    create_backbone,
    list_backbones,
    register_backbone,
)

__all__ = [
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
