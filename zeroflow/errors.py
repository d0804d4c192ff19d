"""The project's exception types: each message names the problem and the fix.

The CLI prints these in one line and exits non-zero without a traceback.
"""


class ZeroflowError(Exception):
    """Base class of every user-facing error. ``retryable``: whether running the same trial
    again could succeed (a sweep retries only those; the others end the trial once)."""

    retryable = False


class ConfigError(ZeroflowError, ValueError):
    """A wrong config key or value (names the key and the allowed values)."""


class DataError(ZeroflowError):
    """A missing dataset folder or a wrong layout (names the path and the expected layout)."""


class WeightsError(ZeroflowError):
    """Pretrained weights that cannot be found or loaded."""


class DivergenceError(ZeroflowError):
    """A NaN or inf loss (names task, step and the likely fix)."""


class CheckpointError(ZeroflowError):
    """A task checkpoint that cannot be loaded safely (names the file, the reason, the fix)."""


class ReportError(ZeroflowError):
    """A report that cannot be made: no store, no runs, an unknown experiment or pivot key."""


class QueryWorkerError(ZeroflowError):
    """A query worker that failed, could not be (re-)created, or whose replica differs."""

    retryable = True  # a lost node or actor: a retry on other nodes can succeed


class PluginError(ConfigError):
    """A plugin module that cannot be found or fails while loading (names it and the fix)."""
