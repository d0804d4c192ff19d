"""``RunTracker``: MLflow for one ``zeroflow run`` trial, fed by ``run_trial``'s reporter."""

from __future__ import annotations

import os
from typing import Any

from zeroflow.tracking.results import task_metrics
from zeroflow.tracking.sweep_tracker import SweepTracker
from zeroflow.tracking.tags import TAG_MEMORY


class RunTracker:
    """MLflow for one ``zeroflow run`` trial: a single run in experiment ``zeroflow-run``,
    fed by ``run_trial``'s reporter; its ``checkpoint_dir`` (if any) names it for resume."""

    EXPERIMENT = "zeroflow-run"

    def __init__(self, config: dict[str, Any], key: str, tracking_uri: str | None = None):
        self.tracker = SweepTracker(self.EXPERIMENT, tracking_uri)
        self.config = config
        self.name = f"{config['method']}/{config['optimizer']}/{config['dataset']}"
        self.run_id = self.tracker.trial_run(key, self.name, config, nested=False, reopen=True)
        self.n_tasks = 0

    @staticmethod
    def key_for(checkpoint_dir: str | None) -> str:
        """A run's key: its checkpoint folder (so a resumed run continues its MLflow run)."""
        import hashlib
        import uuid

        if checkpoint_dir is None:
            return uuid.uuid4().hex
        return hashlib.sha1(os.path.abspath(checkpoint_dir).encode()).hexdigest()

    def report(self, report) -> None:
        self.n_tasks = report.n_tasks
        self.tracker.log_task(self.run_id, report.task, task_metrics(report.metrics),
                              {TAG_MEMORY: report.memory_label}, report.series)

    def finish(self, status: str) -> None:
        self.tracker.finish_trial(self.run_id, self.config, max(self.n_tasks, 1),
                                  f"zeroflow run: {self.name}", status)
