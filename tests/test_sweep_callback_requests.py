"""The sweep's MLflow callback asks the tracking server for nothing per report or per trial that
it already knows (a sweep of 1,000 trials would pay each request 1,000 times): driven by
stand-in trials (no Ray), against an SQLite store whose client counts its calls. What a sweep
logs is checked end to end in tests/test_sweep_ray.py; resumes in tests/test_sweep_resume.py."""

from collections import Counter
from types import SimpleNamespace

from conftest import tiny_trial
from mlflow.tracking import MlflowClient

from zeroflow.sweep.mlflow_callback import MLflowSweepCallback

N_TASKS = 3
READS = ("search_runs", "get_metric_history", "get_run")


class Counting:
    """The real client, every method call counted by name."""

    def __init__(self, client):
        self.client, self.calls = client, Counter()

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


def _trial(i):
    return SimpleNamespace(trial_id=f"t{i}", status="RUNNING", last_result={}, checkpoint=None,
                           config=tiny_trial(optimizer="zo-sgd", seed=i))


def _result(task):
    return {"task": task, "n_tasks": N_TASKS, "accuracy": 90.0 - task,
            **{f"accuracy_task_{j}": 90.0 - task + j for j in range(task + 1)}}


def _sweep(n_trials):
    """A sweep of ``n_trials`` trials through the callback: the reads each kind of call made."""
    callback = MLflowSweepCallback(f"requests{n_trials}", None, ["seed"], {"trials": n_trials})
    callback.uri = None  # conftest's MLFLOW_TRACKING_URI
    callback.setup()
    client = callback.tracker.client = Counting(callback.tracker.client)
    trials = [_trial(i) for i in range(n_trials)]
    callback.on_step_begin(0, trials)
    for trial in trials:
        callback.on_trial_start(0, trials, trial)
        for task in range(N_TASKS):
            trial.last_result = _result(task)
            callback.on_trial_result(0, trials, trial, trial.last_result)
        trial.status = "TERMINATED"
        callback.on_trial_complete(0, trials, trial)
    callback.on_experiment_end(trials)
    return {name: client.calls[name] for name in READS}, callback


def test_reads_do_not_grow_with_trials_or_reports():
    few, _ = _sweep(2)
    many, callback = _sweep(6)
    assert many == few  # a constant number of reads, not one (or more) per trial or report
    assert many["get_metric_history"] == 0  # what this driver logged, it knows

    client = MlflowClient()
    experiment = client.get_experiment_by_name(callback.sweep).experiment_id
    runs = client.search_runs([experiment], "tags.`zeroflow.role` = 'trial'")
    assert sorted(r.data.tags["zeroflow.trial_id"] for r in runs) == [f"t{i}" for i in range(6)]
    for run in runs:
        assert run.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")]
        assert sorted(steps) == list(range(N_TASKS))
        assert run.data.metrics["avg"] == sum(90.0 - t for t in range(N_TASKS)) / N_TASKS
        assert run.data.params["seed"] == run.data.tags["zeroflow.trial_id"][1:]
    parent = client.search_runs([experiment], "tags.`zeroflow.role` = 'sweep'")[0]
    assert parent.info.status == "FINISHED"


def test_an_interrupted_sweep_opens_no_run_for_trials_that_never_started():
    """Ctrl-C with trials still PENDING: the end-of-sweep reconciliation ends the started ones'
    runs as KILLED and makes none for the others (a resume starts them and makes their runs)."""
    callback = MLflowSweepCallback("interrupted", None, ["seed"], {"trials": 4})
    callback.uri = None
    callback.setup()
    trials = [_trial(i) for i in range(4)]
    callback.on_step_begin(0, trials)
    callback.on_trial_start(0, trials, trials[0])
    trials[0].last_result = _result(0)
    callback.on_trial_result(0, trials, trials[0], trials[0].last_result)
    for trial in trials[1:]:
        trial.status = "PENDING"
    callback.on_experiment_end(trials)

    client = MlflowClient()
    experiment = client.get_experiment_by_name("interrupted").experiment_id
    runs = client.search_runs([experiment], "tags.`zeroflow.role` = 'trial'")
    assert [(r.data.tags["zeroflow.trial_id"], r.info.status) for r in runs] == [("t0", "KILLED")]
    parent = client.search_runs([experiment], "tags.`zeroflow.role` = 'sweep'")[0]
    assert parent.info.status == "KILLED"
