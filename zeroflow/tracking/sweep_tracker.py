"""``SweepTracker``: the one MLflow writer of a sweep (or of one ``zeroflow run``).

One experiment per sweep, a parent run for the sweep and one child run per trial
(``mlflow.parentRunId``), params = the flattened trial config, metrics per task with
``step = task index``, final summary metrics, and artifacts (accuracy matrix CSV, resolved config
YAML, accuracy-curve PNG). Runs are found again by tags (``tracking.tags``), so a resumed sweep
continues its trials' runs instead of opening new ones.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from zeroflow import plugins
from zeroflow.tracking.results import flatten, matrix_from_history, series_points
from zeroflow.tracking.store import (
    artifact_location,
    default_tracking_uri,
    make_private_store,
)
from zeroflow.tracking.tags import (
    PARENT_TAG,
    TAG_ABANDONED,
    TAG_ROLE,
    TAG_STOPPED,
    TAG_SWEEP,
    TAG_SWEEP_ID,
    TAG_TRIAL,
)


def plot_accuracy_curve(matrix, path: Path, title: str) -> None:
    """The run's accuracy-curve artifact: accuracy on all seen classes after each task, and each
    task's accuracy from when it was learnt on."""
    from zeroflow.plotting import pyplot, save

    fig, ax = pyplot().subplots(figsize=(5, 3.5))
    tasks = list(range(1, matrix.done + 1))
    ax.plot(tasks, matrix.seen[: matrix.done], marker="o", label="all seen classes")
    for j in range(matrix.done):
        ax.plot(range(j + 1, matrix.done + 1), matrix.a[j:matrix.done, j], alpha=0.4,
                linewidth=1, label=f"task {j}" if matrix.done <= 5 else None)
    ax.set_xlabel("after task")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save(fig, path, dpi=100)


class SweepTracker:
    """The driver's MLflow writer for one sweep: parent run, child runs, metrics, artifacts."""

    def __init__(self, sweep: str, tracking_uri: str | None = None, sweep_id: str | None = None):
        import logging

        from mlflow.tracking import MlflowClient

        for name in ("mlflow.store.db.utils", "alembic"):  # "creating tables..." chatter
            logging.getLogger(name).setLevel(logging.WARNING)

        self.sweep, self.sweep_id = sweep, sweep_id
        self.uri = tracking_uri or default_tracking_uri()
        make_private_store(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(sweep)
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(
            sweep, artifact_location=artifact_location(self.uri),
            tags={"mlflow.experimentKind": "custom_model_development"})  # the UI's runs view
        self._parent_id: str | None = None
        self._logged_steps: dict[str, int] = {}
        self._runs: dict[str, str] = {}
        # what this process knows without asking the server (a sweep makes thousands of runs):
        # the sweep's trial runs found at start (one paged search, not one per trial), each
        # run's status, and the per-task metrics logged here into runs created here
        self._found: dict[str, Any] | None = None
        self._status: dict[str, str] = {}
        self._logged: dict[str, dict[str, dict[int, float]]] = {}

    def _search(self, filter_string: str) -> list:
        """Every run of the experiment matching ``filter_string``, page by page (MLflow returns
        at most 1,000 a request; a sweep may hold more trial runs)."""
        runs, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string=filter_string,
                                           max_results=1000, page_token=token)
            runs += page
            token = page.token
            if not token:
                return runs

    def _trial_runs_filter(self) -> str:
        return f"tags.`{TAG_ROLE}` = 'trial' and tags.`{PARENT_TAG}` = '{self.parent_id}'"

    @property
    def parent_id(self) -> str:
        """The sweep's run (found again on resume, else created on first use)."""
        if self._parent_id is None:
            self._parent_id = self._find_or_create_parent()
        return self._parent_id

    def _parent_filter(self) -> str:
        # a sweep is its launch (sweep_id): reusing a name must not reopen another launch's run
        where = f"tags.`{TAG_ROLE}` = 'sweep'"
        return where + (f" and tags.`{TAG_SWEEP_ID}` = '{self.sweep_id}'" if self.sweep_id else "")

    def _find_or_create_parent(self) -> str:
        found = self._search(self._parent_filter())
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {TAG_SWEEP: self.sweep, TAG_ROLE: "sweep"}
        if self.sweep_id:
            tags[TAG_SWEEP_ID] = self.sweep_id
        run = self.client.create_run(self.experiment_id, run_name=self.sweep, tags=tags)
        return run.info.run_id

    def log_sweep_params(self, params: dict[str, Any], space_text: str | None = None) -> None:
        existing = self.client.get_run(self.parent_id).data.params
        fresh = {k: v for k, v in flatten(params).items() if k not in existing}
        self._log_params(self.parent_id, fresh)
        if space_text is not None:
            self.log_text(self.parent_id, space_text, "space.yaml")

    def trial_run(self, trial_id: str, name: str, config: dict[str, Any] | Callable[[], dict],
                  nested: bool = True, reopen: bool = False) -> str:
        """The run of ``trial_id``: found again if it exists (resume; ``reopen`` marks it
        RUNNING again), else created as a child of the sweep's run (``nested``) or on its own
        (``zeroflow run``) with ``config`` (or what it returns, called only then) as params."""
        if trial_id in self._runs:
            if reopen:
                self._set_status(self._runs[trial_id], "RUNNING")
            return self._runs[trial_id]
        found = self._trial_runs(trial_id) if nested else self._search(
            f"tags.`{TAG_TRIAL}` = '{trial_id}'")
        if found:
            run_id = found[0].info.run_id
            self._status[run_id] = found[0].info.status
            if reopen:
                self._set_status(run_id, "RUNNING")
                if TAG_ABANDONED in found[0].data.tags:  # its trial came back after all
                    self.client.delete_tag(run_id, TAG_ABANDONED)
            history = self.client.get_metric_history(run_id, "accuracy")
            self._logged_steps[run_id] = max((m.step for m in history), default=-1)
        else:
            tags = {TAG_SWEEP: self.sweep, TAG_TRIAL: trial_id, TAG_ROLE: "trial"}
            if nested:
                tags[PARENT_TAG] = self.parent_id
            run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
            run_id = run.info.run_id
            # each plugin loaded here (the trial's, entry points') with its version or hash
            config = config() if callable(config) else config
            self._log_params(run_id, {**flatten(config), **plugins.params()})
            self._logged_steps[run_id] = -1
            self._status[run_id], self._logged[run_id] = "RUNNING", {}
        self._runs[trial_id] = run_id
        return run_id

    def has_trial_run(self, trial_id: str) -> bool:
        """Whether ``trial_id`` has a run in this sweep (made now or by an earlier driver)."""
        return trial_id in self._runs or bool(self._trial_runs(trial_id))

    def _trial_runs(self, trial_id: str) -> list:
        """The run of ``trial_id`` among the trial runs of this sweep's run, all read by one
        paged search the first time (a resumed sweep's; none at a launch): a run this process
        did not find there was never made, since only this process writes the sweep's runs."""
        if self._found is None:
            self._found = {r.data.tags.get(TAG_TRIAL): r
                           for r in self._search(self._trial_runs_filter())}
        return [self._found[trial_id]] if trial_id in self._found else []

    def _set_status(self, run_id: str, status: str) -> None:
        if status == "RUNNING":
            self.client.update_run(run_id, status=status)
        else:
            self.client.set_terminated(run_id, status=status)
        self._status[run_id] = status

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_task(self, run_id: str, task: int, metrics: dict[str, float],
                 tags: dict[str, str] | None = None, series: dict | str | None = None) -> bool:
        """Log one task's metrics at ``step = task`` with ``tags`` (what the peak memory
        measured, where the task ran), and its step-level ``series`` (``TaskReport.series``)
        at their global training steps; a task already logged is skipped."""
        from mlflow.entities import Metric, RunTag

        if task <= self._logged_steps.get(run_id, -1):
            return False
        import time

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, task) for k, v in metrics.items() if math.isfinite(v)]
        batch += [Metric(k, v, now, step) for k, step, v in series_points(series)
                  if math.isfinite(v)]
        tags = [RunTag(k, str(v)) for k, v in (tags or {}).items() if v]
        for i in range(0, max(len(batch), 1), 1000):  # MLflow takes 1000 metrics per batch
            self.client.log_batch(run_id, metrics=batch[i : i + 1000], tags=tags if not i else [])
        self._logged_steps[run_id] = task
        if run_id in self._logged:  # every task of this run went through here: keep them
            for m in batch:
                self._logged[run_id].setdefault(m.key, {})[m.step] = m.value
        return True

    def history(self, run_id: str) -> dict[str, dict[int, float]]:
        """Every metric's values by step: kept here for a run this process made and logged
        (no request), else read from MLflow (a run found again on resume)."""
        if run_id in self._logged:
            return {k: dict(v) for k, v in self._logged[run_id].items()}
        run = self.client.get_run(run_id)
        out = {}
        for key in run.data.metrics:
            out[key] = {m.step: m.value for m in self.client.get_metric_history(run_id, key)}
        return out

    def finish_trial(self, run_id: str, config: dict[str, Any], n_tasks: int, title: str,
                     status: str = "FINISHED") -> None:
        """Final metrics and artifacts from what was logged, then the run's end status."""
        from mlflow.entities import Metric

        history = self.history(run_id)
        self._logged.pop(run_id, None)  # read once: a later call asks MLflow
        logged = max(history.get("accuracy", {}), default=-1)  # step = task for this one
        matrix = matrix_from_history(history, max(n_tasks, logged + 1))
        if matrix.done:
            import time

            now = int(time.time() * 1000)
            step = matrix.done - 1
            finals = {"avg": matrix.avg(), "last": matrix.last(),
                      "forgetting": matrix.forgetting()}
            # the per-task "forgetting so far" of the last task already is the final value
            finals = {k: v for k, v in finals.items() if history.get(k, {}).get(step) != v}
            self.client.log_batch(run_id, metrics=[
                Metric(k, v, now, step) for k, v in finals.items()])
            self.log_text(run_id, matrix.to_csv(), "accuracy_matrix.csv")
            with tempfile.TemporaryDirectory() as tmp:
                png = Path(tmp) / "accuracy_curve.png"
                plot_accuracy_curve(matrix, png, title)
                self.client.log_artifact(run_id, str(png))
        self.log_text(run_id, yaml.safe_dump(config, sort_keys=True), "config.yaml")
        self._set_status(run_id, status)

    def log_checkpoint(self, run_id: str, directory: str | os.PathLike) -> None:
        """The trial's final checkpoint (its trainable tensors: adapters, heads, prototypes,
        with the config and accuracy history) as artifact ``checkpoint/``: download the folder
        and pass it to ``zeroflow run --resume-from``, or ``torch.load(..., weights_only=True)``
        it in a script (key ``learner``)."""
        from zeroflow.checkpoint import CHECKPOINT_FILE

        path = Path(directory) / CHECKPOINT_FILE
        if path.exists():
            self.client.log_artifact(run_id, str(path), artifact_path="checkpoint")

    def stop_trial(self, run_id: str, config: dict[str, Any], reason: str) -> None:
        """End a run a scheduler stopped early: KILLED (never FINISHED) with the reason as a
        tag; no final avg/last/forgetting, which would describe only the tasks it reached."""
        self.client.set_tag(run_id, TAG_STOPPED, reason)
        self.log_text(run_id, yaml.safe_dump(config, sort_keys=True), "config.yaml")
        self._set_status(run_id, "KILLED")

    def abandon_unknown(self, known: set[str], reason: str) -> list[str]:
        """Tag ``TAG_ABANDONED`` with ``reason`` every trial run of this sweep whose trial id is
        not in ``known`` (RUNNING ones also end as KILLED): a run of a trial that Tune's
        restored state lost, whose work the resumed sweep does again under another id; their
        ids."""
        ended = []
        for run in self._search(self._trial_runs_filter()):
            trial_id = run.data.tags.get(TAG_TRIAL)
            if trial_id in known or TAG_ABANDONED in run.data.tags:
                continue
            self.client.set_tag(run.info.run_id, TAG_ABANDONED, reason)
            if run.info.status == "RUNNING":
                self._set_status(run.info.run_id, "KILLED")
            ended.append(trial_id)
        return ended

    def log_text(self, run_id: str, text: str, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(text)
            self.client.log_artifact(run_id, str(path))

    def run_status(self, run_id: str) -> str:
        """As this process last set or found it; asked of MLflow only for a run it never saw."""
        if run_id not in self._status:
            self._status[run_id] = self.client.get_run(run_id).info.status
        return self._status[run_id]

    def end_run(self, run_id: str, status: str) -> None:
        self._set_status(run_id, status)

    def finish_sweep(self, status: str = "FINISHED") -> None:
        if self._parent_id is not None or self._search(self._parent_filter()):
            self.client.set_terminated(self.parent_id, status=status)
