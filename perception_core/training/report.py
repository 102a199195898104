"""Training-curve figure from the runs' history.csv files (matplotlib only, no TensorFlow)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from perception_core.plotting import pyplot, save


def read_history(run_dir) -> dict[str, list[float]]:
    """Columns of ``history.csv``; a step logged twice (a resumed run) keeps its last value."""
    rows = {}
    with open(Path(run_dir) / "history.csv", newline="") as f:
        for row in csv.DictReader(f):
            rows[int(row["step"])] = row
    steps = sorted(rows)
    columns = {key: [float(rows[s][key]) if rows[s][key] else float("nan") for s in steps] for key in rows[steps[0]]}
    return columns


def run_history(run_dir) -> tuple[dict[str, list[float]], list[int]]:
    """A run's columns preceded by those of the runs it was warm-started from, steps counted on.

    Also returns the step at which each later stage began, for the figure to mark.
    """
    h = read_history(run_dir)
    config = Path(run_dir) / "config.json"
    source = json.loads(config.read_text())["settings"].get("init_from") if config.exists() else None
    if not source or "run" not in source or not (Path(source["run"]) / "history.csv").exists():  # a model file
        return h, []
    before, starts = run_history(source["run"])
    offset = before["step"][-1]
    merged = {k: before[k] + ([v + offset for v in h[k]] if k == "step" else h[k]) for k in h}
    return merged, starts + [offset]


def plot_histories(run_dirs: Sequence[str], out: str) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for run in run_dirs:
        h, starts = run_history(run)
        name = Path(run).name
        for ax in axes:
            for step in starts:
                ax.axvline(step, color="grey", linestyle=":", linewidth=1)
        if any(v == v for v in h["seg"]):
            axes[0].plot(h["step"], h["seg"], label=name)
        if any(v == v for v in h["det"]):
            axes[1].plot(h["step"], h["det"], label=name)
        if any(v == v for v in h["w_seg"]) and any(v == v for v in h["w_det"]):
            axes[2].plot(h["step"], h["w_seg"], label=f"{name} seg weight")
            axes[2].plot(h["step"], h["w_det"], label=f"{name} det weight")
    for ax, title in zip(axes, ("segmentation cross-entropy", "detection loss (focal + size L1 + offset)",
                                "learned task weights exp(-s)")):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend()
        ax.grid()
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    save(fig, out)
