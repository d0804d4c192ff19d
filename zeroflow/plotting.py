"""The one home of matplotlib setup: the non-interactive Agg backend (figures are files, also on
machines without a display) and how a figure is written. Report figures, the trajectory plots
and the accuracy-curve artifact of a tracked run draw through these two functions."""

from __future__ import annotations

from pathlib import Path

MIN_WIDTH = 8.0  # inches: 800 px at save's dpi


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: matplotlib is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path, dpi: int = 100) -> Path:
    """Lay out ``fig`` tightly, write it to ``path`` and free it; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def panels(n: int, width: float = 4.2, height: float = 3.2, ncols: int = 3):
    """A figure of ``n`` panels, at most ``ncols`` per row, each ``width`` × ``height`` inches;
    returns (figure, the n axes in reading order); the grid's spare cells are hidden. The
    figure is at least ``MIN_WIDTH`` inches wide (800 px as saved): one panel is not a
    thumbnail."""
    import math

    ncols = min(n, ncols)
    nrows = math.ceil(n / ncols)
    scale = max(1.0, MIN_WIDTH / (width * ncols))
    fig, axes = pyplot().subplots(nrows, ncols, squeeze=False,
                                  figsize=(width * ncols * scale, height * nrows * scale))
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]
