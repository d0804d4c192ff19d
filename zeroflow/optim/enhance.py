"""Two forms each of the paper's sparsity and historical-smoothing enhancements.

Where the paper's text and its authors' code (THUDM/INFTY, ``src/infty/optim/gradient_bans/
zeroflow.py``) differ, both are options (docs/optimizers.md, "Enhancements: both forms"):

Sparsity (``sparsity_mask``), s in (0, 1):

* ``exact``: exactly floor(s · n) coordinates of a block are zeroed (a seeded permutation).
* ``infty``: a coordinate is zeroed where a seeded N(0, 1) draw is below s, so the expected
  zeroed fraction is Φ(s) (54–82 % for s = 0.1–0.9), not s.

Which draws name the mask (``sparsity_resample`` of the sampler): a new one with every
direction, or one per optimizer (``mask_seed``: per task in a trial, or one for the whole trial).

Historical smoothing (``history_mode``), α in (0, 1):

* ``estimate``: the whole estimate is averaged, ĝ <- (1 - α) ĝ + α ĝ_prev (in ``zo.py``).
* ``direction``: the directions are averaged, one query at a time: h <- α h + (1 - α) z_i
  (h starts as the first z), and the estimate is (1/q) Σ_i c_i h_i with h_i the average after
  query i. The average h lives in the optimizer state (``state_dict`` carries it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

HISTORY_MODES = ("estimate", "direction")
SPARSITY_MASKS = ("exact", "infty")


def mask_(z: torch.Tensor, sparsity: float, form: str, generator: torch.Generator) -> None:
    """In place: zero the coordinates of ``z`` the mask of ``form`` drawn by ``generator``
    names (``exact``: floor(s · n) of them; ``infty``: where N(0, 1) < s)."""
    if form == "exact":
        n = z.numel()
        idx = torch.randperm(n, generator=generator, device=z.device)[:int(sparsity * n)]
        z.view(-1)[idx] = 0.0
    else:
        draw = torch.empty(z.shape, dtype=torch.float32, device=z.device)
        z.masked_fill_(draw.normal_(generator=generator) < sparsity, 0.0)


def direction_history(sampler, seeds: Sequence[int], coeffs: Sequence[float], k: int,
                      like: torch.Tensor, history: torch.Tensor | None,
                      alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_i coeffs[i] h_i, h after the last query) for the k-th tensor, where
    h_i = α h_{i-1} + (1 - α) z_i and h_0 = ``history`` (None: the first z itself). The stored
    ``history`` is never changed in place (a Conserve candidate may be discarded)."""
    acc = torch.promote_types(like.dtype, torch.float32)
    out = torch.zeros_like(like, dtype=acc)
    h = None if history is None else history.to(acc).clone()
    for seed, c in zip(seeds, coeffs):
        z = sampler.block(seed, k, out)
        if h is None:
            h = z.clone()
        else:
            h.mul_(alpha).add_(z, alpha=1 - alpha)
        out.add_(h, alpha=float(c))
    return out.to(like.dtype), h
