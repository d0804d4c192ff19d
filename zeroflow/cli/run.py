"""``zeroflow run``: one trial in this process (no Ray), tracked in MLflow unless asked not to."""

from __future__ import annotations

import sys

from zeroflow.cli.output import format_result, say


def cmd_run(args) -> int:
    from zeroflow.config import load_config

    path = None
    overrides = list(args.items)
    if overrides and "=" not in overrides[0]:
        path = overrides.pop(0)
    config = load_config(path, overrides)
    say(f"{config.method} / {config.optimizer} on {config.dataset}: loading torch, the data "
         f"and the {config.backbone} backbone")
    from zeroflow.trial import run_trial

    tracker = None
    if args.track:
        from zeroflow.tracking import RunTracker

        tracker = RunTracker(config.to_dict(), RunTracker.key_for(args.checkpoint_dir))
    import tempfile

    from zeroflow.cli.taskbar import TaskBar

    bar = TaskBar()
    # a tracked run keeps its final checkpoint as an artifact: without --checkpoint-dir, the
    # per-task checkpoints go to a temporary folder for that
    scratch = tempfile.TemporaryDirectory(prefix="zf_run_") if tracker and not (
        args.checkpoint_dir) else None
    checkpoint_dir = args.checkpoint_dir or (scratch.name if scratch else None)
    try:
        result = run_trial(config, tracker.report if tracker else None,
                           checkpoint_dir=checkpoint_dir, resume_from=args.resume_from,
                           log=bar.log, on_step=bar.step)
        bar.close()
        if tracker:
            tracker.n_tasks = result.matrix.n_tasks
            try:
                tracker.tracker.log_checkpoint(tracker.run_id, checkpoint_dir)
            except Exception as err:  # noqa: BLE001 - the result stands without the artifact
                print(f"warning: could not log the checkpoint artifact: {err}", file=sys.stderr)
            tracker.finish("FINISHED")
    except BaseException as err:
        bar.close()
        if tracker:
            _finish_quietly(tracker, "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    finally:
        if scratch:
            scratch.cleanup()
    print(format_result(result))
    if tracker:
        print(f"MLflow run {tracker.run_id} in experiment {tracker.tracker.sweep!r}: zeroflow ui")
    return 0


def _finish_quietly(tracker, status: str) -> None:
    """Mark the run ended without letting a tracking problem hide the trial's own error."""
    try:
        tracker.finish(status)
    except Exception as err:  # noqa: BLE001 - the original error is what the user needs
        print(f"warning: could not finish the MLflow run: {err}", file=sys.stderr)
