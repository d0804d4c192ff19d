"""A ``tune_spaces`` file → a Ray Tune sweep over ``run_trial``, tracked in MLflow; and resume.

One module per concern: ``space`` (the space-file language), ``trainable`` (the Ray trainable),
``driver`` (launch and resume), ``plan`` (the shipped spaces and a space's trials before Ray
starts), ``summary`` (a finished sweep's table, failures and best trial), ``search`` (searchers
and schedulers), ``progress`` (the status lines), ``storage`` (where a sweep lives),
``checkpoints`` (a trial's checkpoints found again in storage), ``mlflow_callback`` (the
driver's MLflow logging as a Tune callback, over ``zeroflow.tracking``). The names below are
the public ones.
"""

from zeroflow.sweep.driver import DEFAULT_STORAGE, SPACE_COPY, resume_sweep, run_sweep, saved_space
from zeroflow.sweep.space import GRID_POINT, Space, load_space, trial_config, trial_name
from zeroflow.sweep.summary import best_trial, failed_trials, summary_table
from zeroflow.sweep.trainable import zeroflow_trainable


def __getattr__(name):
    # imported on use (it needs Ray); sweeps launched before the split pickled it by this name
    if name == "MLflowSweepCallback":
        from zeroflow.sweep.mlflow_callback import MLflowSweepCallback

        return MLflowSweepCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DEFAULT_STORAGE", "GRID_POINT", "SPACE_COPY", "Space", "best_trial",
           "failed_trials", "load_space",
           "resume_sweep", "run_sweep", "saved_space", "summary_table", "trial_config",
           "trial_name", "zeroflow_trainable"]
