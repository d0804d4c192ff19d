"""Hybrid FO→ZO (paper Enhancement 1): first-order for the first k epochs of each task, then the
configured forward-pass optimizer. The training loop asks the schedule which to step."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HybridSchedule:
    """Runs FO for epochs [0, fo_epochs) of every task, ZO after; fo_epochs = 0 is pure ZO."""

    fo_epochs: int = 0

    def __post_init__(self):
        if self.fo_epochs < 0:
            raise ValueError(f"hybrid fo_epochs must be >= 0, got {self.fo_epochs}")

    def use_first_order(self, epoch_in_task: int) -> bool:
        return epoch_in_task < self.fo_epochs
