"""``MLflowSweepCallback``: the sweep driver's MLflow logging, as a Ray Tune callback."""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

from zeroflow.config import make_config
from zeroflow.sweep import checkpoints
from zeroflow.sweep.results import BACKFILL_KEY, failure, reported_last_task
from zeroflow.sweep.space import run_name, trial_config

logger = logging.getLogger(__name__)


def _tune_callback_base():
    from ray import tune

    return tune.Callback


class MLflowSweepCallback(_tune_callback_base()):
    """Driver-side MLflow logging that survives a sweep restore.

    Ray's ``MLflowLoggerCallback`` keeps its run ids in memory and opens new runs after a
    restore; this one finds each trial's run again by its ``zeroflow.trial_id`` tag (within the
    launch's ``sweep_id``), skips tasks already logged, and at the end reconciles runs of trials
    that finished while no driver was watching. A tracking error is logged as a warning and
    never stops the sweep (the reconciliation catches up). Picklable (Ray stores it with the
    experiment): the MLflow client is made lazily.
    """

    def __init__(self, sweep: str, tracking_uri: str, varying: list[str], space: dict,
                 space_text: str = "", sweep_id: str | None = None, stopper: str | None = None):
        self.sweep, self.uri, self.varying = sweep, tracking_uri, varying
        self.stopper = stopper  # who may stop trials early (a scheduler), None if nobody
        self.space, self.space_text = space, space_text
        self.sweep_id = sweep_id or uuid.uuid4().hex
        self._tracker = None
        self._known_checked = False

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_tracker"] = None
        state["_known_checked"] = False
        return state

    def __setstate__(self, state):
        """Restored by ``zeroflow resume``: the environment's MLflow store, when one is set,
        wins over the launch's (the driver has said so in one line)."""
        self.__dict__.update(state)
        self._known_checked = False  # also for a callback pickled before this attribute
        self.uri = os.environ.get("MLFLOW_TRACKING_URI") or self.uri

    @property
    def tracker(self):
        if self._tracker is None:
            from zeroflow.tracking import SweepTracker

            self._tracker = SweepTracker(self.sweep, self.uri, self.sweep_id)
            self._tracker.log_sweep_params(self.space, self.space_text)
        return self._tracker

    def _run(self, trial, reopen: bool = False) -> str:
        return self.tracker.trial_run(  # the config is built only when a run is created
            trial.trial_id, run_name(trial.config, self.varying),
            lambda: make_config(trial_config(trial.config)).to_dict(), reopen=reopen)

    def _guard(self, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as err:  # noqa: BLE001 - tracking must not end the sweep
            logger.warning("zeroflow: MLflow %s failed (%s); the sweep goes on", what, err)

    def setup(self, **info):
        self._guard("setup", lambda: self.tracker)

    def on_step_begin(self, iteration, trials, **info):
        if not self._known_checked:  # once: the restored trials are all in ``trials`` by now
            self._known_checked = True
            self._guard("check of unknown trials", self._abandon_unknown, trials)

    def _abandon_unknown(self, trials) -> None:
        """A run of a trial that Tune's restored state does not hold (the searcher suggested it,
        or it ended, after the last save; the search goes on without it) is set aside: tagged
        with the reason, KILLED if it was left RUNNING, so that it is neither counted twice
        nor left open."""
        ended = self.tracker.abandon_unknown(
            {t.trial_id for t in trials},
            "not in Tune's saved state when the sweep resumed (started or ended just before "
            "the driver stopped); the search went on without it")
        if ended:
            logger.warning("zeroflow: %d trial run(s) unknown to the resumed sweep set aside "
                           "(tag zeroflow.abandoned; running ones KILLED): %s", len(ended),
                           ", ".join(ended))

    def on_trial_start(self, iteration, trials, trial, **info):
        self._guard("trial start", self._run, trial, True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._guard("result", self._log, trial, result)

    def _log(self, trial, result) -> None:
        from zeroflow.tracking import (
            SERIES_KEY,
            TAG_MEMORY,
            TAG_NODE_ID,
            TAG_NODE_IP,
            task_metrics,
        )

        # a trial that restarted from a checkpoint the driver never saw first sends the results
        # reported up to it: log the tasks missing here, in order, then this one
        earlier = json.loads(result.get(BACKFILL_KEY) or "[]")
        for item in [*earlier, result]:
            if "task" in item:
                self.tracker.log_task(self._run(trial), int(item["task"]), task_metrics(item),
                                      {TAG_MEMORY: item.get("memory_label"),
                                       TAG_NODE_ID: item.get("node_id"),
                                       TAG_NODE_IP: item.get("node_ip")},
                                      item.get(SERIES_KEY))

    def _finish(self, trial, status: str) -> None:
        config = make_config(trial_config(trial.config))
        n_tasks = int((trial.last_result or {}).get("n_tasks", 0))
        self.tracker.finish_trial(self._run(trial), config.to_dict(), n_tasks,
                                  f"{self.sweep}: {run_name(trial.config, self.varying)}",
                                  status)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if failure(trial.last_result):
            self._guard("trial failure", self._fail, trial)
        elif self.stopper and not reported_last_task(trial.last_result):
            self._guard("trial stop", self._stop, trial)
        else:
            self._guard("trial checkpoint", self._log_checkpoint, trial)
            self._guard("trial end", self._finish, trial, "FINISHED")

    def _log_checkpoint(self, trial) -> None:
        checkpoint = getattr(trial, "checkpoint", None)
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                self.tracker.log_checkpoint(self._run(trial), directory)

    def _fail(self, trial) -> None:
        """A trial that ended on a mistake (``results.ERROR_KEY``): FAILED, its reason a tag."""
        from zeroflow.tracking import TAG_ERROR

        self.tracker.client.set_tag(self._run(trial), TAG_ERROR, failure(trial.last_result))
        self._finish(trial, "FAILED")

    def _stop(self, trial) -> None:
        last = trial.last_result or {}
        done, n = int(last.get("task", -1)) + 1, int(last.get("n_tasks", 0))
        reason = f"stopped by {self.stopper} after {done} of {n} tasks"
        self.tracker.stop_trial(self._run(trial), make_config(trial_config(trial.config)).to_dict(),
                                reason)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._guard("trial error", self._finish, trial, "FAILED")

    def on_experiment_end(self, trials, **info):
        self._guard("reconciliation", self._reconcile, trials)

    def _reconcile(self, trials) -> None:
        """Trials that finished while no driver logged (a killed driver) get their missing
        tasks, final metrics and status now; trials stopped part-way (Ctrl-C) are KILLED, not
        FINISHED; then the sweep's run ends accordingly."""
        statuses = []
        for trial in trials:
            complete = trial.status == "TERMINATED" and reported_last_task(trial.last_result)
            stopped = trial.status == "TERMINATED" and self.stopper and not complete
            status = "FAILED" if trial.status == "ERROR" or failure(trial.last_result) else (
                "FINISHED" if complete or stopped else "KILLED")
            statuses.append(status)
            if trial.status == "PENDING" and not self.tracker.has_trial_run(trial.trial_id):
                continue  # never started (Ctrl-C): no run to end; a resume starts it
            run_id = self._run(trial)
            if self.tracker.run_status(run_id) != "RUNNING":
                continue
            if failure(trial.last_result):
                self._fail(trial)
                continue
            if stopped:
                for result in _checkpoint_results(trial):
                    self._log(trial, result)
                self._stop(trial)
                continue
            if status == "KILLED":
                self.tracker.end_run(run_id, "KILLED")
                continue
            for result in _checkpoint_results(trial):
                self._log(trial, result)
            if status == "FINISHED":
                self._log_checkpoint(trial)
            self._finish(trial, status)
        overall = ("FAILED" if "FAILED" in statuses else
                   "KILLED" if "KILLED" in statuses else "FINISHED")
        self.tracker.finish_sweep(overall)


def _checkpoint_results(trial) -> list[dict]:
    """Every task's reported metrics, from the trial's latest checkpoint: the results recorded
    beside it, else (a sweep launched before those were) its full history."""
    from zeroflow.checkpoint import CHECKPOINT_FILE, load_checkpoint

    checkpoint = getattr(trial, "checkpoint", None)
    if checkpoint is None:
        return []
    recorded = checkpoints.reported_results(checkpoint)
    if recorded is not None:
        return recorded
    with checkpoint.as_directory() as directory:
        if not (Path(directory) / CHECKPOINT_FILE).exists():
            return []
        payload = load_checkpoint(directory)
    series = payload.get("series") or [{} for _ in payload["history"]]
    return [{**metrics, "task": t, "series": s}
            for t, (metrics, s) in enumerate(zip(payload["history"], series))]
