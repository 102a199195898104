"""Public entry points: one labelled frame per (seed, index), identical on every call."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from perception_core.sim.layout import sample_scene
from perception_core.sim.render import LabeledFrame, render

TRAIN_SEED = 0
# Held-out split: every accuracy figure is measured on render_scene(VALIDATION_SEED, i).
VALIDATION_SEED = 1_000_003


def render_scene(seed: int, index: int, width: int = 640, height: int = 480) -> LabeledFrame:
    """Render scene ``index`` of split ``seed``: BGR image, class mask and visible-object boxes.

    The layout depends on (seed, index) only, so the same scene can be rendered at any resolution;
    the sensor noise also depends on the resolution because it is drawn per pixel.
    """
    if width < 16 or height < 16:
        raise ValueError(f"image must be at least 16x16, got {width}x{height}")
    scene = sample_scene(np.random.default_rng([seed, index]))
    return render(scene, width, height, np.random.default_rng([seed, index, width, height]))


def render_batch(seed: int, indices: Iterable[int], width: int = 640, height: int = 480) -> list[LabeledFrame]:
    return [render_scene(seed, index, width, height) for index in indices]
