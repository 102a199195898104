"""The one place that sets up matplotlib: headless (Agg), one style, figures saved and closed the same way.

Every module that draws a chart (evaluation reports, profiling, the benchmark, training curves)
gets pyplot from here, so a chart never opens a window on a robot without a display.
"""

from __future__ import annotations

from pathlib import Path

STYLE = {"figure.dpi": 100, "savefig.dpi": 100, "grid.alpha": 0.3, "legend.fontsize": 8}


def pyplot():
    """matplotlib.pyplot on the Agg backend with the project's style (imported on first use: matplotlib is slow)."""
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams.update(STYLE)
    import matplotlib.pyplot as plt

    return plt


def save(fig, path) -> None:
    """Lay out, write and close ``fig`` (an open figure keeps its memory until closed)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    pyplot().close(fig)
