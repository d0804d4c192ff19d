"""Everything that talks to MLflow, one module per concern:

- ``tags``: the tags by which runs are found again, and the result key of step-level series;
- ``store``: the tracking URI policy (SQLite in the launch directory unless
  ``MLFLOW_TRACKING_URI`` says otherwise) and where artifacts go;
- ``results``: what a reported result logs (its per-task metrics, named in
  ``zeroflow.metrics``; series; flat params) and the accuracy matrix rebuilt from logged metrics;
- ``sweep_tracker``: ``SweepTracker``, the one writer of a sweep's runs, and the accuracy-curve
  artifact;
- ``run_tracker``: ``RunTracker``, one ``zeroflow run`` trial as one run.

One experiment per sweep, a parent run for the sweep and one child run per trial, params = the
flattened trial config, metrics per task with ``step = task index``. Only the driver writes (one
writer per SQLite file). The sweep driver's Ray Tune callback is
``zeroflow.sweep.mlflow_callback.MLflowSweepCallback``. The names below are the public ones;
importing this package needs neither torch nor MLflow (MLflow is imported on use).
"""

from zeroflow.tracking.results import flatten, matrix_from_history, series_points, task_metrics
from zeroflow.tracking.run_tracker import RunTracker
from zeroflow.tracking.store import artifact_location, default_tracking_uri, make_private_store
from zeroflow.tracking.sweep_tracker import SweepTracker, plot_accuracy_curve
from zeroflow.tracking.tags import (
    PARENT_TAG,
    RUN_NAME_TAG,
    SERIES_KEY,
    TAG_ABANDONED,
    TAG_ERROR,
    TAG_MEMORY,
    TAG_NODE_ID,
    TAG_NODE_IP,
    TAG_ROLE,
    TAG_STOPPED,
    TAG_SWEEP,
    TAG_SWEEP_ID,
    TAG_TRIAL,
)

__all__ = ["PARENT_TAG", "RUN_NAME_TAG", "SERIES_KEY", "TAG_ABANDONED",
           "TAG_ERROR", "TAG_MEMORY", "TAG_NODE_ID",
           "TAG_NODE_IP", "TAG_ROLE", "TAG_STOPPED", "TAG_SWEEP", "TAG_SWEEP_ID", "TAG_TRIAL",
           "RunTracker",
           "SweepTracker", "artifact_location", "default_tracking_uri", "flatten",
           "make_private_store",
           "matrix_from_history", "plot_accuracy_curve", "series_points", "task_metrics"]
