"""Fields of messages to build, computed once for both flavours: rclpy's classes and rosbags' dataclasses.

The nodes (perception_nodes.conversions, the synthetic camera) and the bag writer
(perception_core.evaluation.bags) fill their own message classes from these values, so a
detection, a stamp or a CameraInfo written by either compares equal field for field. Reading goes
the other way: perception_core.message_readers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, Union

import numpy as np

from perception_core.types import Detections

NS_PER_S = 1_000_000_000


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


def pinhole_camera_info_fields(width: int, height: int,
                               horizontal_fov_deg: float) -> dict[str, Union[int, str, list[float]]]:
    """sensor_msgs/CameraInfo's size, distortion model and ``d``, ``k``, ``r``, ``p`` (row-major lists) of an
    ideal pinhole (no distortion, square pixels, centred principal point): the simulated camera's optics."""
    if not 0.0 < horizontal_fov_deg < 180.0:
        raise ValueError(f"horizontal_fov_deg must be in (0, 180), got {horizontal_fov_deg}")
    focal = (width / 2.0) / math.tan(math.radians(horizontal_fov_deg) / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    return {"width": width, "height": height, "distortion_model": "plumb_bob", "d": [0.0] * 5,
            "k": [focal, 0.0, cx, 0.0, focal, cy, 0.0, 0.0, 1.0],
            "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            "p": [focal, 0.0, cx, 0.0, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0]}
