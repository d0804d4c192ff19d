"""The report's tables as plain cells: Table 1's layout, Table 2 (efficiency), Tables 3–4
(historical smoothing, sparsity) and any pivot of swept keys.

Every table is one grid: row keys × column keys, a cell holding the runs of one setting over its
seeds. A value is the mean ± sample standard deviation (numpy ``std(ddof=1)``) over the cell's
FINISHED runs. A cell without a value shows ``–`` and a numbered note naming what did not run,
failed or was not logged; unfinished runs beside finished seeds get a note too. Nothing is
dropped silently: a config key that differs between runs of one cell becomes an extra row key.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from zeroflow.report.published import lookup
from zeroflow.report.runs import Run, RunSet

MISSING = "–"  # no value of ours (a note says why)
NO_PAPER = "—"  # the paper has no such cell
ABSENT = object()  # an extra row key of a row that has no run at all

GPU = "cuda_max_allocated"


@lru_cache(maxsize=1)
def order() -> dict[str, tuple]:
    """Rows and columns list optimizers, methods and datasets in their registries' order
    (optimizers grouped by family: ``optim.report_order``); other values by value."""
    from zeroflow import optim
    from zeroflow.data import DATASETS
    from zeroflow.methods import METHODS

    return {"optimizer": tuple(optim.report_order()), "method": METHODS.names(),
            "dataset": DATASETS.names()}


@dataclass(frozen=True)
class Metric:
    key: str  # a Run.metrics key
    label: str
    digits: int = 2
    paper: bool = True  # the paper may have it
    label_only: bool = False  # a text column: which memory was measured


ACCURACY = (Metric("avg", "Avg"), Metric("last", "Last"), Metric("forgetting", "Fgt"))
EFFICIENCY = (Metric("memory", "memory", label_only=True, paper=False),
              Metric("memory_gb", "peak GB"), Metric("time_per_epoch_s", "s/epoch"),
              Metric("time_per_step_s", "s/step", 3, paper=False),
              Metric("forward_passes_per_step", "passes/step", 1, paper=False))


@dataclass
class Table:
    name: str  # file stem
    title: str
    caption: str
    groups: list[tuple[str, int]]  # header groups (label, columns spanned), left to right
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)  # numbered: note i is marked [i]
    remarks: list[str] = field(default_factory=list)  # unnumbered
    data: pd.DataFrame = field(default_factory=pd.DataFrame)  # tidy numbers (the CSV)


class Notes:
    def __init__(self):
        self.texts: list[str] = []

    def mark(self, text: str) -> str:
        if text not in self.texts:
            self.texts.append(text)
        return f"[{self.texts.index(text) + 1}]"


def fmt_value(value: Any) -> str:
    if value is ABSENT:
        return ""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def rank(key: str, value: Any) -> tuple:
    known = order().get(key, ())
    if value in known:
        return (0, known.index(value), "")
    if value is None or value is ABSENT:
        return (2, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (1, math.inf, str(value))


def _sorted(key: str, values) -> list:
    return sorted(set(values), key=lambda v: rank(key, v))


def split_keys(runs: list[Run], keys: list[str]) -> list[str]:
    """Config keys (not ``keys``, not the seed) that differ between runs sharing ``keys``."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(run.config.get(k) for k in keys), []).append(run)
    others = sorted({k for r in runs for k in r.config} - set(keys) - {"seed"})
    return [k for k in others
            if any(len({r.config.get(k) for r in g}) > 1 for g in groups.values())]


def _row_tuples(runs: list[Run], rows: list[str], extra: list[str], product: bool) -> list[tuple]:
    keys = rows + extra
    observed = {tuple(r.config.get(k) for k in keys) for r in runs}
    by_rank = lambda t: tuple(rank(k, v) for k, v in zip(keys, t))  # noqa: E731
    if not product:
        return sorted(observed, key=by_rank)
    out = []
    for base in itertools.product(*[_sorted(k, [r.config.get(k) for r in runs]) for k in rows]):
        tails = sorted({t[len(rows):] for t in observed if t[:len(rows)] == base},
                       key=lambda t: by_rank(base + t))
        out += [base + t for t in tails] or [base + (ABSENT,) * len(extra)]
    return out


def _stat(values: list[float]) -> tuple[float, float, int]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else math.nan, len(arr)


def metric_table(name: str, title: str, caption: str, runs: list[Run], rows: list[str],
                 cols: list[str], metrics, product: bool, paper: bool | None = True,
                 labels: dict[str, tuple[list[str], Any]] | None = None) -> Table:
    """The grid of ``metrics`` with ``rows`` × ``cols`` keys (``product``: every combination of
    the values seen, so a missing grid point shows up; else only the combinations that ran).
    ``paper=None`` shows the paper's columns only if some published value matches.
    ``labels`` renders a row key as several columns: key → (headers, value → cells)."""
    labels = labels or {}
    extra = split_keys(runs, rows + cols)
    row_keys = rows + extra
    row_tuples = _row_tuples(runs, rows, extra, product)
    col_tuples = list(itertools.product(
        *[_sorted(k, [r.config.get(k) for r in runs]) for k in cols]))
    base = runs[0].config if runs else {}
    notes, records, body = Notes(), [], []
    show_paper = paper is not False
    for rt in row_tuples:
        line = []
        for key, value in zip(row_keys, rt):
            line += labels[key][1](value) if key in labels else [fmt_value(value)]
        for ct in col_tuples:
            where = dict(zip(row_keys + cols, rt + ct))
            cell = [r for r in runs if all(r.config.get(k) == v for k, v in where.items())]
            line += _cell(cell, where, base, metrics, notes, records, show_paper)
        body.append(line)
    data = pd.DataFrame(records)
    if paper is None and (data.empty or data["paper"].isna().all()):
        return metric_table(name, title, caption, runs, rows, cols, metrics, product, False,
                            labels)
    heads = []
    for key in row_keys:
        heads += labels[key][0] if key in labels else [key]
    per_group = []
    for m in metrics:
        per_group += [m.label] + (["paper", "Δ"] if m.paper and show_paper else [])
    per_group.append("seeds")
    groups = [("", len(heads))] + [(", ".join(fmt_value(v) for v in ct), len(per_group))
                                   for ct in col_tuples]
    if extra:
        caption += f" Rows are also split by {', '.join(extra)}, which varied within a cell."
    return Table(name, title, caption, groups, heads + per_group * len(col_tuples), body,
                 notes.texts, data=data)


def _cell(cell: list[Run], where: dict, base: dict, metrics, notes: Notes, records: list,
          show_paper: bool) -> list[str]:
    finished = [r for r in cell if r.finished]
    unfinished = [r for r in cell if not r.finished]
    desc = ", ".join(f"{k}={fmt_value(v)}" for k, v in where.items() if v is not ABSENT)
    mark = ""
    if not cell:
        mark = notes.mark(f"{desc}: not run")
    elif unfinished:
        what = "; ".join(f"run {r.name!r} (seed {fmt_value(r.config.get('seed'))}, experiment "
                         f"{r.experiment}) {r.status}" for r in unfinished)
        kept = f"; shown: {len(finished)} finished seed(s)" if finished else ""
        mark = notes.mark(f"{desc}: {what}{kept}")
    config = cell[0].config if cell else {
        **base, **{k: v for k, v in where.items() if v is not ABSENT}}
    out = []
    memory = "/".join(sorted({r.memory for r in finished}))
    for m in metrics:
        if m.label_only:
            out.append(memory or MISSING + mark)
            continue
        values = [r.metrics.get(m.key, math.nan) for r in finished]
        good = [v for v in values if math.isfinite(v)]
        own = mark
        if len(good) < len(values):
            lacking = ", ".join(repr(r.name) for r, v in zip(finished, values)
                                if not math.isfinite(v))
            own += notes.mark(f"{desc}: {m.key} not logged by run(s) {lacking}")
        mean, std, n = _stat(good) if good else (math.nan, math.nan, 0)
        text = MISSING + own
        if n:
            text = f"{mean:.{m.digits}f}" + (f" ± {std:.{m.digits}f}" if n > 1 else "")
            text += own if len(good) < len(values) else ""
        out.append(text)
        found = lookup(config, m.key) if m.paper else None
        ref, table = found if found else (math.nan, None)
        delta = mean - ref if n and found else math.nan
        if m.paper and show_paper:
            out.append(NO_PAPER if not found else f"{ref:.2f}")
            if not found:
                out.append(NO_PAPER)
            elif not n:
                out.append(MISSING)
            elif m.key == "memory_gb" and any(r.memory_label != GPU for r in finished):
                delta = math.nan
                out.append("n/a" + notes.mark(
                    "the paper's memory is peak GPU memory; ours is "
                    f"{'/'.join(sorted({r.memory for r in finished}))}: no difference taken"))
            else:
                out.append(f"{delta:+.2f}")
        texts = [notes.texts[int(i) - 1] for i in own.replace("[", " ").replace("]", " ").split()]
        records.append({**{k: (None if v is ABSENT else v) for k, v in where.items()},
                        "metric": m.key, "mean": mean, "std": std, "n": n, "paper": ref,
                        "paper_table": table, "delta": delta,
                        "memory": memory, "runs": " ".join(r.run_id for r in finished),
                        "note": " ".join(texts)})
    out.append(f"{len(finished)}{mark}")
    return out


# ---- the paper's tables --------------------------------------------------------------------

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
    caption = ("Peak memory in GB (= MB / 1024) as logged: GPU = CUDA max allocated, CPU-RSS = "
               "the process's peak resident set (Python and libraries included); the paper's is "
               "GPU memory. s/epoch = the training time of the tasks that trained (steps > 0) / "
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
