"""``AdaptedViT``: a frozen pre-trained ViT with EASE-style adapter sets, and the embedded tiny
architecture. Names → backbones is ``models.registry``; their weights, ``models.weights``.

``AdaptedViT`` wraps a timm ``VisionTransformer``: the backbone is frozen and always in eval mode;
only the adapter sets train. ``features(x, k)`` re-implements timm's forward over the block
internals so that adapter set ``k`` runs parallel to every block's MLP (see ``adapters.py``).

Forward-mode AD: ``F.scaled_dot_product_attention`` has no forward-AD formula (CPU flash kernel,
torch 2.14), so a block whose input carries a forward-AD tangent runs timm's non-fused (math)
attention path instead; plain forward passes keep the fused kernel. Both compute the same
attention.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.autograd.forward_ad as fwAD
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from zeroflow.errors import ConfigError
from zeroflow.models.adapters import Adapter
from zeroflow.seeding import derive_seed

#: The paper's backbone (ViT-B/16, ImageNet-21k AugReg). Name it by this full tag: the bare
#: ``vit_base_patch16_224`` resolves to in21k→in1k fine-tuned weights in current timm.
PAPER_BACKBONE = "vit_base_patch16_224.augreg_in21k"

#: The embedded tiny backbone: 3×16×16 inputs in [0, 1], no mean/std normalisation.
TINY_VIT_CONFIG: dict = dict(
    img_size=16, patch_size=4, embed_dim=64, depth=4, num_heads=2, mlp_ratio=4.0
)
TINY_WEIGHTS = Path(__file__).resolve().parent / "weights" / "tiny_vit.pt"


def build_tiny_vit(num_classes: int = 0, seed: int = 0) -> VisionTransformer:
    """The tiny architecture at timm's default init, seeded (global RNG forked, so untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VisionTransformer(**TINY_VIT_CONFIG, num_classes=num_classes)


def _has_tangent(x: torch.Tensor) -> bool:
    return fwAD.unpack_dual(x).tangent is not None


def _attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``attn(x)``, on the non-fused path when ``x`` carries a forward-AD tangent."""
    if getattr(attn, "fused_attn", False) and _has_tangent(x):
        attn.fused_attn = False
        try:
            return attn(x)
        finally:
            attn.fused_attn = True
    return attn(x)


def check_vit(model: nn.Module, name: str) -> None:
    """ConfigError unless ``model`` is a timm ViT whose forward ``features`` can re-implement."""
    reason = None
    if not isinstance(model, VisionTransformer):
        reason = f"it is a {type(model).__name__}, not a timm VisionTransformer"
    elif model.cls_token is None or model.global_pool != "token" or model.attn_pool is not None:
        reason = "it has no class-token pooling"
    elif not all(isinstance(b, Block) for b in model.blocks):
        reason = "its blocks are not timm's pre-norm Block"
    if reason:
        raise ConfigError(
            f"backbone {name!r} is not supported ({reason}); use 'tiny' or a timm ViT tag with "
            f"a class token, e.g. {PAPER_BACKBONE!r}"
        )


class AdaptedViT(nn.Module):
    """A frozen timm ViT plus a list of adapter sets (one adapter per block per set).

    Attributes: ``backbone`` (frozen, always eval), ``embed_dim``, ``image_size``,
    ``adapter_sets`` (``nn.ModuleList`` of ``nn.ModuleList[Adapter]``), and ``mean``/``std``:
    the input normalisation the pre-trained weights expect, which ``features`` does NOT apply
    (identity for the tiny backbone; 0.5/0.5 for ``PAPER_BACKBONE``).

    Adapter dropout draws from a private generator per device, seeded by ``reseed(seed)``
    (``seed`` 0 until called): two passes after the same ``reseed`` see the same masks.
    """

    def __init__(self, backbone: VisionTransformer, name: str = "", seed: int = 0):
        super().__init__()
        check_vit(backbone, name or type(backbone).__name__)
        if backbone.num_classes:
            backbone.reset_classifier(0)
        backbone.requires_grad_(False)
        backbone.eval()
        self.backbone = backbone
        self.name = name
        self.embed_dim = int(backbone.embed_dim)
        self.image_size = int(backbone.patch_embed.img_size[0])
        cfg = getattr(backbone, "pretrained_cfg", None) or {}
        self.mean = tuple(cfg.get("mean", (0.0, 0.0, 0.0)))
        self.std = tuple(cfg.get("std", (1.0, 1.0, 1.0)))
        self.adapter_sets = nn.ModuleList()
        self._init_seed = int(seed)
        self._dropout_seed = 0
        self._generators: dict[str, torch.Generator] = {}

    def train(self, mode: bool = True) -> AdaptedViT:
        """Set train/eval mode on the adapters; the backbone stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def add_adapter_set(
        self, bottleneck: int = 64, dropout: float = 0.1, scale: float = 0.1
    ) -> int:
        """Append one adapter per block (on the backbone's device and dtype); returns its index.

        The down-projections are initialised from seeds derived from (model seed, set, block).
        """
        ref = next(self.backbone.parameters())
        index = len(self.adapter_sets)
        adapters = nn.ModuleList(
            Adapter(
                self.embed_dim, bottleneck, dropout, scale,
                seed=derive_seed(self._init_seed, index, block),
                device=ref.device, dtype=ref.dtype,
            )
            for block in range(len(self.backbone.blocks))
        )
        adapters.train(self.training)
        self.adapter_sets.append(adapters)
        return index

    def reseed(self, seed: int) -> None:
        """Reset the dropout generators (existing and future, every device) to ``seed``."""
        self._dropout_seed = int(seed)
        for generator in self._generators.values():
            generator.manual_seed(self._dropout_seed)

    def _generator(self, device: torch.device) -> torch.Generator:
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self._dropout_seed)
        return self._generators[key]

    def features(self, x: torch.Tensor, adapter_set: int | None = None) -> torch.Tensor:
        """CLS token after the final norm, [B, embed_dim], for images ``x`` [B, 3, H, W].

        ``adapter_set=None`` gives the plain pre-trained model; an index runs that adapter set in
        every block. Works under ``torch.no_grad()`` and under forward-mode AD.
        """
        adapters = None
        if adapter_set is not None:
            if not 0 <= adapter_set < len(self.adapter_sets):
                raise IndexError(
                    f"adapter set {adapter_set} does not exist; the model has "
                    f"{len(self.adapter_sets)} (add one with add_adapter_set())"
                )
            adapters = self.adapter_sets[adapter_set]
        generator = None
        if adapters is not None and self.training:
            generator = self._generator(x.device)

        bb = self.backbone
        x = bb.patch_embed(x)
        x = bb._pos_embed(x)
        x = bb.patch_drop(x)
        x = bb.norm_pre(x)
        for i, blk in enumerate(bb.blocks):
            x = x + blk.drop_path1(blk.ls1(_attention(blk.attn, blk.norm1(x))))
            h = adapters[i](x, generator) if adapters is not None else None
            x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
            if h is not None:
                x = x + h
        x = bb.norm(x)
        return bb.fc_norm(x[:, 0])

    def forward(self, x: torch.Tensor, adapter_set: int | None = None) -> torch.Tensor:
        """Same as ``features``."""
        return self.features(x, adapter_set)
