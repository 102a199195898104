"""Fields of messages to build, computed once for both flavours: rclpy's classes and rosbags' dataclasses.

The node (perception_nodes.conversions) and the bag writer (perception_core.evaluation.bags)
fill their own message classes from these values, so a detection or a stamp written by either
compares equal field for field. Reading goes the other way: perception_core.message_readers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from perception_core.message_readers import NS_PER_S
from perception_core.types import Detections


def stamp_parts(stamp_ns: int) -> tuple[int, int]:
    """Integer nanoseconds -> builtin_interfaces/Time's (sec, nanosec), nanosec always in [0, 1e9)."""
    return stamp_ns // NS_PER_S, stamp_ns % NS_PER_S


class DetectionFields(NamedTuple):
    """One vision_msgs/Detection2D: bbox centre and size in pixels, one hypothesis (class NAME, score)."""

    center_x: float
    center_y: float
    size_x: float
    size_y: float
    class_name: str
    score: float


def detection_fields(dets: Detections, class_names: Sequence[str]) -> list[DetectionFields]:
    """Detection2D fields per box; ValueError for a class id without a name.

    Centre and size are computed in float64 from the float32 corners, so that
    message_readers.detections recovers the corners exactly.
    """
    ids = dets.class_id
    if ids.size and (ids.min() < 0 or ids.max() >= len(class_names)):
        bad = ids[(ids < 0) | (ids >= len(class_names))]
        raise ValueError(f"class ids {sorted(set(bad.tolist()))} out of range for {len(class_names)} class names")
    xyxy = dets.xyxy.astype(np.float64)
    centers = ((xyxy[:, :2] + xyxy[:, 2:]) * 0.5).tolist()
    sizes = (xyxy[:, 2:] - xyxy[:, :2]).tolist()
    return [DetectionFields(cx, cy, w, h, class_names[i], score) for (cx, cy), (w, h), i, score
            in zip(centers, sizes, ids.tolist(), dets.score.tolist(), strict=True)]
