"""The sweep's status lines, driven by stand-in trials (no Ray session): how many lines, what
they say, and the time-left arithmetic."""

import io
from types import SimpleNamespace

from zeroflow.sweep.progress import ProgressLine


def _trial(i, status="RUNNING", task=None, n_tasks=5, avg=None):
    last = {} if task is None else {"task": task, "n_tasks": n_tasks}
    if avg is not None:
        last["avg_accuracy"] = avg
    return SimpleNamespace(trial_id=f"t{i}", status=status, config={"optimizer": f"o{i}"},
                           last_result=last)


def test_about_twenty_lines_for_any_sweep_and_the_last_one_always():
    for n in (6, 36, 200):
        out = io.StringIO()
        bar = ProgressLine(n, ["optimizer"], stream=out)
        trials = [_trial(i) for i in range(n)]
        for i, trial in enumerate(trials):
            for task in range(5):
                bar.on_trial_result(0, trials, trial, {"task": task, "n_tasks": 5})
            trial.last_result = {"task": 4, "n_tasks": 5, "avg_accuracy": float(i % 7)}
            bar.on_trial_complete(0, trials, trial)
            trial.status = "TERMINATED"
        lines = out.getvalue().splitlines()
        assert min(n, 15) <= len(lines) <= 21, (n, len(lines))
        assert lines[-1].split("] ")[1].startswith(f"{n}/{n} done · 0 running · 0 failed")
        best = max(range(n), key=lambda i: (i % 7, -i))  # the first of the highest
        assert f"best avg {best % 7:.2f} (optimizer=o{best})" in lines[-1]
        assert "left" not in lines[-1]


def test_failures_and_early_stops_are_counted_and_a_failure_always_prints():
    out = io.StringIO()
    bar = ProgressLine(100, ["optimizer"], stream=out)
    trials = [_trial(0), _trial(1), _trial(2)]
    bar.on_trial_result(0, trials, trials[0], {"task": 0, "n_tasks": 5})
    trials[0].last_result = {"task": 1, "n_tasks": 5, "avg_accuracy": 99.0}
    bar.on_trial_complete(0, trials, trials[0])  # stopped after 2 of 5 tasks: not a "best"
    bar.on_trial_error(0, trials, trials[1])
    lines = out.getvalue().splitlines()
    # the first ended trial prints (nothing printed yet); the failure forces the second,
    # though 2 of 100 ended is no twentieth
    assert len(lines) == 2
    assert "0/100 done" in lines[1] and "1 failed" in lines[1] and "1 stopped early" in lines[1]
    assert "best" not in lines[1]
    bar.on_trial_complete(0, trials, _trial(3, task=4, avg=50.0))
    assert len(out.getvalue().splitlines()) == 2  # an ordinary end between milestones: quiet
    bar.on_trial_recover(0, trials, trials[2])  # a lost node: Ray retries from a checkpoint
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and "1 retried" in lines[2]


def test_time_left_extrapolates_the_task_rate():
    bar = ProgressLine(4, [], stream=io.StringIO())
    trial = _trial(0)
    for task in range(5):  # one trial's 5 tasks of 4 × 5 = 20
        bar.on_trial_result(0, [trial], trial, {"task": task, "n_tasks": 5})
    assert bar.time_left(10.0) == 30.0  # 15 tasks left at 0.5 tasks/s
    restored = ProgressLine.__new__(ProgressLine)
    restored.__setstate__(bar.__getstate__())  # a resumed sweep times from its restart
    assert restored.time_left(10.0) is None
    restored.on_trial_result(0, [trial], _trial(1), {"task": 0, "n_tasks": 5})
    assert restored.time_left(2.0) == 28.0  # 14 left at 1 task per 2 s
