"""The simulator as a FrameSource: split (seed) -> labelled camera frames, cached once rendered.

Rendering costs ~50 ms a frame, so a split is rendered once in parallel and read back from the
frame cache; frame i depends only on (seed, i). ``input_hw`` letterboxes frames to the network's
input scale for training.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Optional

from perception_core.datasets.cache import FrameArrays, FrameCache, letterboxed, load_frames
from perception_core.datasets.source import Sample
from perception_core.sim import TRAIN_SEED, VALIDATION_SEED, render_scene
from perception_core.sim.classes import SIM_SPEC

CAMERA_HW = (480, 640)
SPLITS = {"train": TRAIN_SEED, "validation": VALIDATION_SEED}


def _render(index: int, seed: int, input_hw: Optional[tuple[int, int]]) -> FrameArrays:
    """One labelled frame at camera resolution, letterboxed to ``input_hw`` if given. Runs in a worker."""
    lf = render_scene(seed, index, width=CAMERA_HW[1], height=CAMERA_HW[0])
    arrays = (lf.frame.image, lf.class_mask, lf.detections.xyxy, lf.detections.class_id)
    return letterboxed(arrays, input_hw, SIM_SPEC.ignore_label)


def simulator_frames(seed: int, count: int, input_hw: Optional[tuple[int, int]] = None, workers: int = 2) -> FrameCache:
    """The first ``count`` frames of split ``seed`` (camera resolution, or letterboxed to ``input_hw``)."""
    hw = CAMERA_HW if input_hw is None else tuple(input_hw)
    produce = functools.partial(_render, seed=seed, input_hw=None if input_hw is None else hw)
    return load_frames(f"frames_s{seed}", count, hw, produce, workers)


class SimulatorSource:
    """``count`` frames of a simulator split ("validation" is the yardstick of every accuracy figure)."""

    spec = SIM_SPEC

    def __init__(self, split: str = "validation", count: int = 500, input_hw: Optional[tuple[int, int]] = None,
                 workers: int = 2) -> None:
        if split not in SPLITS:
            raise ValueError(f"simulator split must be one of {sorted(SPLITS)}, got {split!r}")
        self.seed = SPLITS[split]
        self.name = f"simulator {split} split ({count} frames)"
        self.frames = simulator_frames(self.seed, count, input_hw, workers)

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[Sample]:
        return self.frames.samples(f"sim{self.seed}")
