"""Deterministic recipe for the embedded tiny ViT's weights (``weights/tiny_vit.pt``).

    python -m zeroflow.models.pretrain_tiny --out zeroflow/models/weights/tiny_vit.pt

Pre-training data are formula-driven synthetic "glyphs", disjoint from every benchmark image:
each of ``NUM_CLASSES`` classes is a fixed random set of 1-3 strokes (cubic Bézier curves and
elliptic arcs) drawn once from a seeded generator; a sample re-draws its class's strokes with
jittered parameters, a random affine map, stroke width, blur and ink level, and (with probability
``LOWRES_P``) an 8×8 average-pool + bilinear upsampling round trip, then Gaussian noise. From
its CLS feature the ViT learns to classify the glyph class (cross-entropy) and to reconstruct its
input at 8×8 (MSE; a dense signal that makes a from-scratch ViT learn within minutes and keeps
the ink layout in the CLS token). Only the bare ViT is kept. Everything is CPU, float32, seeded
private generators (model init forks the global RNG), fixed hyper-parameters; about 1.5 minutes
on 2 idle cores.

``digits_prototype_accuracy`` measures transfer to the embedded benchmark (scikit-learn digits):
nearest-class-mean top-1 with cosine similarity on frozen CLS features.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from zeroflow.models.backbone import TINY_VIT_CONFIG, TINY_WEIGHTS, build_tiny_vit
from zeroflow.models.glyphs import IMAGE_SIZE, glyph_batch, make_glyph_bank

# ---- fixed recipe (changing any of these, or glyphs.py's, changes the shipped weights) -------
SEED = 0
NUM_CLASSES = 128
STEPS = 1500
BATCH = 128
LR = 3e-3
WEIGHT_DECAY = 0.05
WARMUP = 150
LABEL_SMOOTHING = 0.1
RECON_SIZE = 8
RECON_WEIGHT = 20.0
EVAL_SAMPLES = 4096


# ---- transfer measurement --------------------------------------------------------------------
def load_digits_images(size: int = IMAGE_SIZE) -> tuple[torch.Tensor, np.ndarray]:
    """scikit-learn digits as the benchmark sees them: /16, bilinear to ``size``, 3 channels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return x.expand(-1, 3, -1, -1).contiguous(), digits.target


def _image_size(model: nn.Module) -> int:
    size = getattr(model, "image_size", None)  # an AdaptedViT
    return int(size) if size is not None else int(model.patch_embed.img_size[0])


@torch.no_grad()
def _cls_features(model: nn.Module, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        if hasattr(model, "features"):
            out.append(model.features(xb, None))
        else:  # a bare timm VisionTransformer
            out.append(model.forward_head(model.forward_features(xb), pre_logits=True))
    model.train(was_training)
    return torch.cat(out).float()


def digits_prototype_accuracy(model: nn.Module) -> float:
    """Nearest-class-mean top-1 accuracy (cosine) on digits' stratified 25 % test split.

    Prototypes are mean CLS features per class of the 75 % train split
    (``train_test_split(test_size=0.25, stratify=y, random_state=0)``). ``model`` is an
    ``AdaptedViT`` (plain pre-trained features) or a timm ``VisionTransformer``.
    """
    from sklearn.model_selection import train_test_split

    x, y = load_digits_images(_image_size(model))
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.25, stratify=y, random_state=0)
    feats = _cls_features(model, x)
    ytr = torch.from_numpy(y[tr])
    protos = torch.stack([feats[tr][ytr == c].mean(0) for c in range(10)])
    sims = F.normalize(feats[te], dim=1) @ F.normalize(protos, dim=1).T
    return float((sims.argmax(1).numpy() == y[te]).mean())


# ---- training --------------------------------------------------------------------------------
def _lr(step: int, steps: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    return LR * 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / max(1, steps - WARMUP)))


class GlyphNet(nn.Module):
    """Tiny ViT + two heads on the CLS feature: glyph-class logits and a linear decoder of the
    input at ``RECON_SIZE``² (the dense reconstruction signal speeds up learning from scratch
    and makes the CLS token keep the ink layout)."""

    def __init__(self, num_classes: int, seed: int):
        super().__init__()
        self.vit = build_tiny_vit(num_classes=0, seed=seed)
        dim = self.vit.embed_dim
        g = torch.Generator().manual_seed(seed + 10)
        self.cls_head = nn.Linear(dim, num_classes)
        self.recon_head = nn.Linear(dim, RECON_SIZE * RECON_SIZE)
        with torch.no_grad():
            for head in (self.cls_head, self.recon_head):
                head.weight.copy_(torch.randn(head.weight.shape, generator=g) * dim**-0.5)
                head.bias.zero_()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.vit(x)
        return self.cls_head(f), self.recon_head(f)


@torch.no_grad()
def synthetic_accuracy(model: GlyphNet, bank: dict, samples: int = EVAL_SAMPLES) -> float:
    """Top-1 on freshly rendered held-out glyphs (own seed, never seen in training)."""
    g = torch.Generator().manual_seed(SEED + 2)
    model.eval()
    correct = 0
    for _ in range(samples // 512):
        x, y = glyph_batch(bank, 512, g)
        correct += int((model(x)[0].argmax(1) == y).sum())
    model.train()
    return correct / (samples // 512 * 512)


def pretrain(steps: int = STEPS, log_every: int = 100) -> tuple[nn.Module, float]:
    """Train the tiny ViT on glyph classification + CLS reconstruction; returns the bare
    ``VisionTransformer`` (no head) and its held-out synthetic-task accuracy."""
    bank = make_glyph_bank(NUM_CLASSES, torch.Generator().manual_seed(SEED))
    data_g = torch.Generator().manual_seed(SEED + 1)
    model = GlyphNet(NUM_CLASSES, SEED)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1 or "pos_embed" in n]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": WEIGHT_DECAY},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=LR,
    )
    model.train()
    t0 = time.time()
    run_loss = run_acc = 0.0
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps)
        x, y = glyph_batch(bank, BATCH, data_g)
        logits, recon = model(x)
        target = F.adaptive_avg_pool2d(x[:, :1], RECON_SIZE).flatten(1)
        loss = F.cross_entropy(logits, y, label_smoothing=LABEL_SMOOTHING)
        loss = loss + RECON_WEIGHT * F.mse_loss(recon, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        run_loss += float(loss.detach())
        run_acc += float((logits.argmax(1) == y).float().mean())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = (step % log_every) + 1
            print(
                f"step {step + 1:5d}/{steps}  loss {run_loss / n:.3f}  "
                f"train-acc {run_acc / n:.3f}  lr {_lr(step, steps):.2e}  "
                f"{time.time() - t0:6.1f}s",
                flush=True,
            )
            run_loss = run_acc = 0.0
    return model.vit.eval(), synthetic_accuracy(model, bank)


def save_weights(model: nn.Module, out: Path, meta: dict) -> None:
    """The bare ViT's weights in float16, with the architecture and recipe metadata."""
    state = {k: v.detach().to(torch.float16).clone() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": dict(TINY_VIT_CONFIG), "state_dict": state, "meta": meta}, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TINY_WEIGHTS)
    parser.add_argument("--steps", type=int, default=STEPS, help="only for smoke runs")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    model, syn_acc = pretrain(args.steps)
    minutes = (time.time() - t0) / 60
    print(f"synthetic-task accuracy (held-out glyphs, {NUM_CLASSES} classes): {syn_acc:.4f}")
    pre = digits_prototype_accuracy(model)
    rnd = digits_prototype_accuracy(build_tiny_vit(seed=SEED))
    print(f"digits prototype accuracy: pretrained {pre:.4f}  random-init {rnd:.4f}")
    save_weights(model, args.out, {
        "steps": args.steps, "synthetic_accuracy": syn_acc, "digits_prototype_accuracy": pre,
        "random_init_digits_prototype_accuracy": rnd, "train_minutes": round(minutes, 2),
    })
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) after {minutes:.1f} min")


if __name__ == "__main__":
    main()
