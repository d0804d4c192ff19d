"""Forward-pass optimizers: a gradient estimate (SPSA or Forward-Grad) fed to SGD or Adam.

One class covers the seven forward-pass optimizers of the ZeroFlow benchmark; the registry in
``zeroflow.optim`` fixes the options that make each named variant. A step has two halves that
can run apart (query workers run the first, every replica runs the second):

* ``evaluate(closure, seeds) -> Estimate``: the projected-gradient scalars of the directions;
* ``apply(estimate, closure=None, decision=None)``: the update from (seed, scalar) pairs; it
  returns Conserve's decision, which replicas are given instead of a closure.

``step(closure)`` is the two back to back and returns the loss. The closure is zero-argument,
returns a scalar loss tensor, and is called under ``torch.no_grad()`` (forward-grad: under
forward-mode AD); it must not call backward.

Update of a tensor θ_k from the estimate ĝ_k (one pass over the tensors; seed-only, scratch
memory is O(largest tensor) and nothing parameter-sized is held beyond the rule's own state; the
fast regime reads ĝ from its estimate buffer instead, see "Step regimes" below):

1. ĝ_k = (1/q) sum_i c_i z_ik, with c_i the scalar, or sign(c_i) for ``sign="projected"``
   (the paper's code: sign of each projected scalar times its direction);
2. ``history`` α: ĝ_k <- (1 - α) ĝ_k + α ĝ_k(prev step) (paper Enhancement 2; stored state);
   ``history_mode="direction"`` averages the directions instead (``zeroflow.optim.enhance``);
3. ``sign="elementwise"``: ĝ_k <- sign(ĝ_k) per coordinate (ZO-signSGD), after smoothing;
4. weight decay as torch's L2 form: ĝ_k += weight_decay θ_k;
5. the rule: SGD with momentum (torch.optim.SGD's formula: buf = m·buf + ĝ, first step buf = ĝ)
   or Adam (torch.optim.Adam's formula with bias correction); θ_k <- θ_k - lr u_k.

Conserve (``conserve=True``): with the proposed update u, evaluate f(θ - lr u) and f(θ + lr u)
and keep the best of {θ, θ - lr u, θ + lr u} (ties keep the earlier). The rule's state advances
once, for the kept candidate only: θ - lr u commits the new state; θ + lr u commits it with the
first moment negated (momentum buffer / Adam's m, and the history estimate), which is exactly
the state whose update is -u; keeping θ leaves the rule's state untouched. Conserve always keeps
one copy of the trainable tensors during its step (whatever ``exact_restore`` says), so that
every candidate is computed from the exact θ. f(θ) comes from the estimate when it was
evaluated (forward differences, forward-grad), else costs one pass: central q = 1 costs 5 passes.

Determinism: direction i of step t has seed derive_seed(seed, t, i); everything random is drawn
by private generators from such seeds, and the step counter travels in ``state_dict()``.

Step regimes (``direction_buffer``), equal in their numbers for the same seeds:

* ``"off"`` (seed-only): every use of z regenerates it from its seed, so nothing of parameter
  size is held beyond the rule's state (and, with ``exact_restore=True``, the restore copy).
  With ``exact_restore=False`` this is the lean regime: no copy, and ``step`` folds the restore
  of the last perturbation into the update's draw of that direction (``combine(restore=...)``),
  so a central q = 1 step draws z three times (θ + mu z, θ - mu z, restore + update), not four.
  The fold keeps the float operations on θ of restore-then-update, so it is valid for every rule
  (momentum, Adam, weight decay, history, both signs) and equals the evaluate + apply halves bit
  for bit; only Conserve, which compares candidates from the exact θ, restores first. Its one
  difference from the exact regime is the subtractive restore's drift (``zeroflow.optim.spsa``).
* ``"on"`` (fast): each direction is drawn once per step into one buffer, reused for θ ± mu z
  and accumulated into an estimate buffer as its scalar arrives (``DirectionBuffer``): memory is
  one direction + one estimate whatever q, one draw per direction. Bit for bit the seed-only
  numbers, with either restore. ``evaluate`` alone (query workers) uses the buffer for θ ± mu z;
  ``apply`` of pairs from elsewhere regenerates.

On CPU the direction buffer and the exact restore's swapped-in set are allocated once and
reused by every step (held between steps: ``keeps_buffers``), which keeps a step from paying
to allocate and first-touch them anew (and its forwards from faulting their activations in
again after the free); on CUDA they are freed after each step, as the caching allocator makes
new ones cheap.
* ``"auto"`` (default): fast when the trainable tensors are under ``AUTO_SHARE`` (10 %) of the
  model's parameters (``model_numel``, when the caller gives it), else lean; without
  ``model_numel``, fast when they hold at most ``AUTO_MAX_NUMEL`` values (the two buffers then
  cost at most 32 MB in fp32: adapters and heads), else lean.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from zeroflow.optim.enhance import HISTORY_MODES, direction_history
from zeroflow.optim.forward_grad import jvp_evaluate
from zeroflow.optim.perturb import DirectionBuffer, DirectionSampler, perturb_
from zeroflow.optim.spsa import DIFFERENCES, Estimate, Restorer, spsa_evaluate, work_set
from zeroflow.seeding import derive_seed

RULES = ("sgd", "adam")
SIGNS = (None, "projected", "elementwise")
ESTIMATORS = ("spsa", "jvp")
_COUNTERS = "zeroflow"  # non-parameter key of ``self.state``: travels in state_dict()
DIRECTION_BUFFERS = ("auto", "on", "off")
AUTO_SHARE = 0.10  # auto: fast below this share of the model's parameters
AUTO_MAX_NUMEL = 4_000_000  # auto without model_numel: fast up to this many trainable values


def resolve_direction_buffer(mode: str, trainable_numel: int, model_numel: int | None) -> bool:
    """Whether a step buffers its directions (the fast regime); see the module docstring."""
    if mode != "auto":
        return mode == "on"
    if model_numel:
        return trainable_numel < AUTO_SHARE * model_numel
    return trainable_numel <= AUTO_MAX_NUMEL


def step_loss(estimate: Estimate) -> torch.Tensor:
    """What ``step`` returns for an estimate: its loss, or NaN when a scalar is not finite (a
    skipped step must not look like progress)."""
    if not all(math.isfinite(c) for c in estimate.scalars):
        return torch.tensor(float("nan"))
    return torch.tensor(estimate.loss)


class CountingOptimizer:
    """Mixin: a forward-pass counter and a step counter kept in ``state`` so they round-trip."""

    def _counters(self) -> dict:
        return self.state.setdefault(_COUNTERS, {"forward_passes": 0, "step": 0})

    @property
    def forward_passes(self) -> int:
        """Closure evaluations so far (one jvp counts one)."""
        return self._counters()["forward_passes"]

    def load_state_dict(self, state_dict: dict) -> None:
        """torch's load, with the counters copied (torch would share the saved dict)."""
        super().load_state_dict(state_dict)
        self.state[_COUNTERS] = dict(state_dict["state"].get(_COUNTERS, self._counters()))

    def count_passes(self, n: int) -> None:
        """Add ``n`` forward passes made elsewhere (by query workers) for this optimizer."""
        self._counters()["forward_passes"] += int(n)

    def _counted(self, closure: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        counters = self._counters()

        def counted():
            counters["forward_passes"] += 1
            return closure()

        return counted


class ZeroOrderOptimizer(CountingOptimizer, torch.optim.Optimizer):
    """A forward-pass optimizer (see the module docstring for the exact math).

    lr: learning rate (param groups may differ; LR schedulers work as with any torch optimizer).
    mu: perturbation scale of SPSA. q: directions per step. seed: the seed of every direction.
    estimator: ``spsa`` or ``jvp`` (Forward-Grad). difference: ``central`` (2q passes) or
        ``forward`` (q + 1 passes: one f(θ) shared by the q queries).
    perturbation: ``gaussian`` or ``rademacher``. rule: ``sgd`` (momentum, weight_decay) or
        ``adam`` (betas, eps, weight_decay). sign: None, ``projected`` or ``elementwise``.
    conserve: keep the best of three candidates. history: α in [0, 1); history_mode:
        ``estimate`` or ``direction`` (``zeroflow.optim.enhance``). sparsity: s in [0, 1),
        sparsity_mask, sparsity_resample, mask_seed: see ``DirectionSampler``.
        exact_restore: see ``zeroflow.optim.spsa``.
    direction_buffer: ``auto``, ``on`` or ``off`` (the step regime, module docstring);
        model_numel: the whole model's parameter count, for ``auto``'s share rule.
    """

    uses_backward = False

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        *,
        mu: float = 1e-3,
        q: int = 1,
        seed: int = 0,
        estimator: str = "spsa",
        difference: str = "central",
        perturbation: str = "gaussian",
        rule: str = "sgd",
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        sign: str | None = None,
        conserve: bool = False,
        history: float = 0.0,
        sparsity: float = 0.0,
        sparsity_resample: bool = True,
        history_mode: str = "estimate",
        sparsity_mask: str = "exact",
        mask_seed: int | None = None,
        exact_restore: bool = True,
        direction_buffer: str = "auto",
        model_numel: int | None = None,
    ):
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not mu > 0.0:
            raise ValueError(f"mu must be > 0, got {mu}")
        if int(q) != q or q < 1:
            raise ValueError(f"q must be a positive integer, got {q}")
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if difference not in DIFFERENCES:
            raise ValueError(f"difference must be one of {DIFFERENCES}, got {difference!r}")
        if rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
        if sign not in SIGNS:
            raise ValueError(f"sign must be one of {SIGNS}, got {sign!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        if not eps > 0.0:
            raise ValueError(f"eps must be > 0, got {eps}")
        if not 0.0 <= history < 1.0:
            raise ValueError(f"history must be in [0, 1), got {history}")
        if history_mode not in HISTORY_MODES:
            raise ValueError(f"history_mode must be one of {HISTORY_MODES}, got {history_mode!r}")
        if direction_buffer not in DIRECTION_BUFFERS:
            raise ValueError(f"direction_buffer must be one of {DIRECTION_BUFFERS}, "
                             f"got {direction_buffer!r}")
        if model_numel is not None and not int(model_numel) >= 1:
            raise ValueError(f"model_numel must be a positive integer, got {model_numel}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        betas=tuple(betas), eps=eps)
        super().__init__(params, defaults)
        self.mu, self.q, self.seed = float(mu), int(q), int(seed)
        self.estimator, self.difference, self.rule = estimator, difference, rule
        self.sign, self.conserve, self.history = sign, bool(conserve), float(history)
        self.exact_restore = bool(exact_restore)
        # direction history regenerates each z in the update: no buffered sums, no folded restore
        self.by_direction = history_mode == "direction" and self.history > 0
        self.sampler = DirectionSampler(perturbation, sparsity, sparsity_resample, seed,
                                        sparsity_mask, mask_seed)
        self._counters()["seed"] = self.seed
        self._counters()["mask_seed"] = self.sampler.mask_seed
        self.direction_buffer = direction_buffer
        self.buffered = resolve_direction_buffer(
            direction_buffer, sum(p.numel() for p in self._params()), model_numel)
        self._buffer: DirectionBuffer | None = None  # kept from step to step, never saved
        self._work: list[torch.Tensor] | None = None

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.seed = self.sampler.seed = int(self._counters().get("seed", self.seed))
        self.sampler.mask_seed = self._counters().get("mask_seed", self.sampler.mask_seed)

    # ----------------------------------------------------------------------------- helpers
    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def direction_seeds(self) -> list[int]:
        """Seeds of this step's q directions: derive_seed(seed, step, i)."""
        step = self._counters()["step"]
        return [derive_seed(self.seed, step, i) for i in range(self.q)]

    @staticmethod
    def keeps_buffers(params: list[torch.Tensor]) -> bool:
        """Whether the step's parameter-sized buffers (direction buffer, swapped-in set) are
        kept from step to step: on CPU, where allocating and first touching them anew costs
        time every step; on CUDA the caching allocator reuses freed memory anyway, so they are
        freed after each step and memory between steps stays the model's."""
        return all(p.device.type == "cpu" for p in params)

    def _direction_buffer(self, params: list[torch.Tensor]) -> DirectionBuffer | None:
        """The fast regime's buffer for a new step (None in the seed-only regimes): kept
        (``self._buffer``) and reused while the trainable tensors stay the same, or a new one."""
        if not self.buffered:
            return None
        if not self.keeps_buffers(params):
            return DirectionBuffer(self.sampler, params)
        buf = self._buffer
        if buf is None or len(buf.params) != len(params) or any(
                a is not b or a.shape != s for a, b, s in zip(buf.params, params, self._shapes)):
            buf = self._buffer = DirectionBuffer(self.sampler, params)
            self._shapes = [p.shape for p in params]
        buf.reset()
        return buf

    def _work_set(self, params: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """The exact restore's swapped-in set, kept from the previous step when it matches
        (None: the evaluation makes its own and frees it)."""
        if not self.exact_restore or self.estimator == "jvp" or not self.keeps_buffers(params):
            return None
        self._work = work_set(params, self._work)
        return self._work

    # ----------------------------------------------------------------------------- halves
    def evaluate(self, closure: Callable[[], torch.Tensor], seeds: list[int]) -> Estimate:
        """The evaluate half: projected-gradient scalars for ``seeds``; θ unchanged."""
        counted = self._counted(closure)
        params = self._params()
        if self.estimator == "jvp":
            return jvp_evaluate(counted, params, self.sampler, seeds)
        return spsa_evaluate(counted, params, self.sampler, seeds, self.mu,
                             self.difference, self.exact_restore,
                             self._direction_buffer(params), work=self._work_set(params))

    def _coefficients(self, scalars: list[float], n: int) -> list[float]:
        """The update's c_i of (1/q) sum_i c_i z_i: the scalar, or its sign (``projected``)."""
        if self.sign == "projected":
            scalars = [math.copysign(1.0, c) if c != 0 else 0.0 for c in scalars]
        return [c / n for c in scalars]

    @torch.no_grad()
    def apply(self, estimate: Estimate, closure: Callable[[], torch.Tensor] | None = None,
              decision: float | None = None) -> float:
        """The apply half: update θ and the rule's state from (seed, scalar) pairs.

        A non-finite scalar leaves θ and the state untouched (the caller sees the NaN loss).
        Conserve compares candidates with the closure, or takes ``decision`` (the kept
        candidate, as a previous ``apply`` of the same estimate returned it: 0 keeps θ, -1 is
        θ - lr u, +1 is θ + lr u) and then needs no closure. Returns the decision (-1 without
        Conserve).
        """
        return self._apply(estimate, closure, decision)

    @torch.no_grad()
    def _apply(self, estimate: Estimate, closure=None, decision: float | None = None,
               blocks: list[torch.Tensor] | None = None) -> float:
        """``apply`` with the step's accumulated estimate ``blocks`` (fast regime) and the
        estimate's pending restore (lean regime) folded into the update."""
        counters = self._counters()
        counters["step"] += 1
        restore = estimate.unrestored
        if restore is not None and (self.conserve or self.by_direction or not all(
                math.isfinite(c) for c in estimate.scalars)):
            perturb_(self._params(), self.sampler, restore[0], restore[1])  # restore first
            restore = None
        if not all(math.isfinite(c) for c in estimate.scalars):
            return 0.0
        coeffs = self._coefficients(estimate.scalars, len(estimate.seeds))
        if not self.conserve:
            self._update(estimate.seeds, coeffs, direction=-1.0, commit=+1, blocks=blocks,
                         restore=restore)
            return -1.0
        if decision is None:
            decision = self._conserve_decision(estimate, coeffs, closure, blocks)
        if decision != 0:
            self._update(estimate.seeds, coeffs, direction=decision, commit=-int(decision),
                         blocks=blocks)
        return decision

    def _conserve_decision(self, estimate: Estimate, coeffs: list[float], closure,
                           blocks: list[torch.Tensor] | None = None) -> float:
        """The best of {θ, θ - lr u, θ + lr u} (ties keep the earlier); θ is left unchanged."""
        if closure is None:
            raise ValueError("conserve needs the closure in apply(estimate, closure)")
        counted = self._counted(closure)
        params = self._params()
        restorer = Restorer(params, exact=True)
        f0 = estimate.f0 if estimate.f0 is not None else float(counted())
        best, best_f = 0.0, f0
        for candidate in (-1.0, +1.0):  # θ - lr u, then θ + lr u
            self._update(estimate.seeds, coeffs, direction=candidate, commit=0, blocks=blocks)
            f = float(counted())
            if f < best_f:
                best, best_f = candidate, f
            restorer.restore(self.sampler, 0, 0.0)
        return best

    def step(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One full step (evaluate then apply); returns the loss estimate as a tensor."""
        if closure is None:
            raise ValueError("forward-pass optimizers need a closure that returns the loss")
        seeds, params = self.direction_seeds(), self._params()
        counted = self._counted(closure)
        buffer = self._direction_buffer(params)
        n = len(seeds)

        def coeff(c: float) -> float:
            return self._coefficients([c], n)[0]

        if self.estimator == "jvp":
            estimate = jvp_evaluate(counted, params, self.sampler, seeds, buffer, coeff)
        else:
            estimate = spsa_evaluate(counted, params, self.sampler, seeds, self.mu,
                                     self.difference, self.exact_restore, buffer, coeff,
                                     leave_last=buffer is None and not (
                                         self.conserve or self.by_direction),
                                     work=self._work_set(params))
        blocks = None
        if buffer is not None:
            blocks = buffer.estimate(seeds)
            if buffer is not self._buffer:
                buffer.free_direction()  # not kept: free the direction before the update
        self._apply(estimate, closure, blocks=blocks)
        return step_loss(estimate)

    # ----------------------------------------------------------------------------- the rule
    def _update(self, seeds: list[int], coeffs: list[float], direction: float, commit: int,
                blocks: list[torch.Tensor] | None = None,
                restore: tuple[int, float] | None = None):
        """θ <- θ + direction · lr · u for every tensor.

        commit: +1 stores the rule's new state, -1 stores it with the first moment negated,
        0 stores nothing (a Conserve candidate being tried). blocks: the estimate sum_i c_i z_i
        already accumulated (else regenerated from the seeds; the same floats); it is the
        direction buffer's storage, so it is used up here but never kept as state. restore:
        (seed, scale), θ += scale z_seed first, drawn with the estimate's own draw of z_seed.
        """
        kept = self._buffer is not None and blocks is self._buffer.sums
        if self.by_direction:
            blocks = None  # the sums of raw directions are not this estimate
        k = 0
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                state = self.state[p]
                if self.by_direction:
                    g, h = direction_history(self.sampler, seeds, coeffs, k, p,
                                             state.get("history_direction"), self.history)
                    if commit:  # the directions' average is the same whichever move is kept
                        state["history_direction"] = h
                elif blocks is not None:  # Conserve updates several times: keep the sums intact;
                    # SGD's first momentum step keeps g as its buffer: never the kept storage
                    keeps = (kept and self.rule == "sgd" and group["momentum"] != 0
                             and "momentum_buffer" not in self.state[p])
                    g = blocks[k].clone() if self.conserve or keeps else blocks[k]
                    g = g.to(p.dtype)
                else:
                    g = self.sampler.combine(seeds, coeffs, k, p, restore=restore and (
                        restore[0], restore[1], p))
                k += 1
                if self.history > 0 and not self.by_direction:
                    prev = state.get("history")
                    if prev is not None:
                        g.mul_(1 - self.history).add_(prev, alpha=self.history)
                    if commit:  # the estimate of the move kept (negated for θ + lr·u)
                        state["history"] = g.clone() if commit > 0 else g.neg()
                if self.sign == "elementwise":
                    g = g.sign()
                if wd:
                    g.add_(p, alpha=wd)
                if self.rule == "sgd":
                    u = self._sgd(group, state, g, commit)
                else:
                    u = self._adam(group, state, g, commit)
                p.add_(u, alpha=direction * lr)

    @staticmethod
    def _sgd(group: dict, state: dict, g: torch.Tensor, commit: int) -> torch.Tensor:
        m = group["momentum"]
        if m == 0:
            return g
        buf = state.get("momentum_buffer")
        if buf is None:
            u = g
        elif commit > 0:
            u = buf.mul_(m).add_(g)  # in place: no second buffer on the common path
        else:
            u = buf.mul(m).add_(g)
        if commit:
            state["momentum_buffer"] = u if commit > 0 else u.neg()
        return u

    @staticmethod
    def _adam(group: dict, state: dict, g: torch.Tensor, commit: int) -> torch.Tensor:
        beta1, beta2 = group["betas"]
        t = state.get("step", 0) + 1
        m, v = state.get("exp_avg"), state.get("exp_avg_sq")
        if m is None:
            m, v = torch.zeros_like(g), torch.zeros_like(g)
        elif commit <= 0:
            m, v = m.clone(), v.clone()
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        bias1 = 1 - beta1**t
        bias2_sqrt = math.sqrt(1 - beta2**t)
        u = (m / bias1).div_(v.sqrt().div_(bias2_sqrt).add_(group["eps"]))
        if commit:
            state["step"] = t
            state["exp_avg"] = m if commit > 0 else m.neg_()
            state["exp_avg_sq"] = v
        return u
