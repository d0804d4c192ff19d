"""``ProgressLine``: a sweep's progress as one status line per change, instead of Ray's result
boxes (``zeroflow sweep --verbose`` brings those back).

    [  2:13] 10/36 done · 2 running · 0 failed · 1 stopped early · best avg 91.95
             (method=ease optimizer=fo-sgd) · ~4:40 left

A line is printed when the trials ended (done, failed or stopped early) pass each twentieth of
the sweep, when one fails or is retried (``max_failures``), when ``quiet_for`` seconds passed
without a line, and for the last one: about twenty lines for any sweep. Time left extrapolates
the rate of finished tasks over the tasks still to run.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from zeroflow.sweep.results import failure, reported_last_task
from zeroflow.sweep.space import trial_name


def _tune_callback_base():
    from ray import tune

    return tune.Callback


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressLine(_tune_callback_base()):
    def __init__(self, n_trials: int, varying: list[str], metric: str = "avg_accuracy",
                 mode: str = "max", quiet_for: float = 300.0, stream: TextIO | None = None):
        self.n_trials, self.varying, self.metric, self.mode = n_trials, varying, metric, mode
        self.quiet_for, self.stream = quiet_for, stream
        self.every = max(1, -(-n_trials // 20))  # a line per twentieth of the trials
        self.printed_at = 0  # trials ended at the last line
        self.start = time.monotonic()
        self.last_print = -float("inf")
        self.tasks_done = self.tasks_base = 0
        self.task_counts: dict[str, int] = {}  # trial id -> tasks it has to run
        self.best: tuple[float, str] | None = None
        self.ended = {"done": 0, "failed": 0, "stopped": 0}
        self.retried = 0  # failures Ray retries from the trial's last checkpoint

    def __getstate__(self):  # Tune pickles callbacks with the experiment
        state = dict(self.__dict__)
        state["stream"] = None
        return state

    def __setstate__(self, state):
        """A restored sweep (``zeroflow resume``) times its rate from the restart."""
        self.__dict__.update(state)
        self.start, self.last_print = time.monotonic(), -float("inf")
        self.tasks_base = self.tasks_done  # the rate counts tasks since the restart

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "task" in result:
            self.tasks_done += 1
            self.task_counts[trial.trial_id] = int(result.get("n_tasks", 0))

    def _end(self, trials, trial, kind: str) -> None:
        self.ended[kind] += 1
        last = trial.last_result or {}
        if kind == "done" and self.metric in last:
            value = float(last[self.metric])
            better = self.best is None or (value > self.best[0] if self.mode == "max"
                                           else value < self.best[0])
            if better:
                self.best = (value, trial_name(trial.config, self.varying))
        self.print_line(trials, force=kind == "failed", ending=trial)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result
        self._end(trials, trial, "failed" if failure(last) else (
            "done" if reported_last_task(last) else "stopped"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trials, trial, "failed")

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A trial failed (a lost node, a crash) and Ray retries it from its checkpoint."""
        self.retried += 1
        self.print_line(trials, force=True, ending=trial)

    def line(self, trials, ending=None) -> str:
        elapsed = time.monotonic() - self.start
        running = sum(t.status == "RUNNING" and t is not ending for t in trials)
        parts = [f"[{_clock(elapsed):>7}] {self.ended['done']}/{self.n_trials} done",
                 f"{running} running", f"{self.ended['failed']} failed"]
        if self.ended["stopped"]:
            parts.append(f"{self.ended['stopped']} stopped early")
        if getattr(self, "retried", 0):
            parts.append(f"{self.retried} retried")
        if self.best:
            short = {"avg_accuracy": "avg", "accuracy": "last"}.get(self.metric, self.metric)
            parts.append(f"best {short} {self.best[0]:.2f} ({self.best[1]})")
        left = self.time_left(elapsed) if sum(self.ended.values()) < self.n_trials else None
        if left is not None:
            parts.append(f"~{_clock(left)} left")
        return " · ".join(parts)

    def time_left(self, elapsed: float) -> float | None:
        """Seconds left: the tasks still to run (trials × their mean task count, less those
        done) at the rate tasks have finished so far."""
        recent = self.tasks_done - self.tasks_base
        if recent <= 0 or not self.task_counts:
            return None
        per_trial = sum(self.task_counts.values()) / len(self.task_counts)
        remaining = max(0.0, self.n_trials * per_trial - self.tasks_done)
        return remaining * elapsed / recent

    def print_line(self, trials, force: bool = False, ending=None) -> None:
        now, ended = time.monotonic(), sum(self.ended.values())
        if (force or ended >= self.n_trials or ended // self.every > self.printed_at // self.every
                or now - self.last_print >= self.quiet_for):
            print(self.line(trials, ending), file=self.stream or sys.stdout, flush=True)
            self.last_print, self.printed_at = now, ended
