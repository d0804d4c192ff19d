"""The Ray Tune trainable: ``run_trial`` reporting a checkpoint after every task.

Each trial reports after every task with a checkpoint (``tune.report(..., checkpoint=...)``), so
a retried or resumed trial restarts from its newest finished task. A trial that stops on a
mistake no retry can mend (``ZeroflowError.retryable`` false) reports its reason once
(``results.ERROR_KEY``) and ends, instead of being retried into the same error.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from zeroflow.sweep import checkpoints
from zeroflow.sweep.results import BACKFILL_KEY, ERROR_KEY, reported_last_task
from zeroflow.sweep.space import trial_config


def zeroflow_trainable(config: dict) -> None:
    """Ray Tune function trainable: ``run_trial`` with a checkpoint reported after each task.

    It starts from the newest complete checkpoint in its own storage folder (Tune's state may
    name an older one, ``zeroflow.sweep.checkpoints``); if that is the last task's, it reports
    that final result again instead of training."""
    import ray
    from ray import tune

    from zeroflow.checkpoint import CHECKPOINT_FILE
    from zeroflow.errors import ZeroflowError
    from zeroflow.tracking import SERIES_KEY
    from zeroflow.trial import run_trial

    where = {"node_id": ray.get_runtime_context().get_node_id(),
             "node_ip": ray.util.get_node_ip_address()}
    start, history = _start_point(tune.get_checkpoint())
    backfill = list(history)  # results the driver may not have logged: sent with the first report

    def send(result: dict, source_dir: str) -> None:
        with tempfile.TemporaryDirectory(prefix="zf_ckpt_") as snapshot:
            shutil.copy(Path(source_dir) / CHECKPOINT_FILE, snapshot)
            checkpoints.write_marker(snapshot, history + [result])
            out = {**result, BACKFILL_KEY: json.dumps(backfill)} if backfill else result
            tune.report(out, checkpoint=tune.Checkpoint.from_directory(snapshot))
        history.append(result)  # tune.report has persisted the checkpoint when it returns
        backfill.clear()

    def report(rep) -> None:
        result = {**rep.metrics, "task": rep.task, "n_tasks": rep.n_tasks,
                  "start_task": rep.start_task, "memory_label": rep.memory_label, **where}
        if rep.series:  # step-level metrics travel as JSON text; the driver logs them
            result[SERIES_KEY] = json.dumps(rep.series)
        send(result, rep.checkpoint_dir)

    with tempfile.TemporaryDirectory(prefix="zf_trial_") as workdir, \
            tempfile.TemporaryDirectory(prefix="zf_restore_") as restore:
        resume_from = start.to_directory(restore) if start is not None else None
        if history and reported_last_task(history[-1]):
            final = history.pop()  # finished before the driver knew: report it, train nothing
            backfill.pop()
            send({**final, "replayed": True}, resume_from)
            return
        try:
            run_trial(trial_config(config), report, checkpoint_dir=workdir,
                      resume_from=resume_from)
        except ZeroflowError as err:
            if err.retryable:
                raise
            # a mistake a retry would only repeat: the trial ends once, with its reason
            reason = str(err)
            if start is not None:  # name the checkpoint where it lives, not our copy of it
                reason = reason.replace(str(Path(restore) / CHECKPOINT_FILE), _location(start))
            tune.report({ERROR_KEY: reason, **where})


def _start_point(restored):
    """(the checkpoint to start from or None, the results reported up to it): the newest complete
    one in this trial's storage folder, else what Tune restored (a sweep launched before
    checkpoints carried results)."""
    from ray import tune

    storage = tune.get_context().get_storage()
    # Ray numbers a trial's next checkpoint folder from the ones its driver had recorded; one
    # written but not yet recorded when a node or the driver died would be overwritten in
    # place (and a same-sized trial.pt could pair with the older marker): write past them all
    storage.current_checkpoint_index = max(
        storage.current_checkpoint_index,
        checkpoints.highest_index(storage.storage_filesystem, storage.trial_fs_path))
    found = checkpoints.newest(storage.storage_filesystem, storage.trial_fs_path)
    if found is None:
        return restored, []
    return tune.Checkpoint(found.path, storage.storage_filesystem), found.results


def _location(checkpoint) -> str:
    """``checkpoint``'s trial.pt as a user finds it: a local path or a storage URI."""
    from zeroflow.checkpoint import CHECKPOINT_FILE

    kind = checkpoint.filesystem.type_name
    path = f"{checkpoint.path}/{CHECKPOINT_FILE}"
    return path if kind == "local" else f"{kind}://{path}"
