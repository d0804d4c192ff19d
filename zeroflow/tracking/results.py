"""What is logged, read from what a trial reports and back: the per-task metrics of a result,
step-level series, flat params, and the accuracy matrix rebuilt from logged metrics."""

from __future__ import annotations

import math
from typing import Any


def task_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The per-task metrics in a reported result (``zeroflow.metrics.is_task_metric``; drops
    Ray's bookkeeping: pid, time, config)."""
    from zeroflow.metrics import is_task_metric  # on use: importing tracking needs no torch

    out = {}
    for key, value in result.items():
        if is_task_metric(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out


def series_points(series: dict | str | None) -> list[tuple[str, int, float]]:
    """(name, step, value) of a task's step-level series (a dict, or its JSON text)."""
    if not series:
        return []
    if isinstance(series, str):
        import json

        series = json.loads(series)
    return [(name, int(step), float(value)) for name, points in series.items()
            for step, value in points]


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = "None" if value is None else str(value)
    return out


def matrix_from_history(history: dict[str, dict[int, float]], n_tasks: int):
    """Rebuild the accuracy matrix from logged per-task metrics (``name → {step: value}``)."""
    from zeroflow.metrics import AccuracyMatrix

    m = AccuracyMatrix(n_tasks)
    for t in sorted(history.get("accuracy", {})):
        per_task = [history.get(f"accuracy_task_{j}", {}).get(t, math.nan) for j in range(t + 1)]
        m.record(t, per_task, history["accuracy"][t])
    return m
