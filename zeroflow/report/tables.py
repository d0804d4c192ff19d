"""The report's tables: Table 1's layout (method × optimizer family and strategy), Table 2
(efficiency), Tables 3–4 (historical smoothing, sparsity), any pivot of swept keys (all grids
of ``grid.metric_table``), and sharpness against forgetting with Spearman's ρ."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from zeroflow.report.grid import Metric, Table, metric_table
from zeroflow.report.ordering import ABSENT, fmt_value, rank
from zeroflow.report.runs import RunSet

ACCURACY = (Metric("avg", "Avg"), Metric("last", "Last"), Metric("forgetting", "Fgt"))
EFFICIENCY = (Metric("memory", "memory", label_only=True, paper=False),
              Metric("memory_gb", "memory GB"), Metric("time_per_epoch_s", "s/epoch"),
              Metric("time_per_step_s", "s/step", 3, paper=False),
              Metric("forward_passes_per_step", "passes/step", 1, paper=False))



_ACC_CAPTION = ("Top-1 accuracy (%): Avg over tasks, Last after the final task, Fgt = "
                "forgetting. Mean ± sample std (numpy std, ddof=1) over the finished seeds "
                "(seeds = how many). paper: the published value for the same dataset, method, "
                "optimizer and q (— where the paper has no such cell); Δ = ours − paper. "
                "– : no value of ours, the note says why.")


def _optimizer_columns(value) -> list[str]:
    """An optimizer as Table 1's two columns: its family and strategy (registry fields)."""
    from zeroflow import optim

    if value is ABSENT or value not in optim.REGISTRY:
        return [fmt_value(value), ""]
    spec = optim.REGISTRY[value]
    return [spec.family, spec.strategy]


def table1(runset: RunSet) -> Table:
    """Rows: method, optimizer family, strategy; columns: Avg/Last/Fgt per dataset."""
    table = metric_table(
        "table1", "Table 1: accuracy and forgetting (method × optimizer × strategy)",
        _ACC_CAPTION, runset.runs, ["method", "optimizer"], ["dataset"], ACCURACY, True,
        labels={"optimizer": (["optimizer", "strategy"], _optimizer_columns)})
    table.remarks += superseded_remarks(runset)
    return table


def table2(runset: RunSet) -> Table:
    caption = ("Memory in GB (= MB / 1024), the training's own peak: GPU = CUDA max allocated "
               "(as the paper's), CPU-RSS rise = the process's peak resident set above the one "
               "after the learner and data were built (gradients, states, activations, "
               "perturbations; the torch runtime's ~1 GB left out), CPU-RSS = the absolute peak "
               "(runs logged before the rise was). s/epoch = the training time of the tasks that "
               "trained (steps > 0) / "
               "(epochs × those tasks), from the per-task train_time_task_s; s/step = the same "
               "time / all steps; passes/step = forward passes / steps. Means ± sample std over "
               "seeds; paper and Δ as in Table 1 (the paper's runtime is seconds per epoch on "
               "its GPU).")
    return metric_table("table2", "Table 2: memory and runtime per optimizer (and q)", caption,
                        runset.runs, ["dataset", "method", "optimizer", "q"], [], EFFICIENCY,
                        False)


def enhancement_table(runset: RunSet, key: str) -> Table | None:
    """Table 3 (key="history") or 4 ("sparsity"): the settings whose dataset, method and
    optimizer also ran with ``key`` ≠ 0, other enhancements off; None if none did."""
    other = {"history": "sparsity", "sparsity": "history"}[key]
    swept = {(r.config.get("dataset"), r.config.get("method"), r.config.get("optimizer"))
             for r in runset.runs if (r.config.get(key) or 0) != 0}
    runs = [r for r in runset.runs
            if (r.config.get("dataset"), r.config.get("method"), r.config.get("optimizer"))
            in swept and not (r.config.get(other) or 0) and not (r.config.get("hybrid_epochs")
                                                                   or 0)]
    if not runs:
        return None
    number, what = (3, "historical smoothing α") if key == "history" else (4, "sparsity ratio")
    return metric_table(f"table{number}", f"Table {number}: {what} ({key}=)", _ACC_CAPTION,
                        runs, ["dataset", "method", "optimizer", key], [], ACCURACY, False)


def pivot(runset: RunSet, rows: list[str], cols: list[str]) -> Table:
    caption = (f"Avg / Last / Fgt (%) by {', '.join(rows)}"
               + (f" × {', '.join(cols)}" if cols else "") + ": every combination of the values "
               "that ran. " + _ACC_CAPTION.split(". ", 1)[1])
    return metric_table("pivot", f"Pivot: {', '.join(rows)} × {', '.join(cols) or '—'}",
                        caption, runset.runs, rows, cols, ACCURACY, True, paper=None)


def superseded_remarks(runset: RunSet) -> list[str]:
    if not runset.superseded:
        return []
    names = "; ".join(f"{old.name!r} ({old.status}, {old.experiment}) → {new.name!r} "
                      f"({new.status}, {new.experiment})" for old, new in runset.superseded[:10])
    more = f"; and {len(runset.superseded) - 10} more" if len(runset.superseded) > 10 else ""
    return [f"{len(runset.superseded)} duplicate run(s) of a setting (same full config, seed "
            f"included) not counted; the latest FINISHED one counts: {names}{more}."]


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rank correlation: Pearson's r of the ranks (ties share their mean rank);
    NaN with fewer than 3 pairs or a constant side."""
    if len(x) != len(y) or len(x) < 3:
        return math.nan
    rx = pd.Series(x, dtype=float).rank().to_numpy()
    ry = pd.Series(y, dtype=float).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def sharpness_table(runset: RunSet) -> Table | None:
    """Sharpness against forgetting, one row per finished run that logged ``sharpness``
    (mean over its tasks), with Spearman's ρ over those runs; None if no run logged it."""
    runs = [r for r in runset.runs if r.finished and "sharpness_mean" in r.metrics
            and math.isfinite(r.metrics.get("forgetting", math.nan))]
    if not runs:
        return None
    others = sorted({k for r in runs for k in r.config} - {"seed"})
    keys = [k for k in others if len({r.config.get(k) for r in runs}) > 1] or ["optimizer"]
    keys.append("seed")
    runs.sort(key=lambda r: tuple(rank(k, r.config.get(k)) for k in keys))
    x = [r.metrics["sharpness_mean"] for r in runs]
    y = [r.metrics["forgetting"] for r in runs]
    rho = spearman(x, y)
    rows = [[fmt_value(r.config.get(k)) for k in keys] + [f"{a:.4g}", f"{b:.2f}"]
            for r, a, b in zip(runs, x, y)]
    data = pd.DataFrame([{**{k: r.config.get(k) for k in keys}, "run": r.name,
                          "sharpness_mean": a, "forgetting": b} for r, a, b in zip(runs, x, y)])
    rho_text = "undefined (fewer than 3 runs or a constant column)" if math.isnan(rho) else (
        f"{rho:+.2f}")
    caption = ("Sharpness (mean loss increase under Gaussian perturbations of the trained "
               "tensors at relative radius 0.01, on the seen tasks' probe batches, mean over "
               "tasks) against forgetting (%) after the final task, one row per run.")
    remarks = [f"Spearman rank correlation of sharpness and forgetting: ρ = {rho_text} over "
               f"{len(runs)} run(s)."]
    return Table("sharpness_forgetting", "Sharpness against forgetting", caption,
                 [("", len(keys)), ("", 2)], keys + ["sharpness", "Fgt"], rows, [], remarks,
                 data)
