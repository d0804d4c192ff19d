"""Seeded perturbation directions: regenerated on demand (MeZO's trick) or drawn once per step.

A direction is named by one integer, its *direction seed* (derived from the optimizer's seed,
its step counter and the query index). Its block for the k-th trainable tensor is drawn by a
private ``torch.Generator`` seeded from (direction seed, k), so each block can be regenerated on
its own: perturbing, restoring and updating need O(largest parameter) scratch memory and nothing
of parameter size. The same seeds give the same directions on any process, which is what lets
query actors exchange seeds and scalars only.

``DirectionBuffer`` is the other regime (``direction_buffer="on"``): each direction is drawn
once into one buffer and reused for θ + mu z, θ - mu z and the update, whose estimate
sum_i c_i z_i is accumulated as the scalars arrive. It holds one direction and one estimate of
the trainable tensors' size, whatever q (at q = 1 the direction becomes the estimate: one), and
its numbers equal the regenerated ones bit for bit (the same draws, the same float operations
in the same order; the first term is c z where the regenerated sum computes 0 + c z, which
differs only in the sign of zeros). Its storage is allocated once and redrawn in place every
step: a fresh buffer of the trainable tensors' size each step costs, on CPU, the allocation
and the first touch of every page (tens of ms for 88 MB), and the freed memory then makes the
forward passes fault their activations in again.

Blocks are independent streams (one generator per block), so a whole direction is drawn by up
to ``torch.get_num_threads()`` threads at once on CPU (``DirectionSampler.fill``): the same
numbers in any order, and the draw (one serial generator per block) is most of a fast step's
own work.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from zeroflow.optim.enhance import SPARSITY_MASKS, mask_
from zeroflow.seeding import derive_seed

PERTURBATIONS = ("gaussian", "rademacher")
_MASK_STREAM = 0x6D61736B  # keeps sparsity masks independent of the direction values
PARALLEL_MIN_NUMEL = 1 << 20  # draw a direction in threads from this many values on (CPU)


class DirectionSampler:
    """Draws the blocks of seeded directions z for a fixed list of tensors.

    perturbation: ``gaussian`` (z ~ N(0, I)) or ``rademacher`` (z uniform on {-1, +1}).
    sparsity: s in [0, 1); 0 is off. Each block is masked by a seeded mask (paper Enhancement
        3; ``zeroflow.optim.enhance``). No rescaling: the estimate targets the kept coordinates.
    sparsity_mask: ``exact`` (floor(s · numel) zeroed) or ``infty`` (zeroed where a seeded
        N(0, 1) < s: a fraction Φ(s), the authors' code).
    sparsity_resample: draw a new mask for every direction (default), or keep one mask per
        tensor for the sampler's life, drawn from ``mask_seed`` (None: ``seed``).
    """

    def __init__(
        self,
        perturbation: str = "gaussian",
        sparsity: float = 0.0,
        sparsity_resample: bool = True,
        seed: int = 0,
        sparsity_mask: str = "exact",
        mask_seed: int | None = None,
    ):
        if perturbation not in PERTURBATIONS:
            raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {perturbation!r}")
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        if sparsity_mask not in SPARSITY_MASKS:
            raise ValueError(f"sparsity_mask must be one of {SPARSITY_MASKS}, "
                             f"got {sparsity_mask!r}")
        self.perturbation = perturbation
        self.sparsity = float(sparsity)
        self.sparsity_resample = bool(sparsity_resample)
        self.sparsity_mask = sparsity_mask
        self.seed = int(seed)
        self.mask_seed = None if mask_seed is None else int(mask_seed)
        self._local = threading.local()  # generators per thread (``fill`` draws in threads)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        del state["_local"]  # generators are re-made on first use
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _generator(self, device: torch.device, seed: int) -> torch.Generator:
        generators = getattr(self._local, "generators", None)
        if generators is None:
            generators = self._local.generators = {}
        gen = generators.get(device)
        if gen is None:
            gen = generators[device] = torch.Generator(device=device)
        gen.manual_seed(seed)
        return gen

    def block(self, direction_seed: int, k: int, like: torch.Tensor,
              dtype: torch.dtype | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """The k-th block of direction ``direction_seed``, shaped like ``like`` and typed like
        it (or ``dtype``); the draw is fp32 whatever the type, so every type sees the same z.
        ``out``: draw into this fp32 tensor shaped like ``like`` (the same numbers as a fresh
        draw: ``randn`` is ``empty`` then ``normal_``, ``randint`` is ``random_``) and return it."""
        gen = self._generator(like.device, derive_seed(direction_seed, k))
        z = out if out is not None else torch.empty(like.shape, device=like.device,
                                                    dtype=torch.float32)
        if self.perturbation == "gaussian":
            z.normal_(generator=gen)
        else:
            z.random_(0, 2, generator=gen).mul_(2).sub_(1)
        if self.sparsity > 0:
            base = direction_seed if self.sparsity_resample else (
                self.seed if self.mask_seed is None else self.mask_seed)
            gen = self._generator(like.device, derive_seed(base, k, _MASK_STREAM))
            mask_(z, self.sparsity, self.sparsity_mask, gen)
        return z.to(like.dtype if dtype is None else dtype)

    def fill(self, direction_seed: int, outs: Sequence[torch.Tensor]) -> None:
        """outs[k] <- block k of direction ``direction_seed``, in place, for every k (each out
        shaped like its tensor, in its accumulation type). On CPU a large direction is drawn by
        up to ``torch.get_num_threads()`` threads, the blocks split by size."""

        def draw(k: int) -> None:
            out = outs[k]
            if out.dtype == torch.float32:
                self.block(direction_seed, k, out, out=out)
            else:  # fp64 tensors: the fp32 draw, widened (what ``block`` returns for them)
                out.copy_(self.block(direction_seed, k, out))

        parallel_map(draw, [o.numel() for o in outs], all(o.device.type == "cpu" for o in outs))

    def combine(
        self, direction_seeds: Sequence[int], coeffs: Sequence[float], k: int, like: torch.Tensor,
        restore: tuple[int, float, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """sum_i coeffs[i] * z_i for the k-th block: the gradient estimate of one tensor.

        restore=(seed, scale, p): also p += scale * z_seed with the same draw (the lean step
        folds the restore of its last perturbation into the update's regeneration: the float
        operations on p are those of ``perturb_`` then the update, one draw fewer)."""
        out = torch.zeros_like(like, dtype=accumulation_dtype(like))
        for seed, c in zip(direction_seeds, coeffs):
            z = self.block(seed, k, out)
            if restore is not None and seed == restore[0]:
                restore[2].add_(z.to(restore[2].dtype), alpha=restore[1])
            out.add_(z, alpha=float(c))
        return out.to(like.dtype)


def accumulation_dtype(like: torch.Tensor) -> torch.dtype:
    """Estimates accumulate in at least fp32 (fp16/bf16 would lose the sum's low bits)."""
    return torch.promote_types(like.dtype, torch.float32)


_POOL: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, executor)
_POOL_LOCK = threading.Lock()


def _executor(workers: int) -> ThreadPoolExecutor:
    """The draw threads, made on first use in this process (re-made after a fork)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid() or _POOL[1] < workers:
            if _POOL is not None and _POOL[0] == os.getpid():
                _POOL[2].shutdown(wait=False)  # a larger one replaces it
            _POOL = (os.getpid(), workers,
                     ThreadPoolExecutor(workers, thread_name_prefix="zeroflow-draw"))
        return _POOL[2]


def parallel_map(fn: Callable[[int], None], sizes: Sequence[int], cpu: bool = True) -> None:
    """fn(k) for every k, in this thread or, on CPU when the sizes add up to at least
    ``PARALLEL_MIN_NUMEL``, split into ``torch.get_num_threads()`` groups of about equal total
    size (largest first) that run at once, this thread running one. Raises the first error
    after every group has finished."""
    threads = min(torch.get_num_threads(), len(sizes))
    if not cpu or threads < 2 or sum(sizes) < PARALLEL_MIN_NUMEL:
        for k in range(len(sizes)):
            fn(k)
        return
    groups: list[list[int]] = [[] for _ in range(threads)]
    loads = [0] * threads
    for k in sorted(range(len(sizes)), key=lambda k: -sizes[k]):
        g = loads.index(min(loads))
        groups[g].append(k)
        loads[g] += sizes[k]

    def run(group: list[int]) -> None:
        for k in group:
            fn(k)

    futures = [_executor(threads - 1).submit(run, group) for group in groups[1:]]
    try:
        run(groups[0])
    finally:
        for future in futures:
            future.exception()  # wait for every group before anything is raised or reused
    for future in futures:
        future.result()


class DirectionBuffer:
    """One direction of every tensor, drawn once from its seed and reused (the fast regime).

    ``select(seed)`` draws direction ``seed`` in place over the previous one; ``perturb(scale)``
    is ``perturb_`` with the drawn blocks; ``accumulate(c)`` adds c * z to the estimate, which
    ``estimate()`` hands to the update. Blocks are kept in the accumulation type, so the
    estimate is ``combine``'s bit for bit. The storage (one set of the tensors' size; a second
    from the second direction of a step on) is kept for the next step, which starts with
    ``reset()``: the estimate handed out is overwritten by the next step's draw.
    """

    def __init__(self, sampler: DirectionSampler, params: Sequence[torch.Tensor]):
        self.sampler, self.params = sampler, list(params)
        self._sets: list[list[torch.Tensor]] = []  # the first direction / estimate, the others
        self.reset()

    def reset(self) -> None:
        """Begin a step: no direction drawn, no estimate (the storage is kept)."""
        self.blocks: list[torch.Tensor] | None = None
        self.sums: list[torch.Tensor] | None = None
        self.seeds: list[int] = []

    def _set(self, i: int) -> list[torch.Tensor]:
        while len(self._sets) <= i:
            self._sets.append([torch.empty_like(p, dtype=accumulation_dtype(p))
                               for p in self.params])
        return self._sets[i]

    def select(self, direction_seed: int) -> None:
        blocks = self._set(0 if self.sums is None else 1)  # never over the estimate
        self.blocks = None
        self.sampler.fill(direction_seed, blocks)
        self.blocks = blocks
        self.seeds.append(direction_seed)

    def free_direction(self) -> None:
        """Free the storage of the drawn directions, keeping the estimate (a buffer that is
        not kept for the next step, before the update)."""
        self.blocks = None
        del self._sets[1:]
        if self.sums is None:
            self._sets.clear()

    def tangents(self) -> list[torch.Tensor]:
        """The drawn blocks in each tensor's own type (Forward-Grad's tangents)."""
        return [z.to(p.dtype) for z, p in zip(self.blocks, self.params)]

    def perturb(self, scale: float) -> None:
        for p, z in zip(self.params, self.blocks):
            p.add_(z.to(p.dtype), alpha=scale)

    def write(self, sources, outs, scale: float) -> None:
        """outs[k] = sources[k] + scale * z_k (the exact restore's swapped-in tensors)."""
        for src, out, z in zip(sources, outs, self.blocks):
            torch.add(src, z.to(src.dtype), alpha=scale, out=out)

    def accumulate(self, coeff: float) -> None:
        """Add coeff * z (the drawn direction, no longer needed after this) to the estimate.
        The first direction becomes the estimate in place (c * z: what 0 + c * z rounds to,
        up to the sign of zeros), so q = 1 holds one buffer and skips a pass."""
        if self.sums is None:
            self.sums = [z.mul_(float(coeff)) for z in self.blocks]
            self.blocks = None
            return
        for s, z in zip(self.sums, self.blocks):
            s.add_(z, alpha=float(coeff))

    def estimate(self, direction_seeds: Sequence[int]) -> list[torch.Tensor] | None:
        """The accumulated sum_i c_i z_i if it is that of exactly ``direction_seeds``."""
        if self.sums is None or list(direction_seeds) != self.seeds:
            return None
        return self.sums


def perturb_(
    params: Iterable[torch.Tensor], sampler: DirectionSampler, direction_seed: int, scale: float
) -> None:
    """In place: p += scale * z for every tensor, z regenerated block by block."""
    for k, p in enumerate(params):
        p.add_(sampler.block(direction_seed, k, p), alpha=scale)
