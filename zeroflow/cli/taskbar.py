"""``TaskBar``: ``zeroflow run``'s progress, one bar per task with the loss and steps/s on a
terminal (tqdm), and the plain per-epoch lines the trial logs when output is not a terminal
(a file, a pipe, CI logs: no carriage returns)."""

from __future__ import annotations

import shutil
import sys
from typing import TextIO


class TaskBar:
    def __init__(self, stream: TextIO | None = None, tty: bool | None = None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.bar = None
        self.task = -1

    def log(self, message: str) -> None:
        """A trial's progress line: printed, or written above the bar on a terminal."""
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def step(self, event) -> None:
        """``run_trial``'s ``on_step``: advance (or open) the task's bar."""
        if not self.tty:
            return
        from tqdm import tqdm

        if event.task != self.task:
            self.close()
            # a terminal that reports no size (a fresh pty) would make tqdm hide the bar
            size = shutil.get_terminal_size((100, 24))
            self.task = event.task
            self.bar = tqdm(total=event.epochs * event.steps_per_epoch, file=self.stream,
                            desc=f"task {event.task + 1}/{event.n_tasks}", unit="step",
                            ncols=min(size.columns, 120), nrows=size.lines, leave=True)
        self.bar.set_postfix_str(f"epoch {event.epoch + 1}/{event.epochs} loss {event.loss:.4f}",
                                 refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
