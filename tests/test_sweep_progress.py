"""The sweep's status lines, driven by stand-in trials and a hand-set clock (no Ray session):
when lines print, what they count and name, and the time-left arithmetic. A real sweep's lines
are checked against Ray's own trial states in tests/test_sweep_ray.py."""

import io
from types import SimpleNamespace

from zeroflow.sweep.progress import ProgressLine


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _trial(i, status="RUNNING"):
    return SimpleNamespace(trial_id=f"t{i}", status=status, config={"optimizer": f"o{i}"},
                           last_result={})


def _finish(trial, n_tasks=5, avg=50.0, task=None):
    trial.last_result = {"task": n_tasks - 1 if task is None else task, "n_tasks": n_tasks,
                         "avg_accuracy": avg}


def _bar(n, clock, **kwargs):
    out = io.StringIO()
    return ProgressLine(n, ["optimizer"], stream=out, clock=clock, **kwargs), out


def test_lines_count_ray_states_and_name_what_changed():
    clock = Clock()
    bar, out = _bar(4, clock)
    trials = [_trial(0), _trial(1), _trial(2, "PENDING"), _trial(3, "PENDING")]
    bar.on_trial_start(0, trials, trials[0])
    bar.on_trial_start(0, trials, trials[1])
    clock.now = 30.0
    _finish(trials[0], avg=80.0)
    bar.on_trial_complete(0, trials, trials[0])  # Ray still says RUNNING while reporting it
    line, = out.getvalue().splitlines()
    assert line.startswith(
        "[   0:30] 1/4 done · 1 running · 0 failed · best avg 80.00 (optimizer=o0)")
    assert line.endswith("started optimizer=o0, started optimizer=o1, done optimizer=o0")
    trials[0].status = "TERMINATED"
    trials[2].status = "RUNNING"
    bar.on_trial_start(0, trials, trials[2])
    clock.now = 35.0
    _finish(trials[1], avg=70.0)
    bar.on_trial_complete(0, trials, trials[1])  # 5 s after the last line: it waits
    assert len(out.getvalue().splitlines()) == 1
    clock.now = 40.0
    trials[1].status = "TERMINATED"
    bar.on_step_end(0, trials)  # 10 s after the last line, with an end to report
    second = out.getvalue().splitlines()[1]
    assert "2/4 done · 1 running · 0 failed · best avg 80.00" in second
    assert second.endswith("started optimizer=o2, done optimizer=o1")
    trials[3].status = "RUNNING"
    bar.on_trial_start(0, trials, trials[3])
    trials[2].status = "ERROR"
    bar.on_trial_error(0, trials, trials[2])  # a failure prints at once
    third = out.getvalue().splitlines()[2]
    assert "2/4 done · 1 running · 1 failed" in third and "failed optimizer=o2" in third


def test_a_quiet_sweep_still_prints_a_line_a_minute():
    clock = Clock()
    bar, out = _bar(2, clock)
    trials = [_trial(0), _trial(1, "PENDING")]
    bar.on_trial_start(0, trials, trials[0])
    clock.now = 1.0
    bar.on_step_end(0, trials)  # the first step prints: nothing printed yet
    clock.now = 50.0
    bar.on_step_end(0, trials)
    assert len(out.getvalue().splitlines()) == 1
    clock.now = 61.5
    bar.on_step_end(0, trials)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("[   1:02] 0/2 done · 1 running · 0 failed")


def test_stops_failures_retries_and_the_last_line():
    clock = Clock()
    bar, out = _bar(3, clock)
    trials = [_trial(i) for i in range(3)]
    for t in trials:
        bar.on_trial_start(0, trials, t)
    _finish(trials[0], task=1, avg=99.0)  # stopped after 2 of 5 tasks: not a "best"
    bar.on_trial_complete(0, trials, trials[0])
    trials[1].last_result = {"zeroflow_error": "DivergenceError: loss became nan"}
    bar.on_trial_complete(0, trials, trials[1])  # a trial that ended on a mistake
    bar.on_trial_recover(0, trials, trials[2])  # a lost node: Ray retries it
    _finish(trials[2], avg=60.0)
    bar.on_trial_complete(0, trials, trials[2])  # the last trial: always a line
    lines = out.getvalue().splitlines()
    assert "0/3 done · 2 running · 0 failed · 1 stopped early" in lines[0]
    assert "0/3 done · 1 running · 1 failed · 1 stopped early" in lines[1]
    assert "1 retried" in lines[2] and "retrying optimizer=o2" in lines[2]
    assert lines[-1].split("] ")[1].startswith(
        "1/3 done · 0 running · 1 failed · 1 stopped early · 1 retried · best avg 60.00")
    assert "left" not in lines[-1]


def test_time_left_spreads_the_remaining_trials_over_the_running_ones():
    clock = Clock()
    bar, _ = _bar(6, clock)
    trials = [_trial(i) for i in range(2)]
    for t in trials:
        bar.on_trial_start(0, trials, t)
    assert bar.time_left(2) is None  # nothing to extrapolate from yet
    clock.now = 20.0
    bar.on_trial_result(0, trials, trials[0], {"task": 1, "n_tasks": 5})  # 2 of 5 in 20 s
    assert bar.trial_seconds() == 50.0
    # two trials at 50 s each, 20 s in: 2 × 30 s left, and 4 not started: (60 + 200) / 2
    assert bar.time_left(2) == 130.0
    _finish(trials[0])
    clock.now = 40.0
    bar.on_trial_complete(0, trials, trials[0])  # a measured trial: 40 s start to end
    assert bar.trial_seconds() == 40.0
    # trial 1 has 0 s left at 40 s; 4 trials not started, at 1 running
    assert bar.time_left(1) == 160.0
    restored = ProgressLine.__new__(ProgressLine)
    restored.__setstate__(bar.__getstate__())  # a resumed sweep keeps what it measured
    assert restored.trial_seconds() == 40.0 and restored.started_at == {}


def test_time_left_uses_the_concurrency_measured_over_time():
    clock = Clock()
    bar, _ = _bar(10, clock)
    trials = [_trial(0), _trial(1)]
    for t in trials:
        bar.on_trial_start(0, trials, t)
    bar.on_step_end(0, trials)
    clock.now = 30.0
    bar.on_step_end(0, trials)  # two running for 30 s
    trials[1].status = "TERMINATED"
    _finish(trials[1])
    bar.on_trial_complete(0, trials, trials[1])
    clock.now = 40.0
    bar.on_step_end(0, trials)  # then one for 10 s, between an end and the next start
    assert bar.concurrency(1) == (2 * 30 + 1 * 10) / 40


class CountedTrials(list):
    """Ray's trial list, counting how often it is walked."""

    walks = 0

    def __iter__(self):
        self.walks += 1
        return super().__iter__()


def test_steps_count_the_trials_at_most_once_a_second():
    """Tune ends a step many times a second; walking every trial of a 1,000-trial sweep at each
    would grow the driver's cost with the sweep."""
    clock = Clock()
    bar, _ = _bar(1000, clock, quiet_for=1e9)
    trials = CountedTrials([_trial(i) for i in range(2)] + [
        _trial(i, "TERMINATED") for i in range(2, 1000)])
    for step in range(200):  # 2 s of steps every 10 ms
        clock.now = step * 0.01
        bar.on_step_end(0, trials)
    assert trials.walks <= 3
    assert bar.concurrency(0) == 2
