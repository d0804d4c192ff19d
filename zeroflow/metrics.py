"""The accuracy matrix and what derives from it, plus memory, forward-pass and time meters.

Definitions (PILOT's, which the ZeroFlow paper inherits), with tasks 0..T:

* ``a[t, j]``: top-1 accuracy (%) on the test images of task j's classes after training task t
  (j <= t), predicting over all classes seen so far (no task id);
* accuracy after task t: top-1 over every test image of every class seen so far
  (sample-weighted);
* avg: the mean of that over all tasks, the last included; last: its value after task T;
* forgetting (the "max over the past" form): mean over j < T of
  ``max_{j <= t <= T} a[t, j] - a[T, j]``; 0 after the first task (nothing to forget yet).
"""

from __future__ import annotations

import ctypes
import gc
import math
import resource
import sys
import time

import numpy as np
import torch

# The per-task metrics a trial reports after every task (``TaskReport.metrics``), named once
# here: the loop's own, then the analyses' (observers), plus two families by prefix,
# ``accuracy_task_<j>`` (a[t, j]) and ``sharpness*`` (each radius). Tracking logs exactly these
# of a reported result (Ray adds its own bookkeeping); the loop refuses a metric not named here.
TASK_METRICS = ("accuracy", "avg_accuracy", "forgetting", "peak_memory_mb", "train_memory_mb",
                "forward_passes",
                "forward_passes_task", "steps", "time_task_s", "train_time_task_s",
                "time_per_step_s", "probe_forward_passes", "hessian_top_eig")
TASK_METRIC_PREFIXES = ("accuracy_task_", "sharpness")


def is_task_metric(name: str) -> bool:
    """Whether ``name`` is a per-task metric (``TASK_METRICS`` or one of the prefixed families)."""
    return name in TASK_METRICS or name.startswith(TASK_METRIC_PREFIXES)


def check_task_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` unchanged if every name is a per-task metric; else a ``ValueError`` saying
    where to declare the new one (tracking would silently leave it out)."""
    unknown = [k for k in metrics if not is_task_metric(k)]
    if unknown:
        raise ValueError(f"per-task metric(s) {', '.join(unknown)} are not declared: add them to "
                         "zeroflow.metrics.TASK_METRICS")
    return metrics


class AccuracyMatrix:
    """``a[t, j]`` per task pair and the seen-class accuracy after each task."""

    def __init__(self, n_tasks: int):
        self.n_tasks = n_tasks
        self.a = np.full((n_tasks, n_tasks), np.nan)
        self.seen = np.full(n_tasks, np.nan)

    def record(self, t: int, per_task: list[float], seen: float) -> None:
        if len(per_task) != t + 1:
            raise ValueError(f"task {t} needs {t + 1} per-task accuracies, got {len(per_task)}")
        self.a[t, : t + 1] = per_task
        self.seen[t] = seen

    @property
    def done(self) -> int:
        """Number of tasks recorded."""
        return int(np.sum(~np.isnan(self.seen)))

    def avg(self, upto: int | None = None) -> float:
        t = self.done - 1 if upto is None else upto
        return float(np.mean(self.seen[: t + 1]))

    def last(self, upto: int | None = None) -> float:
        t = self.done - 1 if upto is None else upto
        return float(self.seen[t])

    def forgetting(self, upto: int | None = None) -> float:
        t = self.done - 1 if upto is None else upto
        if t <= 0:
            return 0.0
        drops = [np.max(self.a[j : t + 1, j]) - self.a[t, j] for j in range(t)]
        return float(np.mean(drops))

    def to_csv(self) -> str:
        header = "after_task," + ",".join(f"task_{j}" for j in range(self.n_tasks)) + ",seen"
        lines = [header]
        for t in range(self.done):
            cells = ["" if math.isnan(v) else f"{v:.4f}" for v in self.a[t]]
            lines.append(f"{t}," + ",".join(cells) + f",{self.seen[t]:.4f}")
        return "\n".join(lines) + "\n"

    def state_dict(self) -> dict:
        """Plain nested lists (NaN for cells not reached), loadable with weights_only."""
        return {"a": self.a.tolist(), "seen": self.seen.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.a, self.seen = np.array(state["a"]), np.array(state["seen"])


def accuracy_by_task(
    predictions: torch.Tensor, labels: torch.Tensor, task_of_label: torch.Tensor, n_seen_tasks: int
) -> tuple[list[float], float]:
    """(per-task accuracies %, overall %) for one evaluation on all seen classes."""
    correct = predictions == labels
    tasks = task_of_label[labels]
    per_task = []
    for j in range(n_seen_tasks):
        mask = tasks == j
        per_task.append(100.0 * float(correct[mask].float().mean()) if mask.any() else math.nan)
    return per_task, 100.0 * float(correct.float().mean())


class PeakMemory:
    """Peak memory in MB, absolute (``peak_mb``) and the training's own (``train_mb``).

    On GPU both are CUDA ``max_memory_allocated`` (the paper's Table 2 figure: weights, states
    and activations). On CPU the absolute figure is the process's peak RSS, which the torch
    runtime dominates (about 1 GB whatever the optimizer); the training's own figure is the
    rise of that peak over the RSS when this object is made, right after the learner and its
    data are built: gradients, optimizer states, activations kept for backward, perturbation
    buffers. Labels say which quantity each is. On Linux the peak is reset to the current RSS
    at creation (``/proc/self/clear_refs``), so a process that runs several trials (a reused
    Ray actor) reports this trial's; elsewhere, or where the reset is refused, the absolute
    peak is the process lifetime's and the rise is measured from the RSS at creation.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.label = "cuda_max_allocated" if self.cuda else "cpu_peak_rss"
        self.train_label = "cuda_max_allocated" if self.cuda else "cpu_rss_rise"
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(device)
        else:
            _reset_peak_rss()
        self.device = device
        self.base_mb = 0.0 if self.cuda else _rss_mb()

    def peak_mb(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        hwm = _linux_status_kb("VmHWM:")
        if hwm is not None:
            return hwm / 2**10
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss / 2**20 if sys.platform == "darwin" else rss / 2**10

    def train_mb(self) -> float:
        """The training's own peak: on CPU the peak RSS above the RSS at creation."""
        if self.cuda:
            return self.peak_mb()
        return max(0.0, self.peak_mb() - self.base_mb)


def _rss_mb() -> float:
    """This process's resident set now, in MB (Linux; elsewhere the peak so far)."""
    rss = _linux_status_kb("VmRSS:")
    if rss is not None:
        return rss / 2**10
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _reset_peak_rss() -> None:
    """Linux: set this process's peak RSS (VmHWM) to its current RSS; a no-op elsewhere.

    Memory an earlier trial freed is first handed back to the OS where the allocator allows
    (``gc.collect`` and glibc's ``malloc_trim``), so it does not stay counted as resident."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _linux_status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` figure in kB (``VmHWM:``, ``VmRSS:``); None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class Stopwatch:
    """Wall time since creation."""

    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start
