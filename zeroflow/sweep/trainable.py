"""The Ray Tune trainable: ``run_trial`` reporting a checkpoint after every task.

Each trial reports after every task with a checkpoint (``tune.report(..., checkpoint=...)``), so
a retried trial restarts from its last finished task.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from zeroflow.sweep.space import trial_config


def reported_last_task(result: dict | None) -> bool:
    """Whether a trial's (last) reported result is its final task's: a trial stopped early, or
    still running, has reported fewer tasks than ``n_tasks``."""
    result = result or {}
    return "n_tasks" in result and int(result.get("task", -1)) == int(result["n_tasks"]) - 1


def zeroflow_trainable(config: dict) -> None:
    """Ray Tune function trainable: ``run_trial`` with a checkpoint reported after each task."""
    import ray
    from ray import tune

    from zeroflow.checkpoint import CHECKPOINT_FILE
    from zeroflow.tracking import SERIES_KEY
    from zeroflow.trial import run_trial

    where = {"node_id": ray.get_runtime_context().get_node_id(),
             "node_ip": ray.util.get_node_ip_address()}

    resume_from = None
    restored = tune.get_checkpoint()
    if restored is not None:
        resume_from = restored.to_directory(tempfile.mkdtemp(prefix="zf_restore_"))
    workdir = tempfile.mkdtemp(prefix="zf_trial_")

    def report(rep) -> None:
        snapshot = tempfile.mkdtemp(prefix="zf_ckpt_")
        try:
            shutil.copy(Path(rep.checkpoint_dir) / CHECKPOINT_FILE, snapshot)
            result = {**rep.metrics, "task": rep.task, "n_tasks": rep.n_tasks,
                      "start_task": rep.start_task, "memory_label": rep.memory_label, **where}
            if rep.series:  # step-level metrics travel as JSON text; the driver logs them
                result[SERIES_KEY] = json.dumps(rep.series)
            tune.report(result, checkpoint=tune.Checkpoint.from_directory(snapshot))
        finally:  # tune.report has persisted the checkpoint by the time it returns
            shutil.rmtree(snapshot, ignore_errors=True)

    try:
        run_trial(trial_config(config), report, checkpoint_dir=workdir, resume_from=resume_from)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if resume_from is not None:
            shutil.rmtree(resume_from, ignore_errors=True)
