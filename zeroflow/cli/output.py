"""What the commands print: a plain text table, a finished trial's summary, and the one-line
progress notes on stderr."""

from __future__ import annotations

import math
import sys


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).rjust(w) for c, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def format_result(result) -> str:
    """The per-task accuracy table and the summary lines of a finished trial."""
    m = result.matrix
    header = ["after task", *[f"T{j}" for j in range(m.n_tasks)], "seen", "fgt"]
    rows = []
    for t in range(m.done):
        cells = ["" if math.isnan(v) else f"{v:.1f}" for v in m.a[t]]
        rows.append([str(t), *cells, f"{m.seen[t]:.2f}", f"{m.forgetting(t):.2f}"])
    s = result.summary
    c = result.config
    mem_label = {"cuda_max_allocated": "CUDA max allocated"}.get(result.memory_label,
                                                                 "process peak RSS")
    train_label = ("CUDA max allocated" if result.memory_label == "cuda_max_allocated" else
                   "peak RSS rise over the built learner")
    lines = [
        table(rows, header),
        "",
        f"{c.method} / {c.optimizer} on {c.dataset} ({m.n_tasks} tasks, backbone {c.backbone})",
        f"avg accuracy   {s['avg']:.2f} %",
        f"last accuracy  {s['last']:.2f} %",
        f"forgetting     {s['forgetting']:.2f} %",
        f"train memory   {s['train_memory_mb']:.1f} MB ({train_label})",
        f"peak memory    {s['peak_memory_mb']:.0f} MB ({mem_label})",
        f"forward passes {int(s['forward_passes'])} in {int(s['steps'])} steps",
        f"train time     {s['train_seconds']:.1f} s",
    ]
    return "\n".join(lines)


def say(message: str) -> None:
    """A progress line on stderr, at once (the first output of a command comes before its slow
    imports and starts)."""
    print(f"zeroflow: {message}", file=sys.stderr, flush=True)
