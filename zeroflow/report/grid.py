"""The report's one table shape: a grid of row keys × column keys whose cell holds the runs of
one setting over its seeds.

A value is the mean ± sample standard deviation (numpy ``std(ddof=1)``) over the cell's
FINISHED runs. A cell without a value shows ``–`` (``MISSING``) and a numbered note naming what
did not run, failed or was not logged; unfinished runs beside finished seeds get a note too.
Nothing is dropped silently: a config key that differs between runs of one cell becomes an
extra row key. Where the paper has the cell, its value and our difference sit beside ours.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from zeroflow.report.ordering import ABSENT, fmt_value, rank, sorted_values
from zeroflow.report.published import lookup
from zeroflow.report.runs import Run

MISSING = "–"  # no value of ours (a note says why)
NO_PAPER = "—"  # the paper has no such cell
GPU = "cuda_max_allocated"


@dataclass(frozen=True)
class Metric:
    key: str  # a Run.metrics key
    label: str
    digits: int = 2
    paper: bool = True  # the paper may have it
    label_only: bool = False  # a text column: which memory was measured


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
    values = [sorted_values(k, [r.config.get(k) for r in runs]) for k in rows]
    for base in itertools.product(*values):
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
        *[sorted_values(k, [r.config.get(k) for r in runs]) for k in cols]))
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
    return _drop_empty(Table(name, title, caption, groups, heads + per_group * len(col_tuples),
                             body, notes.texts, data=data), len(heads))


def _drop_empty(table: Table, fixed: int) -> Table:
    """``table`` without the value columns that hold nothing in any row (the paper's columns
    where it has no cell for any of them; a metric no run logged), said in a remark; the first
    ``fixed`` columns (the row keys) always stay. The CSV data keeps everything."""
    def empty(j: int) -> bool:
        cells = [row[j] for row in table.rows]
        return bool(cells) and (all(c == NO_PAPER for c in cells) or all(
            c.split("[")[0] == MISSING for c in cells))

    drop = [j for j in range(fixed, len(table.columns)) if empty(j)]
    if not drop:
        return table
    keep = [j for j in range(len(table.columns)) if j not in drop]
    groups, start = [], 0
    for label, span in table.groups:
        kept = sum(start <= j < start + span for j in keep)
        if kept:
            groups.append((label, kept))
        start += span
    names = list(dict.fromkeys(table.columns[j] for j in drop))
    table.remarks.append(f"Left out, empty in every row: {', '.join(names)} (— paper: no "
                         "published value for these settings; –: see the notes).")
    table.groups, table.columns = groups, [table.columns[j] for j in keep]
    table.rows = [[row[j] for j in keep] for row in table.rows]
    return table


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
