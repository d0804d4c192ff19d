"""Image transforms of the reference ViT pipelines (PILOT/APER), without global RNG.

Train: RandomResizedCrop(size, scale=(0.05, 1), ratio=(3/4, 4/3)) + horizontal flip (p=0.5),
then ToTensor. Test: Resize(round(size * 256 / 224), bicubic) + CenterCrop(size), then ToTensor.
No mean/std normalisation (the backbone's own preprocessing owns that).

torchvision's random transforms draw from torch's global RNG, which this project never
touches; the crop and flip are therefore sampled here from a caller-supplied
``torch.Generator`` (same distribution as ``RandomResizedCrop.get_params``) and applied with
``torchvision.transforms.functional``.
"""

from __future__ import annotations

import math

import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

SCALE = (0.05, 1.0)
RATIO = (3.0 / 4.0, 4.0 / 3.0)
FLIP_P = 0.5


def _uniform(low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    """One float32 sample uniform in [low, high)."""
    return torch.empty(1).uniform_(low, high, generator=generator)


def _randint(high: int, generator: torch.Generator) -> int:
    """An integer uniform in [0, high)."""
    return int(torch.randint(0, high, (1,), generator=generator))


def random_resized_crop_params(
    width: int,
    height: int,
    generator: torch.Generator,
    scale: tuple[float, float] = SCALE,
    ratio: tuple[float, float] = RATIO,
) -> tuple[int, int, int, int]:
    """Crop box ``(top, left, h, w)`` drawn like ``RandomResizedCrop.get_params``.

    Ten tries of (area fraction ~ U(scale), log aspect ratio ~ U(log ratio)); if none fits
    the image, a center crop clamped to the ratio range. The arithmetic (float32 draws and
    log/exp) mirrors torchvision's, so equal RNG states give equal boxes.
    """
    area = width * height
    log_lo, log_hi = (float(v) for v in torch.log(torch.tensor(ratio)))
    for _ in range(10):
        target_area = area * _uniform(scale[0], scale[1], generator).item()
        aspect = torch.exp(_uniform(log_lo, log_hi, generator)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(height - h + 1, generator)
            left = _randint(width - w + 1, generator)
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class TrainTransform:
    """Random resized crop + horizontal flip + ToTensor, driven by an explicit generator."""

    def __init__(self, image_size: int):
        self.image_size = int(image_size)

    def __call__(self, img: Image.Image, generator: torch.Generator) -> torch.Tensor:
        width, height = img.size
        top, left, h, w = random_resized_crop_params(width, height, generator)
        img = TF.resized_crop(
            img, top, left, h, w, [self.image_size, self.image_size],
            interpolation=InterpolationMode.BILINEAR,
        )
        if float(torch.rand(1, generator=generator)) < FLIP_P:
            img = TF.hflip(img)
        return TF.to_tensor(img)


class TestTransform:
    """Resize shorter side to round(size * 256 / 224) (bicubic), center-crop size, ToTensor."""

    __test__ = False  # not a pytest test class despite the name

    def __init__(self, image_size: int):
        self.image_size = int(image_size)
        self.resize_to = int(round(self.image_size * 256 / 224))

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = TF.resize(img, self.resize_to, interpolation=InterpolationMode.BICUBIC)
        img = TF.center_crop(img, [self.image_size, self.image_size])
        return TF.to_tensor(img)
