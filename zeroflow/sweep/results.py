"""What a sweep trial reports to the driver, besides its task metrics: the keys and their
meaning, shared by the trainable (which writes them) and the driver's callbacks and summary
(which read them)."""

from __future__ import annotations

# the earlier results (JSON) of a trial that restarted from a checkpoint the driver may never
# have seen: the driver logs the tasks it is missing before this report's own
BACKFILL_KEY = "backfill"
# a trial that stopped on a mistake no retry can mend (a bad config, a diverging loss, an unsafe
# checkpoint): its one-line reason; the trial ends once instead of being retried
ERROR_KEY = "zeroflow_error"


def reported_last_task(result: dict | None) -> bool:
    """Whether a trial's (last) reported result is its final task's: a trial stopped early, or
    still running, has reported fewer tasks than ``n_tasks``."""
    result = result or {}
    return "n_tasks" in result and int(result.get("task", -1)) == int(result["n_tasks"]) - 1


def failure(result: dict | None) -> str | None:
    """The one-line reason a trial ended on a mistake (``ERROR_KEY``), or None."""
    return (result or {}).get(ERROR_KEY) or None
