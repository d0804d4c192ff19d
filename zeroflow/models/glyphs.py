"""The synthetic "glyphs" the embedded tiny ViT is pre-trained on (``pretrain_tiny``):
formula-driven images disjoint from every benchmark. Each class is a fixed random set of 1-3
strokes (cubic Bézier curves and elliptic arcs); a sample re-draws its class's strokes with
jittered parameters, a random affine map, stroke width, blur and ink level, sometimes an 8×8
round trip, then noise. All from seeded private generators; the constants are part of the fixed
recipe (changing any of them changes the shipped weights)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_STROKES = 3
POINTS_PER_STROKE = 96
IMAGE_SIZE = 16  # the ViT input (TINY_VIT_CONFIG img_size)
RENDER_SIZE = 32  # glyphs are drawn at 32² and area-averaged down to IMAGE_SIZE²
LOWRES_P = 0.6
BLUR_SIGMA = (0.6, 1.3)  # Gaussian blur of the 1-px stroke coverage, in pixels
INK_GAIN = (1.2, 2.4)  # stroke width: blurred coverage × gain × √(2π)σ, clipped at 1
GLYPH_SCALE = ((0.7, 1.1), (0.8, 1.15))  # (x, y) scale ranges of the random affine map


def _uniform(shape, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=g)


def make_glyph_bank(num_classes: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-class stroke templates: kind (0 Bézier, 1 arc), Bézier control points, arc
    parameters (cx, cy, rx, ry, rotation, start, sweep) and which of the strokes are drawn."""
    K, S = num_classes, MAX_STROKES
    kind = (torch.rand(K, S, generator=g) < 0.4).long()
    ctrl = _uniform((K, S, 4, 2), -0.8, 0.8, g)
    arc = torch.stack([
        _uniform((K, S), -0.4, 0.4, g),
        _uniform((K, S), -0.4, 0.4, g),
        _uniform((K, S), 0.2, 0.6, g),
        _uniform((K, S), 0.2, 0.6, g),
        _uniform((K, S), 0.0, math.pi, g),
        _uniform((K, S), 0.0, 2 * math.pi, g),
        _uniform((K, S), 0.5 * math.pi, 2 * math.pi, g),
    ], -1)
    strokes = torch.multinomial(torch.tensor([0.3, 0.45, 0.25]), K, True, generator=g) + 1
    active = torch.arange(S)[None] < strokes[:, None]
    return dict(kind=kind, ctrl=ctrl, arc=arc, active=active)


def glyph_points(bank: dict, labels: torch.Tensor, g: torch.Generator) -> tuple:
    """Jittered, affinely transformed stroke polylines [B, S, P, 2] in [-1, 1]² and stroke mask."""
    B = labels.shape[0]
    kind, ctrl, arc, active = (bank[k][labels] for k in ("kind", "ctrl", "arc", "active"))
    t = torch.linspace(0.0, 1.0, POINTS_PER_STROKE)
    ctrl = ctrl + 0.06 * torch.randn(ctrl.shape, generator=g)
    basis = torch.stack([(1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3], -1)
    bezier = torch.einsum("pk,bskd->bspd", basis, ctrl)
    arc = arc + torch.randn(arc.shape, generator=g) * torch.tensor([0.06] * 4 + [0.2] * 3)
    angle = arc[..., 5:6] + arc[..., 6:7] * t
    ex, ey = arc[..., 2:3] * torch.cos(angle), arc[..., 3:4] * torch.sin(angle)
    c, s = torch.cos(arc[..., 4:5]), torch.sin(arc[..., 4:5])
    arcs = torch.stack([arc[..., 0:1] + c * ex - s * ey, arc[..., 1:2] + s * ex + c * ey], -1)
    pts = torch.where(kind[..., None, None] == 1, arcs, bezier)

    rot = _uniform(B, -math.radians(15), math.radians(15), g)
    scale = torch.stack([_uniform(B, *GLYPH_SCALE[0], g), _uniform(B, *GLYPH_SCALE[1], g)], -1)
    shear = _uniform(B, -0.25, 0.25, g)
    shift = _uniform((B, 2), -0.1, 0.1, g)
    cr, sr = torch.cos(rot), torch.sin(rot)
    rotation = torch.stack([torch.stack([cr, -sr], -1), torch.stack([sr, cr], -1)], -2)
    shearing = torch.eye(2).repeat(B, 1, 1)
    shearing[:, 0, 1] = shear
    affine = rotation @ shearing @ torch.diag_embed(scale)
    pts = torch.einsum("bij,bspj->bspi", affine, pts) + shift[:, None, None]
    return pts, active


def render(pts: torch.Tensor, active: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Rasterise polylines: bilinear point splat → coverage → per-image Gaussian blur → ink."""
    size = RENDER_SIZE
    B, S, P, _ = pts.shape
    uv = ((pts + 1) / 2 * size - 0.5).reshape(B, S * P, 2)
    on = active[:, :, None].expand(B, S, P).reshape(B, S * P)
    i0 = uv.floor()
    frac = uv - i0
    i0 = i0.long()
    canvas = torch.zeros(B * size * size)
    base = torch.arange(B)[:, None] * size * size
    for dx in (0, 1):
        for dy in (0, 1):
            x, y = i0[..., 0] + dx, i0[..., 1] + dy
            wx = frac[..., 0] if dx else 1 - frac[..., 0]
            wy = frac[..., 1] if dy else 1 - frac[..., 1]
            w = wx * wy
            ok = on & (x >= 0) & (x < size) & (y >= 0) & (y < size)
            canvas.index_add_(0, (base + y * size + x)[ok], w[ok])
    coverage = canvas.view(1, B, size, size).clamp(max=1.0)
    sigma = _uniform(B, *BLUR_SIGMA, g)
    r = torch.arange(-4, 5, dtype=torch.float32)
    kernel = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None] ** 2))
    kernel = kernel / kernel.sum(-1, keepdim=True)
    img = F.conv2d(coverage, kernel.view(B, 1, 1, 9), padding=(0, 4), groups=B)
    img = F.conv2d(img, kernel.view(B, 1, 9, 1), padding=(4, 0), groups=B).view(B, 1, size, size)
    gain = _uniform(B, *INK_GAIN, g) * math.sqrt(2 * math.pi) * sigma
    img = (img * gain.view(B, 1, 1, 1)).clamp(max=1.0) * _uniform((B, 1, 1, 1), 0.75, 1.0, g)
    low = torch.rand(B, generator=g) < LOWRES_P
    if low.any():
        small = F.adaptive_avg_pool2d(img[low], 8)
        img[low] = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
    img = F.adaptive_avg_pool2d(img, IMAGE_SIZE)
    size = IMAGE_SIZE
    img = (img + 0.02 * torch.randn(img.shape, generator=g)).clamp(0.0, 1.0)
    return img.expand(B, 3, size, size).contiguous()


def glyph_batch(bank: dict, batch: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of (images [B, 3, IMAGE_SIZE, IMAGE_SIZE] in [0, 1], labels [B])."""
    labels = torch.randint(0, bank["kind"].shape[0], (batch,), generator=g)
    return render(*glyph_points(bank, labels, g), g), labels
