"""Per-task optimizers and the training step: what the loop, a query worker's replica and the
memory benchmark build alike.

A learner names its parameter groups (``Learner.param_groups``); a ``GroupStepper`` holds one
group's optimizers for one task (the configured one, and for the hybrid schedule its first-order
counterpart), their cosine LR schedules, and which of them is active in an epoch.
``training_closure`` is the closure every optimizer steps (zero-argument, returns the loss);
``LocalStepping`` steps the optimizers in this process (``zeroflow.distributed.QueryPool`` is
the other way, with the same methods).
"""

from __future__ import annotations

import math
import warnings

import torch

from zeroflow import optim
from zeroflow.config import TrialConfig
from zeroflow.errors import DivergenceError
from zeroflow.seeding import MASK_STREAM, OPT_STREAM, derive_seed


def optimizer_hparams(config: TrialConfig, name: str, seed: int, lr: float | None,
                      model_numel: int | None = None, group: int = 0) -> dict:
    """The trial's settings that optimizer ``name`` accepts. ``model_numel`` (the learner's
    parameter count) lets ``direction_buffer="auto"`` pick the fast step for adapters and the
    lean one when the backbone itself trains. Sparsity masks: a new one per direction, one
    per optimizer (``task``: its seed is the task's), or one per parameter group ``group`` for
    the whole trial (``fixed``)."""
    values = {
        "model_numel": model_numel,
        "lr": config.resolved_lr if lr is None else lr,
        "mu": config.mu, "q": config.q, "seed": seed, "weight_decay": config.weight_decay,
        "momentum": config.momentum, "perturbation": config.perturbation,
        "difference": config.difference, "history": config.history, "sparsity": config.sparsity,
        "history_mode": config.history_mode, "sparsity_mask": config.sparsity_mask,
        "sparsity_resample": config.sparsity_resample == "direction",
        "mask_seed": (derive_seed(config.seed, MASK_STREAM, group)
                      if config.sparsity_resample == "fixed" else None),
    }
    accepted = optim.accepted_hparams(name)
    return {k: v for k, v in values.items() if k in accepted}


class GroupStepper:
    """One parameter group's optimizers for a task: the configured one, and for the hybrid
    schedule its first-order counterpart for the first ``hybrid_epochs`` epochs (at
    ``hybrid_fo_lr`` when set)."""

    def __init__(self, group, config: TrialConfig, task: int, index: int, epochs: int,
                 model_numel: int | None = None):
        self.group, self.index = group, index
        self.name = group.optimizer or config.optimizer
        seed = derive_seed(config.seed, OPT_STREAM, task, index)
        self.main = optim.build(self.name, group.params, **optimizer_hparams(
            config, self.name, seed, group.lr, model_numel, index))
        self.hybrid = None
        if group.optimizer is None and config.hybrid_epochs > 0 and not optim.is_first_order(
                self.name):
            fo = optim.fo_counterpart(self.name)
            self.hybrid = optim.HybridSchedule(config.hybrid_epochs)
            fo_lr = config.hybrid_fo_lr if config.hybrid_fo_lr is not None else group.lr
            self.fo = optim.build(fo, group.params,
                                  **optimizer_hparams(config, fo, seed, fo_lr, model_numel))
        # zo_lr_schedule: constant keeps a forward-pass optimizer at its lr (the authors' code)
        self.schedulers = [
            torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1),
                                                       eta_min=config.min_lr)
            for opt in self.optimizers()
            if opt.uses_backward or config.zo_lr_schedule == "cosine"
        ]

    def optimizers(self):
        return [self.main] + ([self.fo] if self.hybrid else [])

    def active(self, epoch: int):
        if self.hybrid is not None and self.hybrid.use_first_order(epoch):
            return self.fo
        return self.main

    def epoch_end(self):
        """Advance every schedule, the idle optimizer's too (hybrid: ZO starts at epoch k's
        LR); torch warns about a scheduler stepped before its optimizer, which is intended."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")
            for s in self.schedulers:
                s.step()

    def state_dict(self):
        return [opt.state_dict() for opt in self.optimizers()]

    @property
    def forward_passes(self) -> int:
        return sum(opt.forward_passes for opt in self.optimizers())


def task_steppers(learner, config: TrialConfig, task: int, epochs: int) -> list[GroupStepper]:
    """The steppers of every parameter group of ``learner`` for ``task``, each told the
    learner's parameter count (``direction_buffer="auto"`` picks the step regime by it)."""
    numel = sum(p.numel() for p in learner.parameters())
    return [GroupStepper(g, config, task, i, epochs, numel)
            for i, g in enumerate(learner.param_groups())]


def activate(steppers: list[GroupStepper], epoch: int) -> list:
    """Each stepper's optimizer for ``epoch``; its tensors require grad only if that one
    calls backward (``.grad`` cleared)."""
    active = [s.active(epoch) for s in steppers]
    for stepper, opt in zip(steppers, active):
        for p in stepper.group.params:
            p.requires_grad_(opt.uses_backward)
            p.grad = None
    return active


def freeze(steppers: list[GroupStepper]) -> None:
    """After a task's training: no trained tensor requires grad or holds one."""
    for stepper in steppers:
        for p in stepper.group.params:
            p.requires_grad_(False)
            p.grad = None


def training_closure(learner, opt, x, y, dropout_seed: int):
    """The zero-argument closure ``opt.step`` calls on batch (x, y): the learner's loss with
    the batch's dropout masks (reseeded on every call, so f(θ + μz) and f(θ − μz) share them);
    for a first-order optimizer it also runs backward."""
    def closure():
        learner.model.reseed(dropout_seed)
        if opt.uses_backward:
            opt.zero_grad(set_to_none=True)
            loss = learner.loss(x, y)
            loss.backward()
            return loss.detach()  # holds no graph: forward-grad later swaps these tensors
        return learner.loss(x, y)

    return closure


def finite_loss(loss: torch.Tensor, stepper: GroupStepper, opt, mu: float, task: int,
                epoch: int, step: int) -> float:
    """The step's loss as a float; a NaN or inf one ends the trial naming where and what to
    lower."""
    loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        raise DivergenceError(
            f"loss became {loss_value} at task {task}, epoch {epoch}, step {step} "
            f"({stepper.name}, lr={opt.param_groups[0]['lr']:.3g}"
            + (f", mu={mu:g}" if not opt.uses_backward else "")
            + "); lower lr" + (" or mu" if not opt.uses_backward else "")
        )
    return loss_value


class LocalStepping:
    """Steps every optimizer in this process: the loop's default. ``QueryPool`` (query workers
    evaluating forward-pass directions) has the same methods and ``stats``, its traffic."""

    stats = None

    def start_task(self, task: int, learner, steppers: list[GroupStepper]) -> None:
        """After the loop built task ``task``'s structure and steppers."""

    def train_step(self, stepper: GroupStepper, opt, closure, batch) -> torch.Tensor:
        """One step of ``stepper``'s active optimizer ``opt`` on the batch ``batch`` names."""
        return opt.step(closure)

    def finish_task(self) -> None:
        """After the task's last step."""

    def close(self) -> None:
        """At the end of the trial, also when it failed."""
