"""Trial runs read back from MLflow as plain records, one per setting (duplicates resolved).

``MlflowClient.search_runs`` gives each run's params, tags and latest metrics; the per-task
histories that the tables need (accuracy after each task, training time and steps per task) come
from ``MlflowClient.get_metric_history``. No Ray is involved.

A *setting* is a run's full trial config, seed included. Several runs of one setting (a trial
relaunched after an interruption, a sweep run twice, the same config in two merged experiments)
count once: the latest FINISHED run, or the latest run when none finished. The others are kept
in ``RunSet.superseded`` so the report can say how many were left out and why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeroflow.errors import ReportError
from zeroflow.tracking import (
    TAG_ABANDONED,
    TAG_MEMORY,
    TAG_ROLE,
    TAG_STOPPED,
    default_tracking_uri,
)

FINISHED = "FINISHED"
MEMORY_LABELS = {"cuda_max_allocated": "GPU", "cpu_peak_rss": "CPU-RSS",
                 "cpu_rss_rise": "CPU-RSS rise"}
_HISTORIES = ("accuracy", "train_time_task_s", "steps")


@dataclass
class Run:
    """One trial run: its config (typed params), status and the numbers the report uses."""

    run_id: str
    experiment: str
    name: str
    status: str
    config: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[float] = field(default_factory=list)  # accuracy after each task
    memory_label: str | None = None  # PeakMemory.label as logged, None if not logged
    # insight analyses, where logged: task_loss_<j> → {global step: loss}; the cumulative
    # training steps after each task (task boundaries); sharpness after each task
    task_losses: dict[int, dict[int, float]] = field(default_factory=dict)
    task_ends: list[int] = field(default_factory=list)
    sharpness: list[float] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    @property
    def memory(self) -> str:
        if self.memory_label is None:
            return "not logged"
        return MEMORY_LABELS.get(self.memory_label, self.memory_label)

    def setting(self, without: tuple[str, ...] = ("seed",)) -> tuple:
        return tuple(sorted((k, v) for k, v in self.config.items() if k not in without))


@dataclass
class RunSet:
    runs: list[Run]  # one per setting
    superseded: list[tuple[Run, Run]]  # (left out, the run counted instead)
    experiments: list[str]
    uri: str

    def keys(self) -> list[str]:
        return sorted({k for r in self.runs for k in r.config})


def parse_param(text: Any) -> Any:
    """A logged param string back to a value: None, bool, int, float or the string itself."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def load_runs(experiments: list[str] | None = None, tracking_uri: str | None = None,
              include_stopped: bool = False) -> RunSet:
    """The trial runs of ``experiments`` (default: every experiment holding zeroflow trials);
    trials a scheduler stopped early (tag ``zeroflow.stopped_early``) only if asked; never runs a
    resumed sweep abandoned (tag ``zeroflow.abandoned``: their work was redone by others)."""
    import logging

    from mlflow.tracking import MlflowClient

    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        raise ReportError(f"no MLflow store at {uri}: run `zeroflow report` where the sweep ran "
                          "(beside its mlflow.db) or set MLFLOW_TRACKING_URI")
    client = MlflowClient(uri)
    known = {e.name: e.experiment_id for e in client.search_experiments()}
    if experiments:
        for name in experiments:
            if name not in known:
                raise ReportError(f"no experiment named {name!r} in {uri}; known: "
                                  f"{', '.join(sorted(known)) or 'none'}")
        chosen = {name: known[name] for name in experiments}
    else:
        chosen = known
    names = {v: k for k, v in chosen.items()}
    found = [r for r in search_trials(client, list(chosen.values()))
             if TAG_ABANDONED not in r.data.tags]
    if not include_stopped:
        found = [r for r in found if TAG_STOPPED not in r.data.tags]
    if not found:
        raise ReportError(f"no zeroflow trial runs in experiment(s) {', '.join(chosen)} of {uri}; "
                          "run `zeroflow sweep SPACE.yaml` or `zeroflow run` first")
    runs = [_run_from_entity(run, names) for run in found]
    kept, superseded = dedupe(runs, {r.info.run_id: (r.info.end_time, r.info.start_time)
                                     for r in found})
    for run in kept:
        if run.finished:
            _add_history(client, run)
    used = sorted({r.experiment for r in kept})
    return RunSet(kept, superseded, used, uri)


def search_trials(client, experiment_ids: list[str]) -> list:
    """Every trial run (tag ``zeroflow.role=trial``) of the experiments, all pages.

    ``MlflowClient.search_runs`` rather than ``mlflow.search_runs``: the latter reads the
    process-wide tracking URI, and setting that also rewrites ``MLFLOW_TRACKING_URI``."""
    out, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=f"tags.`{TAG_ROLE}` = 'trial'",
                                  max_results=1000, page_token=token)
        out += list(page)
        token = page.token
        if not token:
            return out


def _run_from_entity(run, experiment_names: dict[str, str]) -> Run:
    info, data = run.info, run.data
    config = {k: parse_param(v) for k, v in data.params.items()}
    metrics = {k: float(v) for k, v in data.metrics.items() if v == v}
    return Run(info.run_id, experiment_names.get(info.experiment_id, info.experiment_id),
               data.tags.get("mlflow.runName") or info.run_id[:8], info.status, config, metrics,
               memory_label=data.tags.get(TAG_MEMORY) or None)


def dedupe(runs: list[Run], times: dict[str, tuple]) -> tuple[list[Run], list[tuple[Run, Run]]]:
    """One run per setting: the latest FINISHED one (by end time), else the latest started.
    ``times``: run id → (end, start) in ms (None while running)."""
    best: dict[tuple, list[Run]] = {}
    for run in runs:
        best.setdefault(run.setting(without=()), []).append(run)
    kept, superseded = [], []
    for group in best.values():
        group.sort(key=lambda r: (r.finished, (times[r.run_id][0] or 0) if r.finished else 0,
                                  times[r.run_id][1] or 0), reverse=True)
        kept.append(group[0])
        superseded += [(r, group[0]) for r in group[1:]]
    return kept, superseded


def _add_history(client, run: Run) -> None:
    """Derived numbers from the per-task metrics (step = task index).

    train_seconds: the sum of ``train_time_task_s`` over the tasks that trained (steps > 0);
    time_per_epoch_s: that sum / (epochs × tasks that trained); time_per_step_s: that sum / steps;
    forward_passes_per_step: forward passes / steps; memory_mb: the training's own peak
    (``train_memory_mb``: on CPU the RSS rise over the built learner, labelled so; a run logged
    before it existed falls back to ``peak_memory_mb``); memory_gb: memory_mb / 1024;
    sharpness_mean: the mean over tasks of ``sharpness`` (where logged).
    """
    probed = [k for k in run.metrics if k.startswith("task_loss_") and k[10:].isdigit()]
    keys = _HISTORIES + tuple(probed) + (("sharpness",) if "sharpness" in run.metrics else ())
    hist = {key: {m.step: m.value for m in sorted(client.get_metric_history(run.run_id, key),
                                                    key=lambda m: m.timestamp)}
            for key in keys}
    acc = hist["accuracy"]
    run.curve = [acc[t] for t in sorted(acc)]
    steps = hist["steps"]
    run.task_ends = [int(steps[t]) for t in sorted(steps)]
    run.task_losses = {int(k[10:]): hist[k] for k in probed}
    if "sharpness" in hist:
        run.sharpness = [hist["sharpness"][t] for t in sorted(hist["sharpness"])]
        run.metrics["sharpness_mean"] = float(np.mean(run.sharpness))
    trained, before = [], 0.0
    for t in sorted(steps):
        if steps[t] > before:
            trained.append(t)
        before = steps[t]
    m = run.metrics
    seconds = [hist["train_time_task_s"][t] for t in trained if t in hist["train_time_task_s"]]
    total_steps = m.get("steps", math.nan)
    if seconds and len(seconds) == len(trained):
        m["train_seconds"] = sum(seconds)
        epochs = run.config.get("epochs")
        if isinstance(epochs, int) and epochs > 0:
            m["time_per_epoch_s"] = sum(seconds) / (epochs * len(trained))
        if total_steps > 0:
            m["time_per_step_s"] = sum(seconds) / total_steps
    if total_steps > 0 and "forward_passes" in m:
        m["forward_passes_per_step"] = m["forward_passes"] / total_steps
    if "train_memory_mb" in m:
        m["memory_mb"] = m["train_memory_mb"]
        if run.memory_label == "cpu_peak_rss":
            run.memory_label = "cpu_rss_rise"
    elif "peak_memory_mb" in m:
        m["memory_mb"] = m["peak_memory_mb"]
    if "memory_mb" in m:
        m["memory_gb"] = m["memory_mb"] / 1024
