"""A finished sweep in a few lines: its table, its failed trials with their reasons, and its
best complete trial."""

from __future__ import annotations

from zeroflow.sweep import search
from zeroflow.sweep.results import ERROR_KEY, failure, reported_last_task
from zeroflow.sweep.space import GRID_POINT, Space, trial_name


def best_trial(results, space: Space):
    """The best trial that ran every task (by the space's metric, default avg accuracy): a
    trial stopped early has an average over fewer tasks, which is not comparable."""
    metric, mode = search.objective(space.search, space.scheduler) or ("avg_accuracy", "max")
    complete = [r for r in results
                if r.metrics and metric in r.metrics and reported_last_task(r.metrics)]
    if not complete:
        return None, metric
    pick = max if mode == "max" else min
    return pick(complete, key=lambda r: r.metrics[metric]), metric


def failed_trials(results, varying: list[str]) -> list[tuple[str, str]]:
    """(trial name, one-line reason) of every trial that failed: on a mistake it reported
    (``results.ERROR_KEY``) or on an error Ray recorded after its retries."""
    out = []
    for result in results:
        reason = failure(result.metrics)
        if reason is None and result.error is not None:
            lines = [ln for ln in str(result.error).strip().splitlines() if ln.strip()]
            reason = lines[-1].strip() if lines else type(result.error).__name__
        if reason is not None:
            out.append((trial_name(result.config or {}, varying), reason))
    return out


def summary_table(results, varying: list[str] | None = None):
    """The sweep's final table: the varying keys, then avg / last / forgetting per trial
    (failed trials are listed apart, ``failed_trials``)."""
    df = results.get_dataframe()
    if ERROR_KEY in df:
        df = df[df[ERROR_KEY].isna()]
    cols = {}
    for key in varying or []:  # a united grid's point wins over the base value beside it
        found = [df[c] for c in (f"config/{GRID_POINT}/{key}", f"config/{key}") if c in df]
        if found:
            values = found[0].combine_first(found[1]) if len(found) == 2 else found[0]
            whole = values.dropna()
            if values.dtype.kind == "f" and len(whole) and (whole == whole.round()).all():
                values = values.round().astype("Int64")  # integers, not 1.00
            cols[key] = values
    for src, dst in (("avg_accuracy", "avg"), ("accuracy", "last"), ("forgetting", "forgetting"),
                     ("forward_passes", "forward_passes"), ("train_memory_mb", "train_mb")):
        if src in df:
            cols[dst] = df[src].round().astype("Int64") if dst == "forward_passes" else df[src]
    if {"task", "n_tasks"} <= set(df) and (df["task"] < df["n_tasks"] - 1).any():
        # some trials stopped early: their avg covers fewer tasks
        cols["tasks"] = [f"{int(t) + 1}/{int(n)}" for t, n in zip(df["task"], df["n_tasks"])]
    import pandas as pd

    table = pd.DataFrame(cols)
    if "avg" in table:  # complete trials first: a stopped trial's avg covers fewer tasks
        done = (df["task"] == df["n_tasks"] - 1) if {"task", "n_tasks"} <= set(df) else True
        order = ["_done", *[k for k in ("dataset", "method") if k in table], "avg"]
        table = table.assign(_done=done).sort_values(
            order, ascending=[k not in ("_done", "avg") for k in order]).drop(columns="_done")
    return _against_baseline(table.reset_index(drop=True))


def _against_baseline(table):
    """With untrained rows (``epochs`` 0) in the sweep: each row's ``gain`` in avg over the
    untrained row of its dataset, method and seed (what training added), the untrained rows
    named so; and a ``tie`` letter shared by trained rows of one dataset, method and seed
    whose avg and last agree to two decimals (their optimizers made no visible difference)."""
    if "avg" not in table:
        return table
    group = [k for k in ("dataset", "method", "seed") if k in table]
    key = (lambda row: tuple(row[k] for k in group))  # noqa: E731
    untrained = table["epochs"] == 0 if "epochs" in table else table["avg"] != table["avg"]
    if untrained.any():
        reference = {key(row): row["avg"] for _, row in table[untrained].iterrows()}
        table["gain"] = [row["avg"] - reference[key(row)] if key(row) in reference else None
                         for _, row in table.iterrows()]
        if "optimizer" in table:
            table["optimizer"] = table["optimizer"].astype(object).where(~untrained, "untrained")
        for column in ("lr", "fc_lr"):
            if column in table:
                table[column] = table[column].astype(object).where(~untrained, "-")
    if "last" in table:
        seen: dict[tuple, list[int]] = {}
        for i, row in table[~untrained].iterrows():
            seen.setdefault((*key(row), round(row["avg"], 2), round(row["last"], 2)),
                            []).append(i)
        tied = [rows for rows in seen.values() if len(rows) > 1]
        if tied:
            letters = [""] * len(table)
            for letter, rows in zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", tied):
                for i in rows:
                    letters[i] = letter
            table["tie"] = letters
    return table
