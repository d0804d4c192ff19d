"""The MLflow tags by which zeroflow finds its runs again (a resumed sweep continues its
trials' runs instead of opening new ones), and the result key of step-level series."""

TAG_SWEEP = "zeroflow.sweep"
TAG_ROLE = "zeroflow.role"
TAG_TRIAL = "zeroflow.trial_id"
TAG_SWEEP_ID = "zeroflow.sweep_id"
# what ``peak_memory_mb`` measured: ``cuda_max_allocated`` (GPU) or ``cpu_peak_rss`` (CPU)
TAG_MEMORY = "zeroflow.memory_label"
# where a sweep trial ran (its latest task): Ray's node id and that node's IP address
TAG_NODE_ID = "zeroflow.node_id"
TAG_NODE_IP = "zeroflow.node_ip"
# set on a trial a scheduler stopped early (ASHA, median stopping): why, and after which task
TAG_STOPPED = "zeroflow.stopped_early"
# set on a sweep trial that ended on a mistake a retry cannot mend: its one-line reason
TAG_ERROR = "zeroflow.error"
# set on a sweep trial's run that a resumed sweep no longer knows (Tune's saved state predates
# the trial: a searcher's suggestion made just before the driver died); why, in one line
TAG_ABANDONED = "zeroflow.abandoned"
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"

SERIES_KEY = "series"  # a reported result's step-level series, as JSON text
