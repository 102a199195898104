"""Training-curve figure from the runs' history.csv files (matplotlib only, no TensorFlow)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path


def read_history(run_dir) -> dict[str, list[float]]:
    """Columns of ``history.csv``; a step logged twice (a resumed run) keeps its last value."""
    rows = {}
    with open(Path(run_dir) / "history.csv", newline="") as f:
        for row in csv.DictReader(f):
            rows[int(row["step"])] = row
    steps = sorted(rows)
    columns = {key: [float(rows[s][key]) if rows[s][key] else float("nan") for s in steps] for key in rows[steps[0]]}
    return columns


def plot_histories(run_dirs: Sequence[str], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for run in run_dirs:
        h = read_history(run)
        name = Path(run).name
        if any(v == v for v in h["seg"]):
            axes[0].plot(h["step"], h["seg"], label=name)
        if any(v == v for v in h["det"]):
            axes[1].plot(h["step"], h["det"], label=name)
        if any(v == v for v in h["w_seg"]) and any(v == v for v in h["w_det"]):
            axes[2].plot(h["step"], h["w_seg"], label=f"{name} seg weight")
            axes[2].plot(h["step"], h["w_det"], label=f"{name} det weight")
    for ax, title in zip(axes, ("segmentation cross-entropy", "detection loss (focal + 0.1 wh + offset)",
                                "learned task weights exp(-s)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
