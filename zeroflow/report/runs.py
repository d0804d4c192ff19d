"""Trial runs read back from MLflow as plain records, one per setting (duplicates resolved).

``mlflow.search_runs`` gives one pandas row per run (params, tags, latest metrics); the per-task
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

from zeroflow.errors import ReportError
from zeroflow.tracking import TAG_MEMORY, TAG_ROLE, default_tracking_uri

FINISHED = "FINISHED"
MEMORY_LABELS = {"cuda_max_allocated": "GPU", "cpu_peak_rss": "CPU-RSS"}
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


def load_runs(experiments: list[str] | None = None, tracking_uri: str | None = None) -> RunSet:
    """The trial runs of ``experiments`` (default: every experiment holding zeroflow trials)."""
    import logging

    import mlflow
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
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        frame = mlflow.search_runs(experiment_ids=list(chosen.values()),
                                   filter_string=f"tags.`{TAG_ROLE}` = 'trial'")
    finally:
        mlflow.set_tracking_uri(previous)
    if frame.empty:
        raise ReportError(f"no zeroflow trial runs in experiment(s) {', '.join(chosen)} of {uri}; "
                          "run `zeroflow sweep SPACE.yaml` or `zeroflow run` first")
    runs = [_run_from_row(row, names) for _, row in frame.iterrows()]
    kept, superseded = dedupe(runs, frame)
    for run in kept:
        if run.finished:
            _add_history(client, run)
    used = sorted({r.experiment for r in kept})
    return RunSet(kept, superseded, used, uri)


def _run_from_row(row, experiment_names: dict[str, str]) -> Run:
    config = {c[len("params."):]: parse_param(row[c]) for c in row.index
              if c.startswith("params.")}
    metrics = {c[len("metrics."):]: float(row[c]) for c in row.index
               if c.startswith("metrics.") and row[c] == row[c]}
    label = row.get(f"tags.{TAG_MEMORY}")
    label = label if isinstance(label, str) and label else None
    name = row.get("tags.mlflow.runName")
    return Run(row["run_id"], experiment_names.get(row["experiment_id"], row["experiment_id"]),
               name if isinstance(name, str) else row["run_id"][:8], row["status"], config,
               metrics, memory_label=label)


def dedupe(runs: list[Run], frame) -> tuple[list[Run], list[tuple[Run, Run]]]:
    """One run per setting: the latest FINISHED one (by end time), else the latest started."""
    times = {row["run_id"]: (_ms(row.get("end_time")), _ms(row.get("start_time")))
             for _, row in frame.iterrows()}
    best: dict[tuple, list[Run]] = {}
    for run in runs:
        best.setdefault(run.setting(without=()), []).append(run)
    kept, superseded = [], []
    for group in best.values():
        group.sort(key=lambda r: (r.finished, times[r.run_id][0] if r.finished else -math.inf,
                                  times[r.run_id][1]), reverse=True)
        kept.append(group[0])
        superseded += [(r, group[0]) for r in group[1:]]
    return kept, superseded


def _ms(stamp) -> float:
    try:
        value = stamp.timestamp()
    except (AttributeError, ValueError):
        return -math.inf
    return value if value == value else -math.inf


def _add_history(client, run: Run) -> None:
    """Derived numbers from the per-task metrics (step = task index).

    train_seconds: the sum of ``train_time_task_s`` over the tasks that trained (steps > 0);
    time_per_epoch_s: that sum / (epochs × tasks that trained); time_per_step_s: that sum / steps;
    forward_passes_per_step: forward passes / steps; memory_gb: peak_memory_mb / 1024.
    """
    hist = {key: {m.step: m.value for m in sorted(client.get_metric_history(run.run_id, key),
                                                    key=lambda m: m.timestamp)}
            for key in _HISTORIES}
    acc = hist["accuracy"]
    run.curve = [acc[t] for t in sorted(acc)]
    steps = hist["steps"]
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
    if "peak_memory_mb" in m:
        m["memory_gb"] = m["peak_memory_mb"] / 1024
