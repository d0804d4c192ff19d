"""Pre-trained weights for backbones: the embedded tiny ViT's file, and timm ViTs' weights from
a local file, the hub cache or a download (checked offline first, so an offline run fails fast).
Every failure is a one-line ``ConfigError`` (a name that is not a supported ViT) or
``WeightsError`` (a file that is missing, unreadable or cannot be downloaded)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from timm.models import get_pretrained_cfg, split_model_name_tag
from timm.models.vision_transformer import VisionTransformer

from zeroflow.errors import ConfigError, WeightsError
from zeroflow.models.backbone import TINY_WEIGHTS, build_tiny_vit, check_vit

_WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".npz")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    return obj


def tiny_vit(weights: str | None) -> VisionTransformer:
    """The embedded tiny ViT (``TINY_VIT_CONFIG``), pre-trained on synthetic stroke glyphs."""
    path = Path(weights).expanduser() if weights is not None else TINY_WEIGHTS
    if not path.is_file():
        if weights is not None:
            raise WeightsError(
                f"weights file not found: {path}; pass weights=PATH to an existing file"
            )
        raise WeightsError(
            f"embedded tiny weights missing at {path}; regenerate them with "
            f"python -m zeroflow.models.pretrain_tiny --out {path}"
        )
    model = build_tiny_vit()
    try:
        state = {k: v.float() for k, v in _read_state_dict(path).items()}
        model.load_state_dict(state)
    except Exception as exc:  # noqa: BLE001 - any unreadable/mismatched file is a weights problem
        raise WeightsError(
            f"cannot load tiny-ViT weights from {path} ({_one_line(exc)}); pass weights=PATH "
            f"written by python -m zeroflow.models.pretrain_tiny"
        ) from None
    return model


def _cached_weights(cfg) -> tuple[str, bool] | None:
    """(local file, custom_load) of an already downloaded weight file, else None."""
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
        names += ["model.safetensors", "pytorch_model.bin"]
        for filename in names:
            found = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str) and os.path.isfile(found):
                return found, False
    if cfg.url:
        found = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path)
        if found.is_file():
            return str(found), bool(cfg.custom_load)
    return None


def _download_possible(cfg) -> bool:
    """Quick offline check (env flag, then DNS) so an offline run fails fast, not after retries."""
    if cfg.hf_hub_id:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in (
            "1", "true", "yes", "on"
        ):
            return False
        host = urlparse(constants.ENDPOINT).hostname
    elif cfg.url:
        host = urlparse(cfg.url).hostname
    else:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # the proxy resolves names; let the download try
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return False
    return True


def is_timm_model(tag: str) -> bool:
    """Whether ``tag`` (``arch`` or ``arch.pretrained_tag``) names an architecture timm has."""
    return timm.is_model(split_model_name_tag(tag)[0])


def timm_vit(tag: str, weights: str | None) -> VisionTransformer:
    """A timm ViT ``tag`` (``is_timm_model``) with its pre-trained weights: ``weights=PATH``,
    else the hub's, from the local cache when there, else downloaded where that is possible."""
    arch, pretrained_tag = split_model_name_tag(tag)
    try:
        cfg = get_pretrained_cfg(tag)
    except RuntimeError:  # timm: "Invalid pretrained tag"
        cfg = None
    if pretrained_tag and cfg is None:
        known = timm.list_pretrained(f"{arch}.*")
        raise ConfigError(
            f"unknown pretrained tag {tag!r}; use one of {known[:8]} or pass weights=PATH with "
            f"the bare architecture {arch!r}"
        )
    with torch.device("meta"):  # cheap structural check before any download
        check_vit(timm.create_model(arch, pretrained=False, num_classes=0), tag)

    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"weights file not found: {path}; pass weights=PATH to an existing file"
            )
        if path.suffix not in _WEIGHT_SUFFIXES:
            raise WeightsError(
                f"unsupported weights file type {path.name!r}; pass weights=PATH ending in one of "
                f"{', '.join(_WEIGHT_SUFFIXES)}"
            )
        overlay = dict(file=str(path), custom_load=path.suffix == ".npz")
    else:
        cached = _cached_weights(cfg) if cfg is not None else None
        if cached is not None:
            overlay = dict(file=cached[0], custom_load=cached[1])
        elif cfg is None or not _download_possible(cfg):
            raise WeightsError(
                f"pretrained weights for {tag!r} could not be downloaded (offline, nothing "
                f"cached); pass weights=PATH to a local .safetensors/.pth/.bin/.npz file"
            )
        else:
            overlay = None
    try:
        model = timm.create_model(
            tag, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay
        )
    except Exception as exc:  # noqa: BLE001 - timm/hub/torch raise many types; report one line
        if weights is not None:
            raise WeightsError(
                f"cannot load {weights} into {tag!r} ({_one_line(exc)}); pass weights=PATH "
                f"holding this architecture's checkpoint"
            ) from None
        raise WeightsError(
            f"pretrained weights for {tag!r} could not be downloaded ({_one_line(exc)}); "
            f"pass weights=PATH to a local .safetensors/.pth/.bin/.npz file"
        ) from None
    return model
