"""``ProgressLine``: a sweep's progress as status lines, instead of Ray's result boxes
(``zeroflow sweep --verbose`` brings those back).

    [  2:13] 10/36 done · 2 running · 0 failed · 1 stopped early · best avg 91.95
             (method=ease,optimizer=fo-sgd) · ~4:40 left · done: optimizer=zo-sgd,method=ease

The counts are Ray's own trial states at the moment of the line (a trial whose end is being
reported counts as ended, not running). A line is printed when trials end or fail (at most one
per ``every`` seconds, a failure at once), and at least every ``quiet_for`` seconds while the
sweep runs; each names the trials that ended or started since the line before. Time left: the
trials still to run times the mean wall time of a trial (finished trials', or extrapolated from
the running ones' tasks), spread over the trials running now.
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


def _names(names: list[str], most: int = 3) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" +{len(names) - most} more" if len(names) > most else "")


class ProgressLine(_tune_callback_base()):
    SAMPLE_S = 1.0  # how often the running trials are counted for the mean concurrency

    def __init__(self, n_trials: int, varying: list[str], metric: str = "avg_accuracy",
                 mode: str = "max", every: float = 10.0, quiet_for: float = 60.0,
                 stream: TextIO | None = None, clock=time.monotonic):
        self.n_trials, self.varying, self.metric, self.mode = n_trials, varying, metric, mode
        self.every, self.quiet_for, self.stream, self.clock = every, quiet_for, stream, clock
        self.start = clock()
        self.last_print = -float("inf")
        self.ended: dict[str, str] = {}  # trial id -> done | failed | stopped
        self.retried = 0  # failures Ray retries from the trial's last checkpoint
        self.best: tuple[float, str] | None = None
        self.started_at: dict[str, float] = {}  # trial id -> when this driver saw it start
        self.progress: dict[str, tuple[int, int]] = {}  # trial id -> (tasks done, n_tasks)
        self.durations: list[float] = []  # wall time of trials that ran start to end here
        self.changes: list[str] = []  # what happened since the last line
        self.pending = False  # an end waits for its line
        self.busy = [0.0, 0.0]  # running trials integrated over time, and that time
        self.sampled_at: float | None = None

    def __getstate__(self):  # Tune pickles callbacks with the experiment
        state = dict(self.__dict__)
        state["stream"] = None
        return state

    def __setstate__(self, state):
        """A restored sweep (``zeroflow resume``) times from its restart."""
        self.__dict__.update(state)
        self.start, self.last_print = self.clock(), -float("inf")
        self.started_at, self.changes, self.pending = {}, [], False
        self.busy, self.sampled_at = [0.0, 0.0], None

    # ------------------------------------------------------------------ Tune's hooks
    def on_trial_start(self, iteration, trials, trial, **info):
        self.started_at[trial.trial_id] = self.clock()
        self.changes.append(f"started {self._name(trial)}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if "task" in result:
            self.progress[trial.trial_id] = (int(result["task"]) + 1, int(result["n_tasks"]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result
        self._end(trials, trial, "failed" if failure(last) else (
            "done" if reported_last_task(last) else "stopped"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trials, trial, "failed")

    def on_trial_recover(self, iteration, trials, trial, **info):
        """A trial failed (a lost node, a crash) and Ray retries it from its checkpoint."""
        self.retried += 1
        self.changes.append(f"retrying {self._name(trial)}")
        self.print_line(trials)

    def on_step_end(self, iteration, trials, **info):
        """Tune ends a step many times a second: counting its trials (all of them, ended ones
        too) at each would cost the driver time growing with the sweep's size, so the running
        trials are sampled at most once per ``SAMPLE_S``."""
        now = self.clock()
        if self.sampled_at is None or now - self.sampled_at >= self.SAMPLE_S:
            running = self.counts(trials)["running"]
            if self.sampled_at is not None:  # the real concurrency: running trials over time
                self.busy[0] += running * (now - self.sampled_at)
                self.busy[1] += now - self.sampled_at
            self.sampled_at = now
        if (self.pending and now - self.last_print >= self.every) or (
                now - self.last_print >= self.quiet_for):
            self.print_line(trials)

    def on_experiment_end(self, trials, **info):
        if self.pending or self.changes:
            self.print_line(trials)

    # ------------------------------------------------------------------ bookkeeping
    def _name(self, trial) -> str:
        return trial_name(trial.config, self.varying)

    def _end(self, trials, trial, kind: str) -> None:
        self.ended[trial.trial_id] = kind
        began = self.started_at.pop(trial.trial_id, None)
        if kind == "done" and began is not None:
            self.durations.append(self.clock() - began)
        last = trial.last_result or {}
        if kind == "done" and self.metric in last:
            value = float(last[self.metric])
            better = self.best is None or (value > self.best[0] if self.mode == "max"
                                           else value < self.best[0])
            if better:
                self.best = (value, self._name(trial))
        self.changes.append(f"{kind} {self._name(trial)}")
        self.pending = True
        all_ended = len(self.ended) >= self.n_trials
        if kind == "failed" or all_ended or self.clock() - self.last_print >= self.every:
            self.print_line(trials, ending=trial)

    def counts(self, trials, ending=None) -> dict[str, int]:
        """Ray's trial states now, the ``ending`` trial counted as ended."""
        kinds = list(self.ended.values())
        return {"done": kinds.count("done"), "failed": kinds.count("failed"),
                "stopped": kinds.count("stopped"),
                "running": sum(t.status == "RUNNING" and t is not ending
                               and t.trial_id not in self.ended for t in trials)}

    def line(self, trials, ending=None) -> str:
        counts = self.counts(trials, ending)
        elapsed = self.clock() - self.start
        parts = [f"[{_clock(elapsed):>7}] {counts['done']}/{self.n_trials} done",
                 f"{counts['running']} running", f"{counts['failed']} failed"]
        if counts["stopped"]:
            parts.append(f"{counts['stopped']} stopped early")
        if self.retried:
            parts.append(f"{self.retried} retried")
        if self.best:
            short = {"avg_accuracy": "avg", "accuracy": "last"}.get(self.metric, self.metric)
            parts.append(f"best {short} {self.best[0]:.2f} ({self.best[1]})")
        left = self.time_left(self.concurrency(counts["running"])) if len(
            self.ended) < self.n_trials else None
        if left is not None:
            parts.append(f"~{_clock(left)} left")
        if self.changes:
            parts.append(_names(self.changes))
        return " · ".join(parts)

    def trial_seconds(self) -> float | None:
        """A trial's mean wall time: of those that ran start to end under this driver, else
        extrapolated from the running trials' finished tasks."""
        if self.durations:
            return sum(self.durations) / len(self.durations)
        now, guesses = self.clock(), []
        for trial_id, began in self.started_at.items():
            done, n_tasks = self.progress.get(trial_id, (0, 0))
            if done:
                guesses.append((now - began) * n_tasks / done)
        return sum(guesses) / len(guesses) if guesses else None

    def concurrency(self, running: int) -> float:
        """How many trials ran at a time, on average so far (``running`` until measured): a
        trial's end and the next one's start are not simultaneous."""
        return self.busy[0] / self.busy[1] if self.busy[1] > 0 else float(running)

    def time_left(self, running: float) -> float | None:
        """Seconds until the last trial ends: the running trials' remainders and the trials not
        started yet, at ``running`` trials at a time."""
        per_trial = self.trial_seconds()
        if per_trial is None or running <= 0:
            return None
        now = self.clock()
        busy = sum(max(per_trial - (now - began), 0.0) for began in self.started_at.values())
        waiting = max(self.n_trials - len(self.ended) - len(self.started_at), 0)
        return (busy + waiting * per_trial) / running

    def print_line(self, trials, ending=None) -> None:
        print(self.line(trials, ending), file=self.stream or sys.stdout, flush=True)
        self.last_print, self.changes, self.pending = self.clock(), [], False
