"""The report's PNG figures (matplotlib, Agg): accuracy against the query budget q (the paper's
Figure 5), accuracy after each task per optimizer, and accuracy against peak memory and against
training time, and (where runs logged ``track_task_losses``) the old- vs new-task probe losses
along training. Points are means over the finished seeds of a setting; error bars are the sample
standard deviation where several seeds ran."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from zeroflow import plotting
from zeroflow.report.ordering import fmt_value, order, rank
from zeroflow.report.runs import Run

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # per method, in registry order


def _marker(method) -> str:
    methods = order()["method"]
    return MARKERS[methods.index(method) % len(MARKERS)] if method in methods else "x"


def _color(optimizer: str):
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    optimizers = order()["optimizer"]
    index = optimizers.index(optimizer) if optimizer in optimizers else 9
    return cmap(index % 10)


def _group(runs: list[Run], keys: tuple[str, ...]) -> dict[tuple, list[Run]]:
    out: dict[tuple, list[Run]] = {}
    for run in runs:
        out.setdefault(tuple(run.config.get(k) for k in keys), []).append(run)
    return out


def _lines(runs: list[Run], without: tuple[str, ...]) -> dict[tuple, list[Run]]:
    """Runs grouped by their config without ``without`` (and the seed)."""
    out: dict[tuple, list[Run]] = {}
    for run in runs:
        out.setdefault(run.setting(without=("seed", *without)), []).append(run)
    return out


def _label(setting: tuple, varying: set[str]) -> str:
    config = dict(setting)
    extra = [f"{k}={'default' if config[k] is None else fmt_value(config[k])}"
             for k in sorted(varying - {"optimizer"}) if k in config]
    return " ".join([str(config.get("optimizer", "?")), *extra])


def _varying(settings) -> set[str]:
    keys = {k for s in settings for k, _ in s}
    return {k for k in keys if len({dict(s).get(k) for s in settings}) > 1}


def _panel_order(item) -> tuple:
    keys = ("dataset", "method")
    return tuple(rank(k, v) for k, v in zip(keys, item[0]))


def _styles(settings) -> dict[tuple, str]:
    """A line style per setting, so settings of one optimizer (one colour) stay apart."""
    seen: dict[str, int] = {}
    out = {}
    for setting in settings:
        opt = dict(setting).get("optimizer", "")
        out[setting] = ("-", "--", ":", "-.")[seen.get(opt, 0) % 4]
        seen[opt] = seen.get(opt, 0) + 1
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if not len(arr):
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _sort_key(setting: tuple) -> tuple:
    config = dict(setting)
    opt = config.get("optimizer")
    optimizers = order()["optimizer"]
    return (optimizers.index(opt) if opt in optimizers else 99, str(setting))


def accuracy_vs_q(runs: list[Run], path: Path) -> tuple[Path, str]:
    panels = _group(runs, ("dataset", "method"))
    fig, axes = plotting.panels(len(panels))
    qs = {r.config.get("q") for r in runs}
    for ax, ((dataset, method), group) in zip(axes, sorted(panels.items(), key=_panel_order)):
        lines = _lines(group, ("q", "dataset", "method"))
        varying = _varying(lines)
        styles = _styles(sorted(lines, key=_sort_key))
        for setting in sorted(lines, key=_sort_key):
            by_q = _group(lines[setting], ("q",))
            xs = sorted(q for (q,) in by_q if q is not None)
            stats = [_mean_std([r.metrics.get("avg", math.nan) for r in by_q[(q,)]]) for q in xs]
            opt = dict(setting).get("optimizer", "")
            ax.errorbar(xs, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o",
                        capsize=3, color=_color(opt), linestyle=styles[setting],
                        label=_label(setting, varying))
        if len(qs) > 1:
            ax.set_xscale("log", base=2)
        ticks = sorted(q for q in {r.config.get("q") for r in group} if q is not None)
        ax.set_xticks(ticks, [fmt_value(q) for q in ticks])
        ax.minorticks_off()
        ax.set_title(f"{dataset} / {method}", fontsize=9)
        ax.set_xlabel("query budget q")
        ax.set_ylabel("Avg accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return plotting.save(fig, path), "Figure 5: Avg accuracy against the query budget q"


def accuracy_per_task(runs: list[Run], path: Path) -> tuple[Path, str]:
    from matplotlib.ticker import MaxNLocator

    panels = _group(runs, ("dataset", "method"))
    fig, axes = plotting.panels(len(panels))
    for ax, ((dataset, method), group) in zip(axes, sorted(panels.items(), key=_panel_order)):
        lines = _lines(group, ("dataset", "method"))
        varying = _varying(lines)
        styles = _styles(sorted(lines, key=_sort_key))
        for setting in sorted(lines, key=_sort_key):
            curves = [r.curve for r in lines[setting] if r.curve]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            mean = np.mean([c[:length] for c in curves], axis=0)
            opt = dict(setting).get("optimizer", "")
            ax.plot(range(1, length + 1), mean, marker="o", markersize=3, color=_color(opt),
                    linestyle=styles[setting], label=_label(setting, varying))
        ax.set_title(f"{dataset} / {method}", fontsize=9)
        ax.set_xlabel("after task")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("accuracy on seen classes (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return plotting.save(fig, path), "Accuracy after each task, per optimizer (mean over seeds)"


def accuracy_against(runs: list[Run], key: str, xlabel: str, path: Path,
                     caption: str) -> tuple[Path, str]:
    from matplotlib.lines import Line2D

    panels = _group(runs, ("dataset",))
    fig, axes = plotting.panels(len(panels), 5.0, 3.8)
    for ax, ((dataset,), group) in zip(axes, sorted(panels.items(), key=_panel_order)):
        lines = _lines(group, ())
        for setting in sorted(lines, key=_sort_key):
            config = dict(setting)
            x, xs = _mean_std([r.metrics.get(key, math.nan) for r in lines[setting]])
            y, ys = _mean_std([r.metrics.get("avg", math.nan) for r in lines[setting]])
            if math.isfinite(x) and math.isfinite(y):
                ax.errorbar(x, y, xerr=xs or None, yerr=ys or None,
                            marker=_marker(config.get("method")),
                            color=_color(config.get("optimizer", "")), linestyle="none",
                            markersize=6, capsize=2, alpha=0.85)
        opts = [o for o in order()["optimizer"]
                if any(r.config.get("optimizer") == o for r in group)]
        methods = [m for m in order()["method"] if any(r.config.get("method") == m for r in group)]
        handles = ([Line2D([], [], color=_color(o), marker="o", linestyle="none", label=o)
                    for o in opts]
                   + [Line2D([], [], color="black", marker=_marker(m), linestyle="none",
                             markerfacecolor="none", label=m) for m in methods])
        ax.legend(handles=handles, fontsize=6, loc="best")
        labels = sorted({r.memory for r in group})
        ax.set_xlabel(xlabel.format(memory="/".join(labels)))
        ax.set_ylabel("Avg accuracy (%)")
        ax.set_title(dataset, fontsize=9)
        ax.grid(alpha=0.3)
    return plotting.save(fig, path), caption


def old_new_losses(run: Run) -> tuple[list[int], list[float], list[float]]:
    """(steps, new, old) of a run's probes: at each probed step, the loss of the task being
    trained (new) and the mean loss of the earlier tasks (old; NaN during the first task)."""
    steps, new, old = [], [], []
    for step in sorted({s for series in run.task_losses.values() for s in series}):
        task = next((t for t, end in enumerate(run.task_ends) if step <= end), None)
        if task is None or step not in run.task_losses.get(task, {}):
            continue
        earlier = [run.task_losses[j][step] for j in range(task)
                   if step in run.task_losses.get(j, {})]
        steps.append(step)
        new.append(run.task_losses[task][step])
        old.append(float(np.mean(earlier)) if earlier else math.nan)
    return steps, new, old


def task_losses(runs: list[Run], path: Path) -> tuple[Path, str]:
    """One panel per setting (seeds averaged at common steps): ZeroFlow's Figure 8."""
    lines = _lines(runs, ())
    varying = _varying(lines) | {"optimizer"}
    settings = sorted(lines, key=lambda st: (_panel_order((tuple(
        dict(st).get(k) for k in ("dataset", "method")), None)), _sort_key(st)))
    fig, axes = plotting.panels(len(settings), 4.2, 3.0)
    for ax, setting in zip(axes, settings):
        curves = [old_new_losses(r) for r in lines[setting]]
        common = sorted(set.intersection(*[set(c[0]) for c in curves]))
        at = [dict(zip(c[0], zip(c[1], c[2]))) for c in curves]
        new = [float(np.mean([a[s][0] for a in at])) for s in common]
        old = [float(np.mean([a[s][1] for a in at])) for s in common]
        ax.plot(common, new, color="tab:orange", linewidth=1.1, label="new task")
        ax.plot(common, old, color="tab:blue", linewidth=1.1, label="old tasks (mean)")
        for end in lines[setting][0].task_ends[:-1]:
            ax.axvline(end + 0.5, color="grey", linestyle=":", linewidth=0.8)
        config = dict(setting)
        ax.set_title(f"{config.get('dataset')} / {config.get('method')}: "
                     f"{_label(setting, varying)}", fontsize=8)
        ax.set_xlabel("training step")
        ax.set_ylabel("probe loss (cross-entropy)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return plotting.save(fig, path), (
        "Probe loss of the task being trained (new) and mean probe loss of the earlier tasks "
        "(old) along training, per setting (mean over seeds); dotted lines: task boundaries")


def make_figures(runs: list[Run], out: Path) -> list[tuple[Path | None, str]]:
    """Write the PNGs into ``out``; returns (path, caption) for each (none without results),
    and (None, why) for a figure left out: Figure 5 over a single q says nothing."""
    finished = [r for r in runs if r.finished]
    if not finished:
        return []
    probed = [r for r in finished if r.task_losses]
    extra = [task_losses(probed, out / "task_losses.png")] if probed else []
    qs = sorted({r.config.get("q") for r in finished} - {None})
    fig5 = accuracy_vs_q(finished, out / "fig5_accuracy_vs_q.png") if len(qs) > 1 else (
        None, f"Figure 5 (Avg accuracy against the query budget q) left out: every run has "
              f"q = {', '.join(fmt_value(q) for q in qs) or 'unset'}; sweep q to draw it")
    return [
        fig5,
        accuracy_per_task(finished, out / "accuracy_per_task.png"),
        accuracy_against(finished, "memory_mb", "training memory (MB, {memory})",
                         out / "accuracy_vs_memory.png",
                         "Avg accuracy against the training's own peak memory (GPU: CUDA max "
                         "allocated; CPU: peak RSS rise over the built learner) (colour: "
                         "optimizer, marker: method)"),
        accuracy_against(finished, "train_seconds", "training time, all tasks (s)",
                         out / "accuracy_vs_time.png",
                         "Avg accuracy against training time (colour: optimizer, marker: "
                         "method)"),
        *extra,
    ]
